"""Low-dimensional toy distributions.

Every distribution draws samples from a ``numpy.random.Generator`` (host-side
data, deterministic from a seed). :class:`GaussianMixture` also gives its exact
density and, for any SDE whose perturbation kernel is ``x_t = a(t) x_0 +
s(t) z``, the exact density and score of the time-t marginal: the library's
oracle for tests, benchmarks and figures.

This module imports nothing of the package: an SDE is used only through its
``marginal_prob(x, t)`` method.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np


class ToyDistribution:
  """Base class: ``dim`` and ``sample(rng, n)``; batches come from :meth:`batches`."""

  dim: int
  is_image = False  # vector data: points in their natural range
  num_classes = None  # classes of sample_with_labels (GaussianMixture: its components)

  @property
  def example_shape(self) -> tuple:
    return (self.dim,)

  def held_out(self, n: int, seed: int) -> np.ndarray:
    """``n`` test points (float32), the same for a given seed."""
    return next(self.batches(n, seed, split="test"))

  def held_out_labels(self, n: int, seed: int) -> np.ndarray:
    """The class labels of :meth:`held_out` ``(n, seed)``."""
    return next(self.batches(n, seed, split="test", labels=True))[1]

  def sample_with_labels(self, rng: np.random.Generator, n: int):
    raise ValueError(f"{type(self).__name__}: has no class labels (a GaussianMixture's components "
                     f"are its classes)")

  def to_unit(self, x):
    """Loader output as the scaler expects it (points are already in their range)."""
    return np.asarray(x, np.float32)

  def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
    raise NotImplementedError

  def batches(self, batch_size: int, seed: int, start_step: int = 0, *,
              split: str = "train", steps_per_batch: int = 0,
              rows: slice | None = None, labels: bool = False) -> Iterator[np.ndarray]:
    """Infinite iterator of float32 batches, a pure function of ``(seed, split, step)``.

    Batch ``i`` (counting from 0) is drawn from ``default_rng([seed, split_id,
    start_step + i])``, so a run resumed at step ``s`` sees the batches an
    uninterrupted run would have seen. With ``steps_per_batch = k > 0`` each
    item stacks the batches of ``k`` consecutive steps into ``(k, batch_size, dim)``.
    ``rows`` keeps only those rows of each (global) batch: a process's share
    under data parallelism, so the global batch does not depend on the
    number of processes. ``labels=True``: pairs ``(points, int32 labels)`` from
    :meth:`sample_with_labels` (the same points).
    """
    split_id = {"train": 0, "eval": 1, "test": 2}[split]
    if labels:
      self.sample_with_labels(np.random.default_rng(0), 1)  # fails here for unlabelled data
    step = start_step
    while True:
      if steps_per_batch:
        parts = [self._batch(batch_size, seed, split_id, step + j, rows, labels)
                 for j in range(steps_per_batch)]
        yield tuple(map(np.stack, zip(*parts))) if labels else np.stack(parts)
        step += steps_per_batch
      else:
        yield self._batch(batch_size, seed, split_id, step, rows, labels)
        step += 1

  def _batch(self, batch_size, seed, split_id, step, rows=None, labels=False):
    rng = np.random.default_rng([seed, split_id, step])
    if labels:
      x, y = self.sample_with_labels(rng, batch_size)
      x, y = x.astype(np.float32), y.astype(np.int32)
      return (x, y) if rows is None else (x[rows], y[rows])
    batch = self.sample(rng, batch_size).astype(np.float32)
    return batch if rows is None else batch[rows]


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

  def entropy_mc(self, rng, n=200_000):
    """Monte-Carlo estimate of the differential entropy (nats) and its standard error."""
    lp = np.asarray(self.log_prob(jnp.asarray(self.sample(rng, n))))
    return float(-lp.mean()), float(lp.std() / np.sqrt(n))


@dataclasses.dataclass(frozen=True)
class SwissRoll(ToyDistribution):
  """2-D swiss roll (the spiral of scikit-learn's ``make_swiss_roll``), scaled to about [-2.5, 2.5]."""

  noise: float = 0.05
  dim: int = 2

  def sample(self, rng, n):
    t = 1.5 * np.pi * (1 + 2 * rng.random(n))
    x = np.stack([t * np.cos(t), t * np.sin(t)], axis=-1) / 5.0
    return x + self.noise * rng.standard_normal((n, 2))


@dataclasses.dataclass(frozen=True)
class TwoMoons(ToyDistribution):
  """Two interleaving half circles (as scikit-learn's ``make_moons``), centred at 0."""

  noise: float = 0.05
  dim: int = 2

  def sample(self, rng, n):
    upper = rng.random(n) < 0.5
    theta = np.pi * rng.random(n)
    x = np.where(upper, np.cos(theta), 1 - np.cos(theta))
    y = np.where(upper, np.sin(theta), 0.5 - np.sin(theta))
    pts = np.stack([x - 0.5, y - 0.25], axis=-1) * 1.5
    return pts + self.noise * rng.standard_normal((n, 2))


@dataclasses.dataclass(frozen=True)
class Checkerboard(ToyDistribution):
  """Uniform density on the dark squares of a 4x4 board over [-2, 2]^2."""

  dim: int = 2

  def sample(self, rng, n):
    x1 = rng.random(n) * 4 - 2
    x2 = rng.random(n) - rng.integers(0, 2, n) * 2
    x2 = x2 + np.floor(x1) % 2
    return np.stack([x1, x2], axis=-1)

  def log_prob(self, x):
    """Exact log-density: ``log(1/8)`` on the 8 dark unit squares, ``-inf`` elsewhere."""
    x = jnp.asarray(x)
    inside = jnp.all(jnp.abs(x) <= 2, axis=-1)
    dark = (jnp.floor(x[:, 0]) + jnp.floor(x[:, 1])) % 2 == 0
    return jnp.where(inside & dark, -jnp.log(8.0), -jnp.inf)


@dataclasses.dataclass(frozen=True)
class ConcentricRings(ToyDistribution):
  """Points on concentric circles of the given radii (each equally likely) plus noise."""

  radii: Sequence[float] = (0.5, 1.0, 1.5, 2.0)
  noise: float = 0.04
  dim: int = 2

  def sample(self, rng, n):
    r = np.asarray(self.radii)[rng.integers(0, len(self.radii), n)]
    theta = 2 * np.pi * rng.random(n)
    pts = r[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=-1)
    return pts + self.noise * rng.standard_normal((n, 2))
