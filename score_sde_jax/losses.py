"""Training objectives: continuous-time denoising score matching (eq. 7 of the paper), and the
discrete-time SMLD (VE) and DDPM (VP) objectives of the paper's ``losses.py``."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from score_sde_jax.score import get_score_fn
from score_sde_jax.sde import SDE, batch_mul

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


def check_importance_sampling(importance_sampling: bool, likelihood_weighting: bool) -> None:
  if importance_sampling and not likelihood_weighting:
    raise ValueError("importance_sampling=True: draws t in proportion to the likelihood weight "
                     "g(t)^2 / std(t)^2, so it needs likelihood_weighting=True (with the default "
                     "weighting std^2, uniform t is already the low-variance choice)")


def denoising_score_matching(key: jax.Array, sde: SDE, score_fn: Callable, x0: jax.Array, *,
                             reduce_mean: bool = False, likelihood_weighting: bool = False,
                             importance_sampling: bool = False,
                             eps: float = TIME_EPS) -> jax.Array:
  """Monte-Carlo DSM loss of ``score_fn`` on the batch ``x0``: ``t ~ U(eps, T)``, ``z ~ N(0, I)``.

  With ``importance_sampling`` (and ``likelihood_weighting``; ScoreFlow, Song et al. 2021b):
  ``t`` is drawn with density ``p(t)`` proportional to ``g^2 / std^2``
  (:meth:`SDE.sample_likelihood_time`) and the per-example loss is
  ``|std score + z|^2 w(t) / ((T - eps) p(t))``: an unbiased estimate of the same objective as
  uniform ``t`` (the same expectation, so the same minimiser and values comparable across the
  two), with far less variance near ``t = eps``.
  """
  check_importance_sampling(importance_sampling, likelihood_weighting)
  key_t, key_z = jax.random.split(key)
  z = jax.random.normal(key_z, x0.shape, x0.dtype)
  if importance_sampling:
    t, ratio = sde.sample_likelihood_time(key_t, (x0.shape[0],), eps)
    per_example = dsm_losses(sde, score_fn, x0, t.astype(x0.dtype), z, reduce_mean=reduce_mean)
    return jnp.mean(per_example * ratio / (sde.T - eps))
  t = jax.random.uniform(key_t, (x0.shape[0],), x0.dtype, minval=eps, maxval=sde.T)
  return jnp.mean(dsm_losses(sde, score_fn, x0, t, z, reduce_mean=reduce_mean,
                             likelihood_weighting=likelihood_weighting))


def get_sde_loss_fn(sde: SDE, model, *, train: bool, reduce_mean: bool = False,
                    continuous: bool = True, likelihood_weighting: bool = False,
                    importance_sampling: bool = False, eps: float = TIME_EPS,
                    scale_by_sigma: bool = False):
  """``loss_fn(key, params, batch) -> scalar``: DSM for a network, as the paper's ``get_sde_loss_fn``
  (``importance_sampling``: ScoreFlow's, :func:`denoising_score_matching`)."""
  check_importance_sampling(importance_sampling, likelihood_weighting)

  def loss_fn(key, params, batch):
    key_loss, key_dropout = jax.random.split(key)
    score_fn = get_score_fn(sde, model, params, continuous, train=train,
                            dropout_key=key_dropout if train else None,
                            scale_by_sigma=scale_by_sigma)
    return denoising_score_matching(key_loss, sde, score_fn, batch, reduce_mean=reduce_mean,
                                    likelihood_weighting=likelihood_weighting,
                                    importance_sampling=importance_sampling, eps=eps)

  return loss_fn


def discrete_losses(sde: SDE, score_fn: Callable, x0: jax.Array, index: jax.Array, z: jax.Array, *,
                    reduce_mean: bool = True) -> jax.Array:
  """Per-example loss of a discrete-time chain at levels ``index`` ``(B,)``: SMLD (VE) or DDPM (VP).

  With the chain's kernel ``x_i = a_i x0 + s_i z`` (``sde.discrete_marginal``)
  and the score at the level's time ``t_i``: ``|s_i score(x_i, t_i) + z|^2``.
  For VP this is DDPM's ``|eps_hat - z|^2`` with ``eps_hat = -s_i score``; for VE
  it is NCSN's ``sigma_i^2 |score + n / sigma_i^2|^2`` with ``n = sigma_i z``.
  """
  mean, std = sde.discrete_marginal(x0, index)
  score = score_fn(mean + batch_mul(std, z), sde.chain_time(index))
  return _reduce(jnp.square(batch_mul(std, score) + z), reduce_mean)


def check_discrete(sde: SDE) -> None:
  """Discrete-time training needs the SDE's own chain."""
  if not sde.has_discrete_chain:
    raise ValueError(f"continuous=False: discrete-time training is defined for SDEs with a "
                     f"discrete chain, VESDE (SMLD) and VPSDE (DDPM), not {type(sde).__name__}")


def get_discrete_loss_fn(sde: SDE, model, *, train: bool, reduce_mean: bool,
                         scale_by_sigma: bool = False):
  """``loss_fn(key, params, batch)`` for discrete-time training on the SDE's own chain
  (SMLD for VE, DDPM for VP; levels drawn uniformly)."""
  check_discrete(sde)

  def loss_fn(key, params, batch):
    key_i, key_z, key_dropout = jax.random.split(key, 3)
    score_fn = get_score_fn(sde, model, params, continuous=False, train=train,
                            dropout_key=key_dropout if train else None,
                            scale_by_sigma=scale_by_sigma)
    index = jax.random.randint(key_i, (batch.shape[0],), 0, sde.N)
    z = jax.random.normal(key_z, batch.shape, batch.dtype)
    return jnp.mean(discrete_losses(sde, score_fn, batch, index, z, reduce_mean=reduce_mean))

  return loss_fn
