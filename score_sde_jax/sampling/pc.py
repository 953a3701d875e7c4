"""Predictor-corrector sampling (Algorithm 1 of the paper) as one ``lax.scan``."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from score_sde_jax import parallel
from score_sde_jax.sampling.correctors import get_corrector
from score_sde_jax.sampling.predictors import get_predictor
from score_sde_jax.sde import VESDE, VPSDE


def as_pytree_fn(score_fn):
  """``score_fn`` as a ``jax.tree_util.Partial`` so it can be a (dynamic) jit argument.

  A ``Partial`` from :func:`score_sde_jax.get_score_fn` carries the parameters
  as leaves; a plain function becomes static aux data (the same function object
  reuses the compiled sampler, a new closure compiles again).
  """
  if isinstance(score_fn, jax.tree_util.Partial):
    return score_fn
  return jax.tree_util.Partial(score_fn)


def constrain_batch(x, mesh):
  """Splits the batch axis of ``x`` over the mesh's ``data`` axis (no-op without a mesh)."""
  if mesh is None:
    return x
  return jax.lax.with_sharding_constraint(x, parallel.batch_sharding(mesh))


def check_mesh(shape, mesh):
  if mesh is not None:
    parallel.check_batch_size(shape[0], mesh, "shape[0]")


def check_common(shape, eps, sde):
  if not (isinstance(shape, (tuple, list)) and len(shape) >= 2 and all(
      isinstance(d, int) and d > 0 for d in shape)):
    raise ValueError(f"shape={shape!r}: expected (batch, ...) of positive integers")
  if not 0 < eps < sde.T:
    raise ValueError(f"eps={eps!r}: must be in (0, T={sde.T})")


def pc_nfe(predictor: str, corrector: str, n_steps: int, num_steps: int) -> int:
  """Score evaluations of one PC sample: ``num_steps * ([predictor] + n_steps [corrector])``."""
  return num_steps * (int(predictor != "none") + n_steps * int(corrector != "none"))


@functools.partial(jax.jit, static_argnames=("sde", "shape", "predictor", "corrector", "n_steps",
                                             "denoise", "probability_flow", "mesh"))
def _pc_sample(key, score_fn, snr, eps, *, sde, shape, predictor, corrector, n_steps, denoise,
               probability_flow, mesh):
  predictor_fn, corrector_fn = get_predictor(predictor), get_corrector(corrector)
  key, prior_key = jax.random.split(key)
  # Threefry keys are partitionable: the draws do not depend on how the batch is split.
  x = constrain_batch(sde.prior_sampling(prior_key, shape), mesh)
  timesteps = jnp.linspace(sde.T, eps, sde.N)

  def step(carry, t):
    key, x, _ = carry
    key, key_c, key_p = jax.random.split(key, 3)
    vec_t = jnp.full((shape[0],), t)
    x, x_mean = corrector_fn(key_c, sde, score_fn, x, vec_t, snr, n_steps)
    x, x_mean = predictor_fn(key_p, sde, score_fn, x, vec_t, probability_flow)
    return (key, x, x_mean), None

  (_, x, x_mean), _ = jax.lax.scan(step, (key, x, x), timesteps)
  return x_mean if denoise else x


def pc_sample(key, sde, score_fn, shape, *, predictor="reverse_diffusion", corrector="langevin",
              snr=0.16, n_steps=1, num_steps=None, eps=1e-3, denoise=True,
              probability_flow=False, mesh=None):
  """Predictor-corrector samples from the reverse-time SDE.

  Over the grid ``t_i = linspace(T, eps, N)``, each step applies ``n_steps``
  corrector steps at ``t_i`` and then one predictor step, as the paper's
  ``get_pc_sampler``. ``num_steps`` (default ``sde.N``) replaces the SDE's
  ``N`` for the sampler (the discrete chains are rebuilt on the new grid).
  ``denoise=True`` returns the last predictor step without its noise.
  ``probability_flow=True`` makes the predictor follow the probability-flow ODE.
  ``mesh`` (from :func:`score_sde_jax.parallel.make_mesh`) splits the batch
  over its devices (and processes); the result is the same as on one device:
  the Langevin step size uses norms averaged over the global batch, as the
  paper's ``pmean``.

  Returns ``(x, nfe)``: samples of ``shape`` and the number of score
  evaluations per sample.
  """
  get_predictor(predictor)
  get_corrector(corrector)
  if num_steps is not None:
    if not (isinstance(num_steps, int) and num_steps >= 2):
      raise ValueError(f"num_steps={num_steps!r}: expected an integer >= 2")
    sde = dataclasses.replace(sde, N=num_steps)
  if not (isinstance(n_steps, int) and n_steps >= 1):
    raise ValueError(f"n_steps={n_steps!r}: expected an integer >= 1")
  if predictor == "ancestral_sampling" and not isinstance(sde, (VPSDE, VESDE)):
    raise ValueError(f"predictor='ancestral_sampling': defined for VPSDE and VESDE only, not "
                     f"{type(sde).__name__}")
  shape = tuple(shape)
  check_common(shape, eps, sde)
  check_mesh(shape, mesh)
  x = _pc_sample(key, as_pytree_fn(score_fn), snr, eps, sde=sde, shape=shape, predictor=predictor,
                 corrector=corrector, n_steps=n_steps, denoise=denoise,
                 probability_flow=probability_flow, mesh=mesh)
  return x, pc_nfe(predictor, corrector, n_steps, sde.N)
