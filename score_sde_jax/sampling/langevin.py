"""Langevin dynamics driven only by a score.

``langevin_sample`` targets one fixed density (``score_fn(x)``);
``annealed_langevin_sample`` follows NCSN (Song & Ermon 2019): Langevin at
each noise level of a decreasing schedule, with step ``step_lr sigma_i^2 /
sigma_L^2``, using a time-indexed ``score_fn(x, t)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from score_sde_jax import checks
from score_sde_jax.sampling.common import SampleResult, checked_result, time_grid, tweedie_denoise
from score_sde_jax.score import as_pytree_fn


@functools.partial(jax.jit, static_argnames=("n_steps",))
def _langevin(key, score_fn, x0, step_size, *, n_steps):
  def step(x, k):
    z = jax.random.normal(k, x.shape, x.dtype)
    return x + step_size * score_fn(x) + jnp.sqrt(2 * step_size) * z, None

  x, _ = jax.lax.scan(step, x0, jax.random.split(key, n_steps))
  return x


def langevin_sample(key, score_fn, x0, *, step_size, n_steps) -> SampleResult:
  """Unadjusted Langevin: ``x <- x + e score(x) + sqrt(2 e) z``, ``n_steps`` times from ``x0``.

  ``score_fn(x)`` is the score of the target. Returns ``SampleResult(samples, nfe)``.
  """
  checks.check_key(key, "langevin_sample")
  step_size = checks.check_number("step_size", step_size)
  n_steps = checks.check_int("n_steps", n_steps, 1)
  x0 = checks.check_batch("x0", x0)
  return SampleResult(_langevin(key, as_pytree_fn(score_fn), x0, step_size, n_steps=n_steps),
                      n_steps)


@functools.partial(jax.jit, static_argnames=("sde", "n_steps_each", "num_scales", "denoise"))
def _annealed(key, score_fn, x0, step_lr, eps, *, sde, n_steps_each, num_scales, denoise):
  b = x0.shape[0]
  ts = time_grid(sde.T, eps, num_scales)
  stds = sde.marginal_prob(jnp.zeros((num_scales, 1)), ts)[1]
  step_sizes = step_lr * (stds / stds[-1]) ** 2

  def level(carry, inputs):
    x, key = carry
    t, step_size = inputs

    def step(x, k):
      z = jax.random.normal(k, x.shape, x.dtype)
      return x + step_size * score_fn(x, jnp.full((b,), t)) + jnp.sqrt(2 * step_size) * z, None

    key, sub = jax.random.split(key)
    x, _ = jax.lax.scan(step, x, jax.random.split(sub, n_steps_each))
    return (x, key), None

  (x, _), _ = jax.lax.scan(level, (x0, key), (ts, step_sizes))
  return tweedie_denoise(sde, score_fn, x, jnp.full((b,), ts[-1], x.dtype)) if denoise else x


def annealed_langevin_sample(key, sde, score_fn, shape, *, n_steps_each=100, step_lr=2e-5,
                             num_scales=None, eps=None, denoise=True) -> SampleResult:
  """Annealed Langevin dynamics (NCSN) over the noise levels of ``sde``.

  Levels ``t_i = linspace(T, eps, num_scales)`` (default ``sde.N``) with
  ``sigma_i`` the std of the perturbation kernel at ``t_i``; at each level
  ``n_steps_each`` Langevin steps of size ``step_lr (sigma_i / sigma_L)^2``.
  Starts from the prior. ``denoise`` ends with NCSNv2's denoising step, Tweedie's
  ``x + sigma_L^2 score(x, t_L)`` (divided by the kernel's mean coefficient for SDEs that shrink
  the data), one more score evaluation. ``eps`` defaults to the SDE's ``sampling_eps``. Returns
  ``SampleResult(samples, nfe)``.
  """
  checks.check_key(key, "annealed_langevin_sample")
  shape = checks.check_shape(shape)
  eps = checks.check_eps(eps, sde)
  num_scales = checks.check_int("num_scales", sde.N if num_scales is None else num_scales, 2)
  n_steps_each = checks.check_int("n_steps_each", n_steps_each, 1)
  step_lr = checks.check_number("step_lr", step_lr)
  sigma_last = float(sde.marginal_prob(jnp.zeros((1, 1)), jnp.array([eps]))[1][0])
  if step_lr > 2 * sigma_last**2:
    # Step (step_lr / sigma_L^2) sigma_0^2 would exceed twice the top level's variance: divergent.
    raise ValueError(f"step_lr={step_lr!r}: must be <= 2 sigma(eps)^2 = {2 * sigma_last**2:.3g} "
                     f"for {type(sde).__name__} at eps={eps}, or the steps at the top noise level "
                     f"diverge; lower step_lr or raise eps")
  key_prior, key = jax.random.split(key)
  x0 = sde.prior_sampling(key_prior, shape)
  x = _annealed(key, as_pytree_fn(score_fn), x0, step_lr, eps, sde=sde,
                n_steps_each=n_steps_each, num_scales=num_scales, denoise=bool(denoise))
  return checked_result("annealed_langevin_sample", x,
                        num_scales * n_steps_each + int(bool(denoise)))
