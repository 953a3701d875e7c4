"""Predictors: one step of a reverse-time solver at time ``t`` of a chain of ``num_steps`` levels.

Each predictor is ``predictor(key, sde, score_fn, x, t, num_steps, probability_flow) -> (x, x_mean)``:
``x_mean`` is the step without its noise (returned by the last step when
denoising). With ``probability_flow=True`` the step follows the
probability-flow ODE instead of the reverse SDE (its noise is zero). What is
specific to an SDE (its discrete chain, its ancestral step) comes from the SDE.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from score_sde_jax.sde import batch_mul


def euler_maruyama(key, sde, score_fn, x, t, num_steps=None, probability_flow=False):
  """``x <- x - [f - g^2 score] dt + g sqrt(dt) z`` with ``dt = T / num_steps`` (paper's EulerMaruyamaPredictor)."""
  dt = -sde.T / sde.chain_length(num_steps)
  drift, diffusion = sde.reverse(score_fn, probability_flow).sde(x, t)
  x_mean = x + drift * dt
  z = jax.random.normal(key, x.shape, x.dtype)
  return x_mean + batch_mul(diffusion * jnp.sqrt(-dt), z), x_mean


def reverse_diffusion(key, sde, score_fn, x, t, num_steps=None, probability_flow=False):
  """The SDE's discretisation run backwards: ``x <- x - f + G^2 score + G z`` (eq. 46)."""
  f, G = sde.reverse(score_fn, probability_flow).discretize(x, t, num_steps)
  x_mean = x - f
  z = jax.random.normal(key, x.shape, x.dtype)
  return x_mean + batch_mul(G, z), x_mean


def ancestral_sampling(key, sde, score_fn, x, t, num_steps=None, probability_flow=False):
  """Ancestral sampling of the SDE's discrete chain: DDPM for VP (eq. 47), SMLD for VE (eq. 48).

  It has no probability-flow form; ``pc_sample`` refuses ``probability_flow=True`` with it.
  """
  del probability_flow
  x_mean, std = sde.ancestral_step(x, score_fn(x, t), t, num_steps)
  z = jax.random.normal(key, x.shape, x.dtype)
  return x_mean + batch_mul(std, z), x_mean


def none(key, sde, score_fn, x, t, num_steps=None, probability_flow=False):
  """No predictor (corrector-only sampling): ``x`` unchanged, no score evaluation."""
  return x, x


PREDICTORS = {
    "euler_maruyama": euler_maruyama,
    "reverse_diffusion": reverse_diffusion,
    "ancestral_sampling": ancestral_sampling,
    "none": none,
}


def get_predictor(name: str):
  try:
    return PREDICTORS[name]
  except (KeyError, TypeError):
    raise ValueError(f"predictor={name!r}: unknown; known: {sorted(PREDICTORS)}") from None


def denoise(sde, score_fn, x, eps):
  """The paper's noise removal: the mean of one reverse-diffusion step at ``eps``, on the SDE's chain."""
  f, _ = sde.reverse(score_fn).discretize(x, jnp.full((x.shape[0],), eps))
  return x - f
