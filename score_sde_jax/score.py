"""Network output -> score function ``score_fn(x, t)``.

All time-label conventions and output scalings live here and only here, so
networks know nothing about SDEs (as EDM's preconditioning wrappers) and the
samplers and likelihood see only ``score_fn``. The conventions are the paper's,
so its networks and checkpoints mean the same thing here:

============  ==========  ======================================  ==========================
SDE           continuous  network input label                     score
============  ==========  ======================================  ==========================
VP / sub-VP   True        ``999 t`` (DDPM's integer-step scale)   ``-output / std(t)``
VP            False       ``(N - 1) t`` (a DDPM step index)       ``-output / sqrt(1 - alphabar)``
VE            True        ``sigma(t)``                            ``output`` (``/ sigma`` if scaled)
VE            False       ``round((T - t)(N - 1))`` (NCSN index)  ``output`` (``/ sigma_i`` if scaled)
============  ==========  ======================================  ==========================

The sub-VP SDE has no discrete-time chain, so it always uses the continuous
labels (as in the paper's code).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from score_sde_jax.sde import SDE, VESDE, VPSDE, batch_mul, subVPSDE

# DDPM was trained with integer steps 0..999; continuous VP models keep that
# input scale so the sinusoidal embedding sees the same range.
VP_CONTINUOUS_LABEL_SCALE = 999.0


def ddpm_index(sde: VPSDE, t: jax.Array) -> jax.Array:
  """DDPM step index of ``t``: ``floor((N - 1) t)`` as the paper, guarded against round-off.

  ``t = i / (N - 1)`` (the discrete losses) must give ``i``, not ``i - 1`` when
  ``(N - 1) t`` lands a few ulps below ``i``.
  """
  return jnp.floor(t * (sde.N - 1) + 1e-4).astype(jnp.int32)


def ncsn_index(sde: VESDE, t: jax.Array) -> jax.Array:
  """NCSN noise-level index of ``t`` (0 = sigma_max): ``round((T - t)(N - 1))``."""
  return jnp.round((sde.T - t) * (sde.N - 1)).astype(jnp.int32)


def time_labels(sde: SDE, t: jax.Array, continuous: bool) -> jax.Array:
  """The label that the network receives for time ``t`` (``(B,)`` -> ``(B,)``)."""
  if isinstance(sde, subVPSDE) or (isinstance(sde, VPSDE) and continuous):
    return t * VP_CONTINUOUS_LABEL_SCALE
  if isinstance(sde, VPSDE):
    return t * (sde.N - 1)
  if isinstance(sde, VESDE):
    if continuous:
      return sde.marginal_prob(jnp.zeros((t.shape[0], 1), t.dtype), t)[1]
    return ncsn_index(sde, t)
  raise TypeError(f"sde={sde!r}: expected VPSDE, subVPSDE or VESDE")


def output_to_score(sde: SDE, output: jax.Array, t: jax.Array, continuous: bool,
                    scale_by_sigma: bool = False) -> jax.Array:
  """Turns the network output at time ``t`` into the score ``grad_x log p_t(x)``."""
  if isinstance(sde, subVPSDE) or (isinstance(sde, VPSDE) and continuous):
    std = sde.marginal_prob(jnp.zeros_like(output), t)[1]
    return batch_mul(-1.0 / std, output)
  if isinstance(sde, VPSDE):
    std = sde.sqrt_1m_alphas_cumprod[ddpm_index(sde, t)]
    return batch_mul(-1.0 / std, output)
  if isinstance(sde, VESDE):
    if not scale_by_sigma:
      return output
    if continuous:
      sigma = sde.marginal_prob(jnp.zeros_like(output), t)[1]
    else:
      sigma = sde.discrete_sigmas[::-1][ncsn_index(sde, t)]
    return batch_mul(1.0 / sigma, output)
  raise TypeError(f"sde={sde!r}: expected VPSDE, subVPSDE or VESDE")


def get_model_fn(model, params: Any, *, train: bool = False,
                 dropout_key: jax.Array | None = None) -> Callable:
  """``model_fn(x, labels)``: the network applied with fixed parameters."""
  rngs = {"dropout": dropout_key} if dropout_key is not None else None

  def model_fn(x, labels):
    return model.apply({"params": params}, x, labels, train=train, rngs=rngs)

  return model_fn


@dataclasses.dataclass(frozen=True)
class NetworkScore:
  """Score of a network, as a hashable callable ``(params, dropout_key, x, t) -> score``.

  Hashable by value (the SDE, the Flax module and the flags), so that a jitted
  sampler given ``get_score_fn(...)`` for new parameters reuses its compiled code.
  """

  sde: SDE
  model: Any
  continuous: bool = True
  train: bool = False
  scale_by_sigma: bool = False

  def __call__(self, params, dropout_key, x, t):
    model_fn = get_model_fn(self.model, params, train=self.train, dropout_key=dropout_key)
    output = model_fn(x, time_labels(self.sde, t, self.continuous))
    return output_to_score(self.sde, output, t, self.continuous, self.scale_by_sigma)


def get_score_fn(sde: SDE, model, params: Any, continuous: bool = True, *,
                 train: bool = False, dropout_key: jax.Array | None = None,
                 scale_by_sigma: bool = False) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """A score function ``score_fn(x, t)`` from a network and its parameters.

  Args:
    sde: the forward SDE the network was trained for.
    model: a Flax module called as ``model.apply(variables, x, labels, train=...)``.
    params: the ``params`` collection.
    continuous: whether the network was trained with continuous time.
    train: network in training mode (dropout on; needs ``dropout_key``).
    scale_by_sigma: VE only: divide the output by the noise level.

  Returns:
    A ``jax.tree_util.Partial``: callable as ``score_fn(x, t)`` and a pytree
    whose leaves are the parameters, so it can be passed into jitted samplers
    as an ordinary argument (new parameters do not trigger recompilation).
  """
  return jax.tree_util.Partial(NetworkScore(sde, model, continuous, train, scale_by_sigma),
                               params, dropout_key)
