"""The sampler a run uses, among every sampler its config sets up."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Mapping

from score_sde_jax import sampling


@dataclasses.dataclass(frozen=True)
class Sampling:
  """The sampler a run uses (``sampling.method``) among those its config sets up, and whether the
  last step is noise-free (``sampling.noise_removal``)."""

  method: str
  samplers: Mapping[str, sampling.Sampler]   # method -> its options
  denoise: bool = True

  @property
  def sampler(self) -> sampling.Sampler:
    return self.samplers[self.method]

  @property
  def tag(self) -> str:
    return self.sampler.tag

  @property
  def uses_flow(self) -> bool:
    return self.sampler.uses_flow

  def with_options(self, method: str | None = None, *, denoise: bool | None = None,
                   **options) -> "Sampling":
    """Another method, and options of the method changed (a method the config does not set up
    starts from its defaults)."""
    method = self.method if method is None else method
    if method not in sampling.SAMPLERS:
      raise ValueError(f"method={method!r}: expected one of {sorted(sampling.SAMPLERS)}")
    base = self.samplers.get(method) or sampling.SAMPLERS[method]()
    samplers = MappingProxyType({**self.samplers, method: base.replace(**options)})
    return Sampling(method, samplers, self.denoise if denoise is None else denoise)

  def sampling_fn(self, sde, shape, inverse_scaler, mesh=None, *, eps=None):
    """``fn(key, score_fn) -> SampleResult`` with samples in data space (``inverse_scaler``),
    split over ``mesh``; ``eps`` (default: the SDE's ``sampling_eps``) is the smallest time."""
    sampler, denoise = self.sampler, self.denoise
    eps = sde.sampling_eps if eps is None else eps
    shape = tuple(shape)

    def sampling_fn(key, score_fn):
      x, nfe = sampler.sample(key, sde, score_fn, shape, eps=eps, denoise=denoise, mesh=mesh)
      return sampling.SampleResult(inverse_scaler(x), nfe)

    return sampling_fn
