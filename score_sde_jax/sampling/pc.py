"""Predictor-corrector sampling (Algorithm 1 of the paper) as one ``lax.scan``."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from score_sde_jax import checks, parallel
from score_sde_jax.sampling.common import SampleResult, time_grid
from score_sde_jax.sampling.correctors import get_corrector
from score_sde_jax.sampling.predictors import get_predictor
from score_sde_jax.score import as_pytree_fn


def pc_nfe(predictor: str, corrector: str, n_steps: int, num_steps: int) -> int:
  """Score evaluations of one PC sample: ``num_steps * ([predictor] + n_steps [corrector])``."""
  return num_steps * (int(predictor != "none") + n_steps * int(corrector != "none"))


def check_pc_settings(sde, predictor, corrector, snr, n_steps, num_steps, eps,
                      probability_flow=False):
  """Checks the PC settings (before anything compiles); returns ``(num_steps, n_steps, snr,
  eps)`` with the defaults filled in (``num_steps=None``: ``sde.N``; ``eps=None``: the SDE's)."""
  get_predictor(predictor)
  get_corrector(corrector)
  num_steps = checks.check_int("num_steps", sde.N if num_steps is None else num_steps, 2)
  n_steps = checks.check_int("n_steps", n_steps, 1)
  snr = checks.check_number("snr", snr)
  eps = checks.check_eps(eps, sde)
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
                                             "num_steps", "denoise", "probability_flow", "mesh"))
def _pc_sample(key, score_fn, snr, eps, *, sde, shape, predictor, corrector, n_steps, num_steps,
               denoise, probability_flow, mesh):
  predictor_fn, corrector_fn = get_predictor(predictor), get_corrector(corrector)
  key, prior_key = jax.random.split(key)
  # Threefry keys are partitionable: the draws do not depend on how the batch is split.
  x = parallel.constrain_batch(sde.prior_sampling(prior_key, shape), mesh)

  def step(carry, t):
    key, x, _ = carry
    key, key_c, key_p = jax.random.split(key, 3)
    vec_t = jnp.full((shape[0],), t)
    x, x_mean = corrector_fn(key_c, sde, score_fn, x, vec_t, snr, n_steps, num_steps)
    x, x_mean = predictor_fn(key_p, sde, score_fn, x, vec_t, num_steps, probability_flow)
    return (key, x, x_mean), None

  (_, x, x_mean), _ = jax.lax.scan(step, (key, x, x), time_grid(sde.T, eps, num_steps))
  return x_mean if denoise else x


def pc_sample(key, sde, score_fn, shape, *, predictor="reverse_diffusion", corrector="langevin",
              snr=0.16, n_steps=1, num_steps=None, eps=None, denoise=True,
              probability_flow=False, mesh=None) -> SampleResult:
  """Predictor-corrector samples from the reverse-time SDE.

  Over the grid ``t_i = linspace(T, eps, num_steps)`` (:func:`time_grid`),
  each step applies ``n_steps`` corrector steps at ``t_i`` and then one
  predictor step, as the paper's ``get_pc_sampler``. ``num_steps`` (default
  ``sde.N``) is the sampler's grid: chain-based steps (reverse diffusion,
  ancestral sampling, the Langevin ``alpha``) use the SDE's chain with that
  many levels; the SDE itself is not changed. ``eps`` defaults to the SDE's
  ``sampling_eps``. ``denoise=True`` returns the last predictor step without
  its noise. ``probability_flow=True`` makes the predictor follow the
  probability-flow ODE. ``mesh`` (from :func:`score_sde_jax.parallel.make_mesh`)
  splits the batch over its devices (and processes); the result is the same
  as on one device: the Langevin step size uses norms averaged over the
  global batch, as the paper's ``pmean``.

  Returns:
    ``SampleResult(samples, nfe)``: samples of ``shape`` and the number of
    score evaluations per sample.
  """
  checks.check_key(key, "pc_sample")
  shape = checks.check_shape(shape)
  num_steps, n_steps, snr, eps = check_pc_settings(sde, predictor, corrector, snr, n_steps,
                                                   num_steps, eps, probability_flow)
  parallel.check_mesh(shape[0], mesh, "shape[0]")
  x = _pc_sample(key, as_pytree_fn(score_fn), snr, eps, sde=sde, shape=shape, predictor=predictor,
                 corrector=corrector, n_steps=n_steps, num_steps=num_steps, denoise=denoise,
                 probability_flow=probability_flow, mesh=mesh)
  return SampleResult(x, pc_nfe(predictor, corrector, n_steps, num_steps))
