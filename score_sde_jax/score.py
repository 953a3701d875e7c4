"""Network output -> score function ``score_fn(x, t)``.

Networks know nothing about SDEs (as EDM's raw backbones) and the samplers and
likelihood see only ``score_fn``. The parameterisation belongs to the SDE: it
gives the time label the network receives (``sde.time_label``) and turns the
output into a score (``sde.output_to_score``). The built-in SDEs keep the
paper's conventions, so its networks and checkpoints mean the same thing here:

============  ==========  ======================================  ==========================
SDE           continuous  network input label                     score
============  ==========  ======================================  ==========================
VP / sub-VP   True        ``999 t`` (DDPM's integer-step scale)   ``-output / std(t)``
VP            False       ``(N - 1) t`` (a DDPM step index)       ``-output / sqrt(1 - alphabar)``
VE            True        ``sigma(t)``                            ``output`` (``/ sigma`` if scaled)
VE            False       ``round((T - t)(N - 1))`` (NCSN index)  ``output`` (``/ sigma_i`` if scaled)
any other     either      ``999 t``                               ``-output / std(t)``
============  ==========  ======================================  ==========================
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from score_sde_jax.sde import SDE, batch_times


def time_labels(sde: SDE, t: jax.Array, continuous: bool) -> jax.Array:
  """The label that a network trained for ``sde`` receives for time ``t`` (``(B,)`` -> ``(B,)``)."""
  return sde.time_label(t, continuous)


def output_to_score(sde: SDE, output: jax.Array, t: jax.Array, continuous: bool,
                    scale_by_sigma: bool = False) -> jax.Array:
  """Turns the network output at time ``t`` into the score ``grad_x log p_t(x)``."""
  return sde.output_to_score(output, t, continuous, scale_by_sigma)


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
    t = batch_times(t, x)
    model_fn = get_model_fn(self.model, params, train=self.train, dropout_key=dropout_key)
    output = model_fn(x, self.sde.time_label(t, self.continuous))
    return self.sde.output_to_score(output, t, self.continuous, self.scale_by_sigma)


def get_score_fn(sde: SDE, model, params: Any, continuous: bool = True, *,
                 train: bool = False, dropout_key: jax.Array | None = None,
                 scale_by_sigma: bool = False) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """A score function ``score_fn(x, t)`` from a network and its parameters.

  Args:
    sde: the forward SDE the network was trained for (any :class:`SDE`).
    model: a Flax module called as ``model.apply(variables, x, labels, train=...)``.
    params: the ``params`` collection.
    continuous: whether the network was trained with continuous time.
    train: network in training mode (dropout on; needs ``dropout_key``).
    scale_by_sigma: VE only: divide the output by the noise level.

  Returns:
    A ``jax.tree_util.Partial``: callable as ``score_fn(x, t)`` (``t`` of
    shape ``(B,)`` or a scalar) and a pytree whose leaves are the parameters,
    so it can be passed into jitted samplers as an ordinary argument (new
    parameters do not trigger recompilation).
  """
  sde.check_scale_by_sigma(scale_by_sigma)
  return jax.tree_util.Partial(NetworkScore(sde, model, continuous, train, scale_by_sigma),
                               params, dropout_key)


def _check_score_shape(out, x):
  if tuple(jnp.shape(out)) != tuple(jnp.shape(x)):
    raise ValueError(f"score_fn(x, t) returned shape {tuple(jnp.shape(out))} for x of shape "
                     f"{tuple(jnp.shape(x))}: a score has the shape of its input (one gradient "
                     f"per coordinate)")
  return out


def _shape_checked_call(score_fn, x, *rest):
  return _check_score_shape(score_fn(x, *rest), x)


@dataclasses.dataclass(frozen=True)
class _ShapeChecked:
  """A plain score function whose output shape is checked when traced; equal (and hashed) as
  the function it wraps, so the same function reuses compiled samplers."""

  fn: Callable

  def __call__(self, x, *rest):
    return _check_score_shape(self.fn(x, *rest), x)


def as_pytree_fn(score_fn, *, check_shape: bool = True):
  """``score_fn`` as a ``jax.tree_util.Partial`` so it can be a (dynamic) jit argument, its
  output shape checked when traced (a score of another shape broadcast silently or failed deep
  inside a solver).

  A ``Partial`` from :func:`get_score_fn` carries the parameters as leaves; a
  plain function becomes static aux data (the same function object reuses the
  compiled sampler, a new closure compiles again). ``check_shape=False``: any other function of
  ``(x, t)`` (a classifier's logits), unchecked.
  """
  if not check_shape:
    if isinstance(score_fn, jax.tree_util.Partial):
      return score_fn
    if not callable(score_fn):
      raise TypeError(f"fn={score_fn!r}: expected a callable fn(x, t)")
    return jax.tree_util.Partial(score_fn)
  if isinstance(score_fn, jax.tree_util.Partial):
    if score_fn.func is _shape_checked_call or isinstance(score_fn.func, _ShapeChecked):
      return score_fn
    return jax.tree_util.Partial(_shape_checked_call, score_fn)
  if not callable(score_fn):
    raise TypeError(f"score_fn={score_fn!r}: expected a callable score_fn(x, t)")
  return jax.tree_util.Partial(_ShapeChecked(score_fn))
