"""Predictor-corrector sampling (Algorithm 1 of the paper) as one ``lax.scan``."""

from __future__ import annotations

import dataclasses
import functools
from types import MappingProxyType

import jax
import jax.numpy as jnp

from score_sde_jax import checks, parallel
from score_sde_jax.sampling import progress as progress_lib
from score_sde_jax.sampling.common import (SampleResult, Sampler, checked_result, time_grid,
                                           tweedie_denoise)
from score_sde_jax.sampling.correctors import CORRECTORS, get_corrector
from score_sde_jax.sampling.predictors import PREDICTORS, get_predictor
from score_sde_jax.score import as_pytree_fn


def denoises_by_tweedie(predictor: str, corrector: str, denoise: bool) -> bool:
  """Whether the sample ends with Tweedie's denoising step (:func:`tweedie_denoise`): when a
  corrector alone samples (annealed Langevin dynamics, as NCSN / NCSNv2 configs set it), as
  NCSNv2's ``denoise``. With a predictor, ``denoise`` returns its last step's mean, as the paper."""
  return denoise and predictor == "none" and corrector != "none"


def pc_nfe(predictor: str, corrector: str, n_steps: int, num_steps: int,
           denoise: bool = False) -> int:
  """Score evaluations of one PC sample: ``num_steps * ([predictor] + n_steps [corrector])``,
  plus one for Tweedie's final step (:func:`denoises_by_tweedie`)."""
  return (num_steps * (int(predictor != "none") + n_steps * int(corrector != "none"))
          + int(denoises_by_tweedie(predictor, corrector, denoise)))


def check_pc_settings(sde, predictor, corrector, snr, n_steps, num_steps, eps,
                      probability_flow=False):
  """Checks the PC settings (before anything compiles); returns ``(num_steps, n_steps, snr,
  eps)`` with the defaults filled in (``num_steps=None``: ``sde.N``; ``eps=None``: the SDE's)."""
  get_predictor(predictor)
  get_corrector(corrector)
  num_steps = checks.check_int("num_steps", sde.N if num_steps is None else num_steps, 2)
  n_steps = checks.check_int("n_steps", n_steps, 1)
  snr = checks.check_number("snr", sde.langevin_snr if snr is None else snr)
  eps = checks.check_eps(eps, sde)
  if corrector in ("langevin", "ald") or (
      predictor in ("reverse_diffusion", "ancestral_sampling") and sde.has_discrete_chain):
    sde.check_chain_length(num_steps, divides_by_alpha=predictor == "ancestral_sampling")
  if predictor == "ancestral_sampling":
    if not sde.has_discrete_chain:
      raise ValueError(f"predictor='ancestral_sampling': needs an SDE with a discrete-time chain "
                       f"(VPSDE and VESDE only), not {type(sde).__name__}")
    if probability_flow:
      raise ValueError("predictor='ancestral_sampling' with probability_flow=True: ancestral "
                       "sampling has no probability-flow form; use reverse_diffusion or "
                       "euler_maruyama")
  return num_steps, n_steps, snr, eps


@functools.partial(jax.jit, static_argnames=("sde", "shape", "predictor", "corrector", "n_steps",
                                             "num_steps", "denoise", "probability_flow", "mesh",
                                             "report_steps"))
def _pc_sample(key, score_fn, snr, eps, constraint, *, sde, shape, predictor, corrector, n_steps,
               num_steps, denoise, probability_flow, mesh, report_steps=False):
  predictor_fn, corrector_fn = get_predictor(predictor), get_corrector(corrector)
  key, prior_key = jax.random.split(key)
  # Threefry keys are partitionable: the draws do not depend on how the batch is split.
  x = parallel.constrain_batch(sde.prior_sampling(prior_key, shape), mesh)

  def step(carry, t_and_index):
    t, i = t_and_index
    key, x, _ = carry
    if constraint is None:
      key, key_c, key_p = jax.random.split(key, 3)
    else:
      key, key_c, key_cc, key_p, key_pc = jax.random.split(key, 5)
    vec_t = jnp.full((shape[0],), t)
    x, x_mean = corrector_fn(key_c, sde, score_fn, x, vec_t, snr, n_steps, num_steps)
    if constraint is not None:
      x, x_mean = constraint.project(key_cc, sde, x, x_mean, vec_t)
    x, x_mean = predictor_fn(key_p, sde, score_fn, x, vec_t, num_steps, probability_flow)
    if constraint is not None:
      x, x_mean = constraint.project(key_pc, sde, x, x_mean, vec_t)
    if report_steps:
      progress_lib.report_step(i, num_steps)
    return (key, x, x_mean), None

  steps = (time_grid(sde.T, eps, num_steps), jnp.arange(num_steps))
  (key, x, x_mean), _ = jax.lax.scan(step, (key, x, x), steps)
  if denoises_by_tweedie(predictor, corrector, denoise):
    x = tweedie_denoise(sde, score_fn, x, jnp.full((shape[0],), eps, x.dtype))
  else:
    x = x_mean if denoise else x
  return x if constraint is None else constraint.finish(key, sde, score_fn, x, eps)


def pc_sample(key, sde, score_fn, shape, *, predictor="reverse_diffusion", corrector="langevin",
              snr=None, n_steps=1, num_steps=None, eps=None, denoise=True,
              probability_flow=False, mesh=None, constraint=None, progress=None) -> SampleResult:
  """Predictor-corrector samples from the reverse-time SDE.

  Over the grid ``t_i = linspace(T, eps, num_steps)`` (:func:`time_grid`),
  each step applies ``n_steps`` corrector steps at ``t_i`` and then one
  predictor step, as the paper's ``get_pc_sampler``. ``num_steps`` (default
  ``sde.N``) is the sampler's grid: chain-based steps (reverse diffusion,
  ancestral sampling, the Langevin ``alpha``) use the SDE's chain with that
  many levels; the SDE itself is not changed. ``eps`` defaults to the SDE's
  ``sampling_eps``. ``snr``, the Langevin corrector's signal-to-noise ratio, defaults to
  ``sde.langevin_snr``: the paper's 0.16 for VE-type SDEs, 0.05 for VP-type ones (VP, sub-VP
  and SDEs of your own that shrink the data into the prior), where 0.16 overshoots
  (docs/samplers.md). ``denoise=True`` returns the last predictor step without its noise; with
  ``predictor="none"`` (a corrector alone: annealed Langevin dynamics with ``corrector="ald"``) it
  ends with NCSNv2's denoising step instead, Tweedie's ``(x + std(eps)^2 score(x, eps)) / a(eps)``,
  one more score evaluation (the paper's code returned the last corrector step's mean, whose step is
  a small fraction of ``std^2``). ``probability_flow=True`` makes the predictor follow the
  probability-flow ODE. ``constraint`` conditions the samples: a pytree with
  ``project(key, sde, x, x_mean, t) -> (x, x_mean)``, applied after every corrector and
  predictor step, ``finish(key, sde, score_fn, x, eps) -> x``, applied to the result, and
  ``nfe``, the evaluations it adds (:func:`score_sde_jax.controllable.inpaint` and ``colorize``
  are this sampler with the paper's projection). ``mesh`` (from :func:`score_sde_jax.parallel.make_mesh`)
  splits the batch over its devices (and processes); the result is the same
  as on one device: the Langevin step size uses norms averaged over the
  global batch, as the paper's ``pmean``. ``progress``: a name for a bar over the steps (default:
  the enclosing :func:`score_sde_jax.sampling.progress.stage`'s; none without one); with it
  the call returns once the samples are computed.

  Returns:
    ``SampleResult(samples, nfe)``: samples of ``shape`` and the number of
    score evaluations per sample.
  """
  checks.check_key(key, "pc_sample")
  shape = checks.check_shape(shape)
  num_steps, n_steps, snr, eps = check_pc_settings(sde, predictor, corrector, snr, n_steps,
                                                   num_steps, eps, probability_flow)
  parallel.check_mesh(shape[0], mesh, "shape[0]")
  name = progress_lib.name_for(progress)
  with progress_lib.steps_bar(name, num_steps):
    x = _pc_sample(key, as_pytree_fn(score_fn), snr, eps, constraint, sde=sde, shape=shape,
                   predictor=predictor, corrector=corrector, n_steps=n_steps,
                   num_steps=num_steps, denoise=denoise, probability_flow=probability_flow,
                   mesh=mesh, report_steps=name is not None)
    if name is not None:
      x = jax.block_until_ready(x)
  extra = 0 if constraint is None else constraint.nfe
  return checked_result("pc_sample", x,
                        pc_nfe(predictor, corrector, n_steps, num_steps, denoise) + extra)


@dataclasses.dataclass(frozen=True)
class PCSampler(Sampler):
  """``sampling.method = "pc"``: :func:`pc_sample`, with the paper's flat fields
  (``sampling.predictor``, ``corrector``, ``snr``, ``n_steps_each``, ``probability_flow``)."""

  predictor: str = "reverse_diffusion"   # euler_maruyama | reverse_diffusion | ancestral_sampling | none
  corrector: str = "langevin"            # langevin | ald | none
  snr: float = 0.16                      # the Langevin corrector's signal-to-noise ratio
  n_steps: int = 1                       # corrector steps per predictor step
  probability_flow: bool = False         # the predictor follows the probability-flow ODE

  config_names = MappingProxyType({"n_steps": "n_steps_each"})

  def __post_init__(self):
    checks.check_fields(self, {"predictor": checks.one_of(PREDICTORS),
                               "corrector": checks.one_of(CORRECTORS), "snr": checks.POSITIVE,
                               "n_steps": checks.POSITIVE_INT, "probability_flow": checks.BOOL})

  def check(self, sde) -> None:
    check_pc_settings(sde, self.predictor, self.corrector, self.snr, self.n_steps, None, None,
                      self.probability_flow)

  def sample(self, key, sde, score_fn, shape, *, eps=None, denoise=True, mesh=None):
    return pc_sample(key, sde, score_fn, shape, predictor=self.predictor,
                     corrector=self.corrector, snr=self.snr, n_steps=self.n_steps, eps=eps,
                     denoise=denoise, probability_flow=self.probability_flow, mesh=mesh)

  @property
  def tag(self) -> str:
    return f"pc_{self.predictor}_{self.corrector}"
