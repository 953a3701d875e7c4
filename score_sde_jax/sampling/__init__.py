"""Samplers: predictor-corrector (``lax.scan``), probability-flow ODE and reverse SDE (diffrax),
Langevin dynamics. Every sampler sees only a ``score_fn(x, t)``, takes the PRNG key first and
returns a :class:`SampleResult` ``(samples, nfe)``."""

from score_sde_jax.sampling.common import SampleResult, time_grid
from score_sde_jax.sampling.correctors import CORRECTORS, get_corrector
from score_sde_jax.sampling.flow import SOLVERS, flow_nfe, ode_sample, solve_flow
from score_sde_jax.sampling.langevin import annealed_langevin_sample, langevin_sample
from score_sde_jax.sampling.paths import ode_paths, reverse_sde_paths
from score_sde_jax.sampling.pc import pc_sample
from score_sde_jax.sampling.predictors import PREDICTORS, get_predictor
from score_sde_jax.sampling.reverse_sde import sde_sample

METHODS = ("pc", "ode", "sde")


def get_sampling_fn(config, sde, shape, inverse_scaler, eps, mesh=None):
  """``sampling_fn(key, score_fn) -> (x, nfe)`` from the config's ``sampling`` section.

  As the paper's ``get_sampling_fn``: ``sampling.method`` is ``pc`` (fields
  ``predictor``, ``corrector``, ``snr``, ``n_steps_each``, ``noise_removal``,
  ``probability_flow``), ``ode`` (``ode_solver``, ``rtol``, ``atol`` and, for
  fixed steps, ``ode_num_steps``) or ``sde`` (diffrax Euler-Maruyama with
  ``sde_num_steps``). Samples are returned in data space (``inverse_scaler``),
  split over ``mesh`` when one is given.
  """
  s = config.sampling
  shape = tuple(shape)
  if s.method == "pc":
    get_predictor(s.predictor)
    get_corrector(s.corrector)

    def sample(key, score_fn):
      return pc_sample(key, sde, score_fn, shape, predictor=s.predictor, corrector=s.corrector,
                       snr=s.snr, n_steps=s.n_steps_each, eps=eps, denoise=s.noise_removal,
                       probability_flow=s.probability_flow, mesh=mesh)
  elif s.method == "ode":
    def sample(key, score_fn):
      return ode_sample(key, sde, score_fn, shape, rtol=s.get("rtol", 1e-5),
                        atol=s.get("atol", 1e-5), solver=s.get("ode_solver", "tsit5"), eps=eps,
                        denoise=s.noise_removal, num_steps=s.get("ode_num_steps", 0) or None,
                        mesh=mesh)
  elif s.method == "sde":
    def sample(key, score_fn):
      return sde_sample(key, sde, score_fn, shape, num_steps=s.get("sde_num_steps", sde.N),
                        eps=eps, denoise=s.noise_removal, mesh=mesh)
  else:
    raise ValueError(f"config.sampling.method={s.method!r}: expected one of {list(METHODS)}")

  def sampling_fn(key, score_fn):
    x, nfe = sample(key, score_fn)
    return SampleResult(inverse_scaler(x), nfe)

  return sampling_fn


__all__ = [
    "CORRECTORS", "METHODS", "PREDICTORS", "SOLVERS", "SampleResult", "annealed_langevin_sample",
    "flow_nfe", "get_corrector", "get_predictor", "get_sampling_fn", "langevin_sample",
    "ode_paths", "ode_sample", "pc_sample", "reverse_sde_paths", "sde_sample", "solve_flow",
    "time_grid",
]
