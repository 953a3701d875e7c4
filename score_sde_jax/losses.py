"""Training objectives: continuous-time denoising score matching (eq. 7 of the paper), and the
discrete-time SMLD (VE) and DDPM (VP) objectives of the paper's ``losses.py``."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from score_sde_jax.score import get_score_fn
from score_sde_jax.sde import SDE, VESDE, VPSDE, batch_mul

TIME_EPS = 1e-5  # smallest training time, as in the paper (avoids the std -> 0 singularity)


def _reduce(losses: jax.Array, reduce_mean: bool) -> jax.Array:
  flat = losses.reshape(losses.shape[0], -1)
  return jnp.mean(flat, axis=-1) if reduce_mean else 0.5 * jnp.sum(flat, axis=-1)


def dsm_losses(sde: SDE, score_fn: Callable, x0: jax.Array, t: jax.Array, z: jax.Array, *,
               reduce_mean: bool = False, likelihood_weighting: bool = False) -> jax.Array:
  """Per-example DSM loss at given times ``t`` ``(B,)`` and noise ``z`` (shaped like ``x0``).

  With ``x_t = mean(x0, t) + std(t) z``: ``|| std * score(x_t, t) + z ||^2``
  (weighting ``lambda(t) = std^2``), or with ``likelihood_weighting``
  ``g(t)^2 || score(x_t, t) + z / std ||^2`` (weighting ``lambda = g^2``,
  whose integral bounds the negative log-likelihood, Song et al. 2021b).
  The reduction over dimensions is a mean, or half a sum (the paper's default).
  """
  mean, std = sde.marginal_prob(x0, t)
  x_t = mean + batch_mul(std, z)
  score = score_fn(x_t, t)
  if likelihood_weighting:
    g2 = sde.sde(jnp.zeros_like(x0), t)[1] ** 2
    return _reduce(jnp.square(score + batch_mul(1.0 / std, z)), reduce_mean) * g2
  return _reduce(jnp.square(batch_mul(std, score) + z), reduce_mean)


def denoising_score_matching(key: jax.Array, sde: SDE, score_fn: Callable, x0: jax.Array, *,
                             reduce_mean: bool = False, likelihood_weighting: bool = False,
                             eps: float = TIME_EPS) -> jax.Array:
  """Monte-Carlo DSM loss of ``score_fn`` on the batch ``x0``: ``t ~ U(eps, T)``, ``z ~ N(0, I)``."""
  key_t, key_z = jax.random.split(key)
  t = jax.random.uniform(key_t, (x0.shape[0],), x0.dtype, minval=eps, maxval=sde.T)
  z = jax.random.normal(key_z, x0.shape, x0.dtype)
  return jnp.mean(dsm_losses(sde, score_fn, x0, t, z, reduce_mean=reduce_mean,
                             likelihood_weighting=likelihood_weighting))


def get_sde_loss_fn(sde: SDE, model, *, train: bool, reduce_mean: bool = False,
                    continuous: bool = True, likelihood_weighting: bool = False,
                    eps: float = TIME_EPS, scale_by_sigma: bool = False):
  """``loss_fn(key, params, batch) -> scalar``: DSM for a network, as the paper's ``get_sde_loss_fn``."""

  def loss_fn(key, params, batch):
    key_loss, key_dropout = jax.random.split(key)
    score_fn = get_score_fn(sde, model, params, continuous, train=train,
                            dropout_key=key_dropout if train else None,
                            scale_by_sigma=scale_by_sigma)
    return denoising_score_matching(key_loss, sde, score_fn, batch, reduce_mean=reduce_mean,
                                    likelihood_weighting=likelihood_weighting, eps=eps)

  return loss_fn


def smld_losses(sde: VESDE, score_fn: Callable, x0: jax.Array, index: jax.Array, z: jax.Array, *,
                reduce_mean: bool = False) -> jax.Array:
  """NCSN's loss at noise levels ``sigma_i`` (``index`` 0 = sigma_max): ``sigma_i^2 |score + n / sigma_i^2|^2``.

  The network sees level ``i`` as the time ``t = T - i / (N - 1)`` (``score.py``'s discrete VE labels).
  """
  sigmas = sde.discrete_sigmas[::-1][index]
  t = sde.T - index.astype(x0.dtype) / (sde.N - 1)
  noise = batch_mul(sigmas, z)
  score = score_fn(x0 + noise, t)
  target = -batch_mul(1.0 / sigmas**2, noise)
  return _reduce(jnp.square(score - target), reduce_mean) * sigmas**2


def ddpm_losses(sde: VPSDE, score_fn: Callable, x0: jax.Array, index: jax.Array, z: jax.Array, *,
                reduce_mean: bool = True) -> jax.Array:
  """DDPM's noise-prediction loss at steps ``index``: ``|eps_hat - z|^2`` with
  ``x_i = sqrt(alphabar_i) x0 + sqrt(1 - alphabar_i) z`` and ``eps_hat = -sqrt(1 - alphabar_i) score``."""
  t = index.astype(x0.dtype) / (sde.N - 1)
  std = sde.sqrt_1m_alphas_cumprod[index]
  x = batch_mul(sde.sqrt_alphas_cumprod[index], x0) + batch_mul(std, z)
  eps_hat = -batch_mul(std, score_fn(x, t))
  return _reduce(jnp.square(eps_hat - z), reduce_mean)


def get_discrete_loss_fn(sde: SDE, model, *, train: bool, reduce_mean: bool,
                         scale_by_sigma: bool = False):
  """``loss_fn(key, params, batch)`` for discrete-time training: SMLD for VE, DDPM for VP."""
  if isinstance(sde, VESDE):
    per_example = smld_losses
  elif isinstance(sde, VPSDE):
    per_example = ddpm_losses
  else:
    raise ValueError(f"discrete-time training (training.continuous=False) is defined for VESDE "
                     f"(SMLD) and VPSDE (DDPM), not {type(sde).__name__}")

  def loss_fn(key, params, batch):
    key_i, key_z, key_dropout = jax.random.split(key, 3)
    score_fn = get_score_fn(sde, model, params, continuous=False, train=train,
                            dropout_key=key_dropout if train else None,
                            scale_by_sigma=scale_by_sigma)
    index = jax.random.randint(key_i, (batch.shape[0],), 0, sde.N)
    z = jax.random.normal(key_z, batch.shape, batch.dtype)
    return jnp.mean(per_example(sde, score_fn, batch, index, z, reduce_mean=reduce_mean))

  return loss_fn
