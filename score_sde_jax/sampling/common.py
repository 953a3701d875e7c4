"""What every sampler shares: the result shape, the paper's time grid and the options base class."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import ClassVar, Mapping, NamedTuple

import jax
import jax.numpy as jnp

from score_sde_jax.sde import batch_mul


class SampleResult(NamedTuple):
  """A sampler's result; unpacks as ``x, nfe = ...``.

  ``samples``: ``(B, ...)``. ``nfe``: score-function evaluations per example
  (the largest over the batch when examples run their own adaptive solves,
  which is the number of batched network calls).
  """

  samples: jax.Array
  nfe: int


def time_grid(T: float, eps, num_steps: int) -> jax.Array:
  """The paper's sampling grid ``linspace(T, eps, num_steps)`` (decreasing).

  The PC sampler takes one predictor step (of size ``T / num_steps``, on a
  chain of ``num_steps`` levels) at each of these times.
  """
  return jnp.linspace(T, eps, num_steps)


class NonFiniteSamples(ValueError):
  """A sampler produced NaN or infinite values."""


def checked_result(what: str, x, nfe: int) -> SampleResult:
  """``SampleResult(x, nfe)``, refused when ``x`` holds NaN or infinite values (a NaN score gave
  all-NaN samples without a word). Waits for ``x``; not under a trace (values unknown there)."""
  if not isinstance(x, jax.core.Tracer):
    bad = int(x.size - jnp.count_nonzero(jnp.isfinite(x)))
    if bad:
      raise NonFiniteSamples(
          f"{what}: {bad} of {x.size} sample values are NaN or infinite: the score returned "
          f"non-finite values (NaN or infinite weights, or inputs it cannot handle), or the "
          f"sampler diverged (a step size too large for this score)")
  return SampleResult(x, nfe)


def tweedie_denoise(sde, score_fn, x, t):
  """Tweedie's estimate ``E[x_0 | x_t] = (x + std(t)^2 score(x, t)) / a(t)`` (``a``: the kernel's
  mean coefficient; 1 for VE): NCSNv2's final denoising step, ``x + sigma_L^2 s(x, sigma_L)``,
  for any SDE whose kernel mean is ``a(t) x``. ``t`` is ``(B,)``; one score evaluation."""
  std = sde.marginal_prob(x, t)[1]
  a = sde.marginal_prob(jnp.ones((x.shape[0], 1), x.dtype), t)[0][:, 0]
  return batch_mul(1.0 / a, x + batch_mul(std**2, score_fn(x, t)))


class Sampler:
  """The options of one sampling method: a frozen dataclass per method, each registered in
  :data:`score_sde_jax.sampling.SAMPLERS` under the name ``sampling.method`` gives it.

  A subclass declares, besides its fields (checked when it is constructed):

  * ``section``: where its fields live in a config, ``sampling.<section>.<field>``; ``None``
    for the paper's flat predictor-corrector fields (``sampling.<field>``);
  * ``config_names``: ``{field: config name}`` where the two differ;
  * ``uses_flow``: whether it solves the probability-flow ODE (then the score it is given is
    the flow's, see :meth:`score_sde_jax.sde.SDE.flow_continuous`);

  and implements :meth:`check` (what needs the SDE), :meth:`sample` and :attr:`tag` (a short
  name for the files its samples are written to).
  """

  section: ClassVar[str | None] = None
  config_names: ClassVar[Mapping[str, str]] = MappingProxyType({})
  uses_flow: ClassVar[bool] = False

  def check(self, sde) -> None:
    """Raises ``ValueError('field=value: ...')`` when the options do not fit ``sde``."""

  def sample(self, key, sde, score_fn, shape, *, eps=None, denoise: bool = True,
             mesh=None) -> SampleResult:
    raise NotImplementedError

  @property
  def tag(self) -> str:
    raise NotImplementedError

  def replace(self, **fields):
    """A copy with ``fields`` changed (checked); an unknown field names the known ones."""
    known = [f.name for f in dataclasses.fields(self)]
    for name, value in fields.items():
      if name not in known:
        raise ValueError(f"{name}={value!r}: not an option of {type(self).__name__} "
                         f"(its options: {', '.join(known)})")
    return dataclasses.replace(self, **fields)
