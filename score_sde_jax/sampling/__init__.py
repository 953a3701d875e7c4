"""Samplers: predictor-corrector (``lax.scan``), probability-flow ODE and reverse SDE (diffrax),
Langevin dynamics. Every sampler sees only a ``score_fn(x, t)`` and takes the PRNG key first."""

from score_sde_jax.sampling.correctors import CORRECTORS, get_corrector
from score_sde_jax.sampling.diffeq import ode_sample, sde_sample
from score_sde_jax.sampling.langevin import annealed_langevin_sample, langevin_sample
from score_sde_jax.sampling.pc import pc_sample
from score_sde_jax.sampling.predictors import PREDICTORS, get_predictor

METHODS = ("pc", "ode", "sde")


def get_sampling_fn(config, sde, shape, inverse_scaler, eps, mesh=None):
  """``sampling_fn(key, score_fn) -> (x, nfe)`` from the config's ``sampling`` section.

  As the paper's ``get_sampling_fn``: ``sampling.method`` is ``pc`` (fields
  ``predictor``, ``corrector``, ``snr``, ``n_steps_each``, ``noise_removal``,
  ``probability_flow``), ``ode`` (``ode_solver``, ``rtol``, ``atol`` and, for
  fixed-step solvers, ``ode_num_steps``) or ``sde`` (diffrax Euler-Maruyama
  with ``sde_num_steps``). Samples are returned in data space (``inverse_scaler``),
  split over ``mesh`` when one is given.
  """
  s = config.sampling
  shape = tuple(shape)
  if s.method == "pc":
    get_predictor(s.predictor)
    get_corrector(s.corrector)

    def sampling_fn(key, score_fn):
      x, nfe = pc_sample(key, sde, score_fn, shape, predictor=s.predictor, corrector=s.corrector,
                         snr=s.snr, n_steps=s.n_steps_each, eps=eps, denoise=s.noise_removal,
                         probability_flow=s.probability_flow, mesh=mesh)
      return inverse_scaler(x), nfe
  elif s.method == "ode":
    def sampling_fn(key, score_fn):
      x, nfe = ode_sample(key, sde, score_fn, shape, rtol=s.get("rtol", 1e-5),
                          atol=s.get("atol", 1e-5), solver=s.get("ode_solver", "tsit5"), eps=eps,
                          denoise=s.noise_removal, num_steps=s.get("ode_num_steps", 0) or None,
                          mesh=mesh)
      return inverse_scaler(x), nfe
  elif s.method == "sde":
    def sampling_fn(key, score_fn):
      x, nfe = sde_sample(key, sde, score_fn, shape, num_steps=s.get("sde_num_steps", sde.N),
                          eps=eps, denoise=s.noise_removal, mesh=mesh)
      return inverse_scaler(x), nfe
  else:
    raise ValueError(f"config.sampling.method={s.method!r}: expected one of {list(METHODS)}")
  return sampling_fn


__all__ = [
    "CORRECTORS", "METHODS", "PREDICTORS", "annealed_langevin_sample", "get_corrector",
    "get_predictor", "get_sampling_fn", "langevin_sample", "ode_sample", "pc_sample", "sde_sample",
]
