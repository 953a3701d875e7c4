"""Correctors: Markov chain Monte Carlo steps at a fixed time ``t`` that target ``p_t``.

Each corrector is ``corrector(key, sde, score_fn, x, t, snr, n_steps, num_steps) -> (x, x_mean)``.
Both are Langevin dynamics (Algorithms 4 and 5 of the paper); they differ only
in the step size. The factor ``alpha_i`` comes from the SDE (DDPM's
``1 - beta_i`` for VP and sub-VP, 1 otherwise).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from score_sde_jax.sde import batch_mul


def batch_norms(v):
  """The norm of each example of a batch ``(B, ...)`` -> ``(B,)``."""
  return jnp.linalg.norm(v.reshape(v.shape[0], -1), axis=-1)


def _langevin_steps(key, score_fn, x, t, n_steps, step_size_fn):
  """``n_steps`` of ``x <- x + e score + sqrt(2 e) z`` with ``e = step_size_fn(score, z)``."""
  x_mean = x
  for k in jax.random.split(key, n_steps):
    grad = score_fn(x, t)
    noise = jax.random.normal(k, x.shape, x.dtype)
    step_size = step_size_fn(grad, noise)
    x_mean = x + batch_mul(step_size, grad)
    x = x_mean + batch_mul(jnp.sqrt(step_size * 2), noise)
  return x, x_mean


def langevin(key, sde, score_fn, x, t, snr, n_steps, num_steps=None):
  """Langevin MCMC with step ``e = 2 alpha (snr |z| / |score|)^2``.

  The norms are averaged over the whole (global) batch, as the paper's
  ``pmean``: under a sharded batch, ``jnp.mean`` is a global mean.
  """
  alpha = sde.langevin_alpha(t, num_steps)
  return _langevin_steps(key, score_fn, x, t, n_steps, lambda grad, noise: (
      snr * jnp.mean(batch_norms(noise)) / jnp.mean(batch_norms(grad))) ** 2 * 2 * alpha)


def ald(key, sde, score_fn, x, t, snr, n_steps, num_steps=None):
  """Annealed Langevin dynamics of NCSN: step ``e = 2 alpha (snr std(t))^2``."""
  alpha = sde.langevin_alpha(t, num_steps)
  std = sde.marginal_prob(x, t)[1]
  return _langevin_steps(key, score_fn, x, t, n_steps,
                         lambda grad, noise: (snr * std) ** 2 * 2 * alpha)


def none(key, sde, score_fn, x, t, snr, n_steps, num_steps=None):
  """No corrector."""
  return x, x


CORRECTORS = {"langevin": langevin, "ald": ald, "none": none}


def get_corrector(name: str):
  try:
    return CORRECTORS[name]
  except (KeyError, TypeError):
    raise ValueError(f"corrector={name!r}: unknown; known: {sorted(CORRECTORS)}") from None
