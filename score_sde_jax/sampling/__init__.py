"""Samplers: predictor-corrector (``lax.scan``), probability-flow ODE and reverse SDE (diffrax),
Langevin dynamics, and few-step probability-flow solvers (DPM-Solver++, DDIM, EDM's Heun).
Every sampler sees only a ``score_fn(x, t)``, takes the PRNG key first and returns a
:class:`SampleResult` ``(samples, nfe)``. :data:`SAMPLERS` names each method's options class
(:class:`Sampler`): what a config's ``sampling.method`` chooses."""

from score_sde_jax.sampling import flow
from score_sde_jax.sampling.common import NonFiniteSamples, SampleResult, Sampler, time_grid
from score_sde_jax.sampling.correctors import CORRECTORS, get_corrector
from score_sde_jax.sampling.dpm_solver import DPMSolverSampler, dpm_solver_sample
from score_sde_jax.sampling.edm import EDMSampler, edm_sample
from score_sde_jax.sampling.flow import (SOLVERS, ODESampler, SolveError, flow_nfe, ode_sample,
                                         solve_flow)
from score_sde_jax.sampling.grids import SCHEDULES
from score_sde_jax.sampling.langevin import annealed_langevin_sample, langevin_sample
from score_sde_jax.sampling.paths import ode_paths, reverse_sde_paths
from score_sde_jax.sampling.pc import PCSampler, pc_sample
from score_sde_jax.sampling.predictors import PREDICTORS, get_predictor
from score_sde_jax.sampling.registry import SAMPLERS, get_sampler
from score_sde_jax.sampling.reverse_sde import SDESampler, sde_sample

__all__ = [
    "CORRECTORS", "DPMSolverSampler", "EDMSampler", "NonFiniteSamples", "ODESampler", "PCSampler",
    "PREDICTORS", "SAMPLERS", "SCHEDULES", "SDESampler", "SOLVERS", "SampleResult", "Sampler",
    "SolveError",
    "annealed_langevin_sample", "dpm_solver_sample", "edm_sample", "flow_nfe", "get_corrector",
    "get_predictor", "get_sampler", "langevin_sample", "ode_paths", "ode_sample", "pc_sample",
    "reverse_sde_paths", "sde_sample", "solve_flow", "time_grid",
]
