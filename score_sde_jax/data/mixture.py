"""Gaussian mixtures: exact density and, for any SDE whose perturbation kernel is
``x_t = a(t) x_0 + s(t) z``, the exact density, score and component posterior of the time-t
marginal: the library's oracle for tests, benchmarks and figures.

This module imports nothing of the package but the toy base class: an SDE is used only through
its ``marginal_prob(x, t)`` method.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from score_sde_jax.data.toy import ToyDistribution


def _ring(n_modes: int, radius: float) -> np.ndarray:
  angles = 2 * np.pi * np.arange(n_modes) / n_modes
  return radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixture(ToyDistribution):
  """Mixture of ``K`` Gaussians in ``D`` dimensions.

  Args:
    weights: ``(K,)`` non-negative, normalised on construction.
    means: ``(K, D)``.
    covs: ``(K, D, D)`` symmetric positive definite; or ``(K,)`` / scalar
      standard deviations for isotropic components.
  """

  weights: np.ndarray
  means: np.ndarray
  covs: np.ndarray

  def __post_init__(self):
    means = np.asarray(self.means, np.float64)
    if means.ndim != 2:
      raise ValueError(f"means: shape {means.shape}, expected (K, D)")
    k, d = means.shape
    weights = np.asarray(self.weights, np.float64)
    if weights.shape != (k,) or np.any(weights < 0) or weights.sum() <= 0:
      raise ValueError(f"weights={weights.tolist()}: expected {k} non-negative numbers, not all 0")
    covs = np.asarray(self.covs, np.float64)
    if covs.ndim <= 1:
      stds = np.broadcast_to(covs, (k,))
      covs = stds[:, None, None] ** 2 * np.eye(d)[None]
    if covs.shape != (k, d, d):
      raise ValueError(f"covs: shape {covs.shape}, expected ({k}, {d}, {d}) or ({k},) standard deviations")
    try:
      np.linalg.cholesky(covs)
    except np.linalg.LinAlgError:
      raise ValueError("covs: every covariance must be symmetric positive definite") from None
    object.__setattr__(self, "weights", weights / weights.sum())
    object.__setattr__(self, "means", means)
    object.__setattr__(self, "covs", covs)

  @classmethod
  def ring(cls, n_modes: int = 8, radius: float = 2.0, std: float = 0.15):
    """The default 2-D mixture: ``n_modes`` equal isotropic modes on a circle."""
    return cls(np.ones(n_modes), _ring(n_modes, radius), np.full(n_modes, std))

  @property
  def dim(self) -> int:
    return self.means.shape[1]

  @property
  def n_components(self) -> int:
    return self.means.shape[0]

  @property
  def num_classes(self) -> int:
    return self.n_components

  def sample(self, rng, n):
    return self.sample_with_labels(rng, n)[0]

  def sample_with_labels(self, rng, n):
    """``(x (n, D), component (n,))``: samples and the component each was drawn from (the class
    labels of a classifier; :meth:`sample` draws the same ``x``)."""
    comp = rng.choice(self.n_components, size=n, p=self.weights)
    z = rng.standard_normal((n, self.dim))
    chol = np.linalg.cholesky(self.covs)
    return self.means[comp] + np.einsum("nij,nj->ni", chol[comp], z), comp

  def _kernel(self, sde, x, t):
    """``(a, s)`` of shape ``(B,)``: x_t = a x_0 + s z under ``sde``, for ``x`` ``(B, D)``.

    ``t`` is ``(B,)`` or a scalar (broadcast over the batch), as for the SDEs.
    """
    t = jnp.asarray(t, x.dtype)
    if t.ndim == 0:
      t = jnp.broadcast_to(t, (x.shape[0],))
    elif t.shape != (x.shape[0],):
      raise ValueError(f"t: shape {t.shape}, expected () or ({x.shape[0]},) for x of shape {x.shape}")
    mean, std = sde.marginal_prob(jnp.ones((x.shape[0], 1), x.dtype), t)
    return mean[:, 0], std

  def _log_terms_and_scores(self, x, a, s):
    """Per-component log-densities ``(B, K)`` and scores ``(B, K, D)`` of the time-``t``
    marginal, whose component covariances are ``a^2 C_k + s^2 I``.

    In each component's eigenbasis ``C_k = Q diag(lam) Q^T`` (computed once, on the host) these
    are diagonal, ``a^2 lam + s^2``: no factorisation at run time (a batched Cholesky inside a
    long ``lax.scan`` dead-locked XLA:CPU at batches of a few thousand).
    """
    lam, q = np.linalg.eigh(self.covs)                           # (K, D), (K, D, D)
    lam, q = jnp.asarray(lam, x.dtype), jnp.asarray(q, x.dtype)
    diff = x[:, None, :] - a[:, None, None] * jnp.asarray(self.means, x.dtype)[None]   # (B, K, D)
    var = (a**2)[:, None, None] * lam[None] + (s**2)[:, None, None]                      # (B, K, D)
    proj = jnp.einsum("bkd,kde->bke", diff, q)
    sol = jnp.einsum("kde,bke->bkd", q, proj / var)             # C_t^{-1} (x - m)
    maha = jnp.sum(proj**2 / var, axis=-1)
    logdet = jnp.sum(jnp.log(var), axis=-1)
    log_w = jnp.log(jnp.asarray(self.weights, x.dtype))
    log_terms = log_w - 0.5 * (maha + logdet + self.dim * math.log(2 * math.pi))
    return log_terms, -sol

  def log_prob(self, x):
    """Exact log-density of the data, ``x`` ``(B, D)`` -> ``(B,)``."""
    x = jnp.asarray(x)
    a = jnp.ones(x.shape[0], x.dtype)
    log_terms, _ = self._log_terms_and_scores(x, a, jnp.zeros_like(a))
    return jax.nn.logsumexp(log_terms, axis=-1)

  def marginal_log_prob(self, sde, x, t):
    """Exact log-density of the time-``t`` marginal of ``sde``; ``t`` ``(B,)`` or a scalar."""
    x = jnp.asarray(x)
    a, s = self._kernel(sde, x, t)
    log_terms, _ = self._log_terms_and_scores(x, a, s)
    return jax.nn.logsumexp(log_terms, axis=-1)

  def marginal_score(self, sde, x, t):
    """Exact score ``grad_x log p_t(x)`` of the time-``t`` marginal, ``(B, D)``.

    ``p_t = sum_k w_k N(a mu_k, a^2 Sigma_k + s^2 I)``; the score is the
    responsibility-weighted sum of the component scores ``-C_k^{-1}(x - a mu_k)``.
    """
    x = jnp.asarray(x)
    a, s = self._kernel(sde, x, t)
    log_terms, comp_scores = self._log_terms_and_scores(x, a, s)
    resp = jax.nn.softmax(log_terms, axis=-1)
    return jnp.einsum("bk,bkd->bd", resp, comp_scores)

  def marginal_log_posterior(self, sde, x, t):
    """``log p_t(k | x)`` ``(B, K)``: the exact posterior of each component under the time-``t``
    marginal (an exact noise-conditional classifier, its logits)."""
    x = jnp.asarray(x)
    a, s = self._kernel(sde, x, t)
    log_terms, _ = self._log_terms_and_scores(x, a, s)
    return jax.nn.log_softmax(log_terms, axis=-1)

  def marginal_sample(self, sde, rng, n, t):
    """Exact samples of the time-``t`` marginal (scalar ``t``): ``a x_0 + s z``, ``(n, D)``."""
    x0 = self.sample(rng, n)
    a, s = self._kernel(sde, jnp.zeros((n, self.dim), jnp.float32), t)
    z = rng.standard_normal(x0.shape)
    return np.asarray(a)[:, None] * x0 + np.asarray(s)[:, None] * z
