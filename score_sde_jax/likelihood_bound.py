"""ScoreFlow's variational upper bound on the negative log-likelihood (Song, Durkan, Murray &
Ermon 2021): the likelihood of the reverse-time SDE's model, estimated without bias by
denoising score matching over importance-sampled times (docs/likelihood-training.md). The
probability-flow ODE's exact likelihood is in :mod:`score_sde_jax.likelihood`; both share its
dequantization for bits/dim."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from score_sde_jax import checks
from score_sde_jax.likelihood import (BitsPerDimResult, _check_levels, _check_likelihood_eps,
                                      _dequantized_bits)
from score_sde_jax.score import as_pytree_fn
from score_sde_jax.sde import batch_mul, sum_except_batch


class BoundResult(NamedTuple):
  """ScoreFlow's upper bound on ``-log p(x)`` in nats ``(B,)`` and its terms: ``nll = prior +
  diffusion + offset``; ``nfe`` score evaluations per example."""

  nll: jax.Array
  prior: jax.Array
  diffusion: jax.Array
  offset: jax.Array
  nfe: int


@functools.partial(jax.jit, static_argnames=("sde", "num_times", "importance_sampling",
                                             "eps_offset"))
def _nll_bound(key, score_fn, x, eps, *, sde, num_times, importance_sampling, eps_offset):
  b, shape = x.shape[0], x.shape
  key_t, key_scan, key_prior, key_offset = jax.random.split(key, 4)
  # The integral over t as the mean of integrand(t) / p(t) over draws t ~ p.
  if importance_sampling:   # p = w / ratio, w = g^2 / std^2
    ts, ratios = sde.sample_likelihood_time(key_t, (num_times, b), eps)
    inv_p = ratios / sde.likelihood_weight(ts)
  else:
    ts = jax.random.uniform(key_t, (num_times, b), minval=eps, maxval=sde.T)
    inv_p = jnp.full((num_times, b), sde.T - eps)
  ts = ts.astype(x.dtype)

  def body(total, inputs):
    t, ratio, k = inputs   # ratio: 1 / p(t)
    key_z, key_probe = jax.random.split(k)
    z = jax.random.normal(key_z, shape, x.dtype)
    mean, std = sde.marginal_prob(x, t)
    x_t = mean + batch_mul(std, z)
    score = score_fn(x_t, t)
    g2 = sde.sde(jnp.zeros_like(x), t)[1] ** 2
    div_f = sde.drift_divergence(x_t, t, jax.random.rademacher(key_probe, shape, x.dtype))
    # g^2 (|score - grad log p_0t|^2 - |grad log p_0t|^2) - 2 div f, grad log p_0t = -z / std,
    # written as |std score + z|^2 - |z|^2 over std^2 (no 1 / std^2 of each term apart).
    dsm = sum_except_batch(jnp.square(batch_mul(std, score) + z)) - sum_except_batch(z * z)
    integrand = g2 / std**2 * dsm - 2.0 * div_f
    return total + ratio * integrand, None

  total, _ = jax.lax.scan(body, jnp.zeros((b,), x.dtype),
                          (ts, inv_p.astype(x.dtype), jax.random.split(key_scan, num_times)))
  diffusion = 0.5 * total / num_times
  mean, std = sde.marginal_prob(x, jnp.full((b,), sde.T, x.dtype))
  prior = -sde.prior_logp(mean + batch_mul(std, jax.random.normal(key_prior, shape, x.dtype)))
  offset = jnp.zeros((b,), x.dtype)
  if eps_offset:
    # -log p(x) <= E_q[-log p_eps(y) - log p(x | y)] - H(q) for q(y | x) = p_0,eps(y | x) (the
    # kernel at eps) and the Gaussian decoder p(x | y) = N(Tweedie's mean, (std / a)^2).
    t_eps = jnp.full((b,), eps, x.dtype)
    mean, std = sde.marginal_prob(x, t_eps)
    y = mean + batch_mul(std, jax.random.normal(key_offset, shape, x.dtype))
    a = sde.marginal_prob(jnp.ones((b, 1), x.dtype), t_eps)[0][:, 0]
    x_hat = batch_mul(1.0 / a, y + batch_mul(std**2, score_fn(y, t_eps)))
    d = int(np.prod(shape[1:]))
    entropy = 0.5 * d * (jnp.log(2 * jnp.pi) + 2.0 * jnp.log(std) + 1.0)
    decoder_std = std / a
    recon = (0.5 * d * (jnp.log(2 * jnp.pi) + 2.0 * jnp.log(decoder_std))
             + 0.5 * sum_except_batch(jnp.square(x - x_hat)) / decoder_std**2)
    offset = recon - entropy
  return prior + diffusion + offset, prior, diffusion, offset


def nll_bound(key, sde, score_fn, x, *, num_times=1000, importance_sampling=True, eps=1e-5,
              eps_offset=True) -> BoundResult:
  """ScoreFlow's variational upper bound on ``-log p(x)`` (Song, Durkan, Murray & Ermon 2021,
  Theorem 2 in its denoising form), an unbiased Monte-Carlo estimate in nats.

  For the reverse-time SDE with the model's score and the prior ``pi``:

      -log p(x) <= E[-log pi(x_T)]
                   + 1/2 int_eps^T E[g^2 (|s - grad log p_0t|^2 - |grad log p_0t|^2) - 2 div f] dt
                   + [E_q[-log N(x; x_hat(y), (std / a)^2)] - H(q)]

  with ``x_t ~ p_0t(. | x)`` (the kernel, ``grad log p_0t = -z / std``); the last bracket
  (``eps_offset``) makes the bound one on ``x`` itself rather than on ``x`` perturbed to time
  ``eps``: ``q = p_0,eps(. | x)`` and Tweedie's denoiser ``x_hat(y) = (y + std^2 s(y, eps)) / a``
  as a Gaussian decoder. With the exact score and ``pi = p_T`` the bound equals ``-log p(x)``
  as ``eps -> 0``; with ``pi != p_T`` it exceeds it by ``E[log p_T(x_T) / pi(x_T)]``
  (tests/test_likelihood_weighting.py derives the Gaussian case in closed form). Unlike the
  probability-flow likelihood it bounds the SDE's own model and needs no divergence of the score
  (one score evaluation per time sample), only of the drift (exact for the paper's SDEs).

  Args:
    key: PRNG key (times, noise, probes).
    x: ``(B, ...)`` model-space points (dequantized for discrete data: :func:`bits_per_dim_bound`).
    num_times: time samples per example (ScoreFlow's ``N = 1000``); the estimate is unbiased for
      any number, its variance falls as ``1 / num_times``.
    importance_sampling: ``t`` drawn in proportion to ``g^2 / std^2``
      (:meth:`SDE.sample_likelihood_time`), as ScoreFlow; ``False``: uniform on ``[eps, T]``.
    eps: the smallest time (ScoreFlow's ``1e-5``).

  Returns:
    :class:`BoundResult` with ``nll`` ``(B,)`` nats and its terms.
  """
  x = checks.check_batch("x", x)
  checks.check_key(key, "nll_bound")
  num_times = checks.check_int("num_times", num_times, 1)
  eps = _check_likelihood_eps(eps, sde)
  nll, prior, diffusion, offset = _nll_bound(
      key, as_pytree_fn(score_fn), x, eps, sde=sde, num_times=num_times,
      importance_sampling=bool(importance_sampling), eps_offset=bool(eps_offset))
  return BoundResult(nll, prior, diffusion, offset, num_times + int(bool(eps_offset)))


def bits_per_dim_bound(key, sde, score_fn, x_int, *, num_levels=256, scaler=lambda u: u,
                       n_repeats=1, num_times=1000, importance_sampling=True, eps=1e-5,
                       eps_offset=True) -> BitsPerDimResult:
  """:func:`nll_bound` in bits/dim of integer levels, with the dequantization of
  :func:`bits_per_dim` (uniform noise, ``n_repeats`` draws; the same :func:`bits_offset`): an
  upper bound on ``-log2 P(x) / D`` like it, comparable term by term."""
  x_int, num_levels, n_repeats = _check_levels(x_int, num_levels, n_repeats)
  checks.check_key(key, "bits_per_dim_bound")

  def nll(k, y):
    result = nll_bound(k, sde, score_fn, y, num_times=num_times,
                       importance_sampling=importance_sampling, eps=eps, eps_offset=eps_offset)
    return result.nll, jnp.full(result.nll.shape, result.nfe)

  return _dequantized_bits(key, x_int, nll, num_levels=num_levels, scaler=scaler,
                           n_repeats=n_repeats, dequantize_data=True)
