"""The sampling methods a config or a trained run can name: ``sampling.method`` -> its options
class (:class:`~score_sde_jax.sampling.common.Sampler`). Adding a sampler is one module, with its
sampling function and its options class, and one entry here."""

from score_sde_jax.sampling.dpm_solver import DPMSolverSampler
from score_sde_jax.sampling.edm import EDMSampler
from score_sde_jax.sampling.flow import ODESampler
from score_sde_jax.sampling.pc import PCSampler
from score_sde_jax.sampling.reverse_sde import SDESampler

SAMPLERS = {
    "pc": PCSampler,            # predictor-corrector (the paper's; flat fields sampling.predictor, ...)
    "ode": ODESampler,          # adaptive probability-flow ODE (diffrax)
    "sde": SDESampler,          # reverse-time SDE (diffrax Euler-Maruyama)
    "dpm_solver": DPMSolverSampler,   # DPM-Solver++ (order 1: DDIM)
    "edm": EDMSampler,          # EDM's Heun, with optional churn
}


def get_sampler(method: str, **options):
  """The options of ``method`` (``pc``, ``ode``, ``sde``, ``dpm_solver``, ``edm``), checked."""
  if method not in SAMPLERS:
    raise ValueError(f"method={method!r}: expected one of {sorted(SAMPLERS)}")
  return SAMPLERS[method]().replace(**options)
