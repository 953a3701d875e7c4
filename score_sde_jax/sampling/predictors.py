"""Predictors: one step of a reverse-time solver, from ``t`` to ``t - 1/N``.

Each predictor is ``predictor(key, sde, score_fn, x, t, probability_flow) -> (x, x_mean)``:
``x_mean`` is the step without its noise (returned by the last step when
denoising). With ``probability_flow=True`` the step follows the
probability-flow ODE instead of the reverse SDE (its noise is zero).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from score_sde_jax.sde import VESDE, VPSDE, batch_mul


# --- Euler-Maruyama -----------------------------------------------------------------------------

def euler_maruyama(key, sde, score_fn, x, t, probability_flow=False):
  """``x <- x - [f - g^2 score] dt + g sqrt(dt) z`` with ``dt = T / N`` (paper's EulerMaruyamaPredictor)."""
  dt = -sde.T / sde.N
  drift, diffusion = sde.reverse(score_fn, probability_flow).sde(x, t)
  x_mean = x + drift * dt
  z = jax.random.normal(key, x.shape, x.dtype)
  return x_mean + batch_mul(diffusion * jnp.sqrt(-dt), z), x_mean


# --- Reverse diffusion --------------------------------------------------------------------------

def reverse_diffusion(key, sde, score_fn, x, t, probability_flow=False):
  """The discretisation of the forward chain run backwards: ``x <- x - f + G^2 score + G z`` (eq. 46)."""
  f, G = sde.reverse(score_fn, probability_flow).discretize(x, t)
  x_mean = x - f
  z = jax.random.normal(key, x.shape, x.dtype)
  return x_mean + batch_mul(G, z), x_mean


# --- Ancestral sampling -------------------------------------------------------------------------

def ancestral_sampling(key, sde, score_fn, x, t, probability_flow=False):
  """Ancestral sampling of DDPM (VP) and its SMLD analogue (VE), paper's eq. 47 and 48.

  Defined only for the discrete chains of ``VPSDE`` and ``VESDE``.
  """
  del probability_flow  # ancestral sampling has no ODE form (as in the paper's code)
  timestep = (t * (sde.N - 1) / sde.T).astype(jnp.int32)
  score = score_fn(x, t)
  z = jax.random.normal(key, x.shape, x.dtype)
  if isinstance(sde, VESDE):
    sigmas = sde.discrete_sigmas
    sigma = sigmas[timestep]
    adjacent = jnp.where(timestep == 0, 0.0, sigmas[jnp.maximum(timestep - 1, 0)])
    x_mean = x + batch_mul(sigma**2 - adjacent**2, score)
    std = jnp.sqrt(adjacent**2 * (sigma**2 - adjacent**2) / sigma**2)
    return x_mean + batch_mul(std, z), x_mean
  if isinstance(sde, VPSDE):
    beta = sde.discrete_betas[timestep]
    x_mean = batch_mul(1.0 / jnp.sqrt(1.0 - beta), x + batch_mul(beta, score))
    return x_mean + batch_mul(jnp.sqrt(beta), z), x_mean
  raise ValueError(f"predictor='ancestral_sampling': defined for VPSDE and VESDE only, not "
                   f"{type(sde).__name__}")


# --- None ---------------------------------------------------------------------------------------

def none(key, sde, score_fn, x, t, probability_flow=False):
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
  except KeyError:
    raise ValueError(f"predictor={name!r}: unknown; known: {sorted(PREDICTORS)}") from None
