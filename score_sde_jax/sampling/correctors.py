"""Correctors: Markov chain Monte Carlo steps at a fixed time ``t`` that target ``p_t``.

Each corrector is ``corrector(key, sde, score_fn, x, t, snr, n_steps) -> (x, x_mean)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from score_sde_jax.sde import VPSDE, batch_mul, subVPSDE


def _alpha(sde, t):
  """DDPM's ``alpha_i = 1 - beta_i`` at ``t`` for VP; 1 for VE.

  The paper multiplies the Langevin step size by ``alpha_i`` for VP and reads
  ``sde.alphas``, which its sub-VP SDE lacks (so its corrector crashes there).
  Sub-VP has the same drift and beta schedule as VP, so here it uses the same
  ``alpha_i = 1 - beta_i`` of the VP chain with its ``beta_min``, ``beta_max``
  and ``N``.
  """
  if isinstance(sde, (VPSDE, subVPSDE)):
    timestep = (t * (sde.N - 1) / sde.T).astype(jnp.int32)
    betas = jnp.linspace(sde.beta_min / sde.N, sde.beta_max / sde.N, sde.N)
    return 1.0 - betas[timestep]
  return jnp.ones_like(t)


def _norm(v):
  return jnp.linalg.norm(v.reshape(v.shape[0], -1), axis=-1)


# --- Langevin (Algorithms 4 and 5 of the paper) -------------------------------------------------

def langevin(key, sde, score_fn, x, t, snr, n_steps):
  """Langevin MCMC with step ``eps = 2 alpha (snr |z| / |score|)^2``.

  The norms are averaged over the whole (global) batch, as the paper's
  ``pmean``: under a sharded batch, ``jnp.mean`` is a global mean.
  """
  alpha = _alpha(sde, t)
  x_mean = x
  for k in jax.random.split(key, n_steps):
    grad = score_fn(x, t)
    noise = jax.random.normal(k, x.shape, x.dtype)
    step_size = (snr * jnp.mean(_norm(noise)) / jnp.mean(_norm(grad))) ** 2 * 2 * alpha
    x_mean = x + batch_mul(step_size, grad)
    x = x_mean + batch_mul(jnp.sqrt(step_size * 2), noise)
  return x, x_mean


# --- Annealed Langevin dynamics (NCSN) ----------------------------------------------------------

def ald(key, sde, score_fn, x, t, snr, n_steps):
  """Annealed Langevin dynamics of NCSN: step ``eps = 2 alpha (snr std(t))^2``."""
  alpha = _alpha(sde, t)
  std = sde.marginal_prob(x, t)[1]
  x_mean = x
  for k in jax.random.split(key, n_steps):
    grad = score_fn(x, t)
    noise = jax.random.normal(k, x.shape, x.dtype)
    step_size = (snr * std) ** 2 * 2 * alpha
    x_mean = x + batch_mul(step_size, grad)
    x = x_mean + batch_mul(jnp.sqrt(step_size * 2), noise)
  return x, x_mean


# --- None ---------------------------------------------------------------------------------------

def none(key, sde, score_fn, x, t, snr, n_steps):
  """No corrector."""
  return x, x


CORRECTORS = {"langevin": langevin, "ald": ald, "none": none}


def get_corrector(name: str):
  try:
    return CORRECTORS[name]
  except KeyError:
    raise ValueError(f"corrector={name!r}: unknown; known: {sorted(CORRECTORS)}") from None
