"""Sample-quality metrics for vector data: kernel MMD, sliced Wasserstein and Frechet distance.

Each compares two sample sets ``x`` ``(n, D)`` and ``y`` ``(m, D)``. Written out
here because they are a few lines of ``jnp`` / numpy and the usual packages for them
(e.g. POT, MMD in torch-based libraries, pytorch-fid / clean-fid) would bring a second array
library; FID's Inception network is not usable here (no downloads), so for images the
features come from a classifier the project trains (:func:`score_sde_jax.classifier.get_feature_fn`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_BANDWIDTHS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def _sq_dists(a, b):
  return jnp.maximum(jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None, :] - 2 * a @ b.T, 0.0)


@jax.jit
def _mmd2(x, y, bandwidths):
  def kernel(d2):
    return jnp.sum(jnp.exp(-d2[None] / (2 * bandwidths[:, None, None] ** 2)), axis=0)

  n, m = x.shape[0], y.shape[0]
  kxx, kyy, kxy = kernel(_sq_dists(x, x)), kernel(_sq_dists(y, y)), kernel(_sq_dists(x, y))
  # Unbiased U-statistic: drop the diagonal terms of kxx and kyy.
  sxx = (jnp.sum(kxx) - jnp.trace(kxx)) / (n * (n - 1))
  syy = (jnp.sum(kyy) - jnp.trace(kyy)) / (m * (m - 1))
  return sxx + syy - 2 * jnp.mean(kxy)


def mmd(x, y, bandwidths=DEFAULT_BANDWIDTHS) -> float:
  """Unbiased squared MMD with a sum of Gaussian kernels of fixed ``bandwidths``.

  Fixed bandwidths (not the median heuristic) keep numbers comparable across
  runs and models. Can be slightly negative when the sets match.
  """
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  return float(_mmd2(x, y, jnp.asarray(bandwidths, jnp.float32)))


def sliced_wasserstein(x, y, n_projections: int = 256, seed: int = 0) -> float:
  """Sliced 2-Wasserstein distance: the root mean over random unit directions of the
  squared 1-D W2 distance between the projected sets (quantiles at common levels)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  dirs = np.random.default_rng(seed).standard_normal((x.shape[1], n_projections))
  dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
  px, py = np.sort(x @ dirs, axis=0), np.sort(y @ dirs, axis=0)
  levels = (np.arange(max(len(px), len(py))) + 0.5) / max(len(px), len(py))
  qx = np.quantile(px, levels, axis=0, method="inverted_cdf") if len(px) != len(levels) else px
  qy = np.quantile(py, levels, axis=0, method="inverted_cdf") if len(py) != len(levels) else py
  return float(np.sqrt(np.mean((qx - qy) ** 2)))


def share_outside(x, low, high) -> float:
  """The share of the values of ``x`` outside ``[low, high]`` (``low`` / ``high`` broadcast against
  one example, e.g. per coordinate); NaN and infinite values count as outside."""
  x = np.asarray(x, np.float64)
  inside = (x >= np.asarray(low)) & (x <= np.asarray(high))
  return float(1.0 - np.mean(inside))


def gaussian_stats(features):
  """``(mean (D,), covariance (D, D))`` of ``features`` ``(n, D)``, in float64 (``ddof=1``)."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f"features: expected an array (n >= 2, D), got shape {f.shape}")
  return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(c):
  w, v = np.linalg.eigh(c)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance_from_stats(mu1, cov1, mu2, cov2) -> float:
  """Squared 2-Wasserstein (Frechet) distance between ``N(mu1, cov1)`` and ``N(mu2, cov2)``:
  ``|mu1 - mu2|^2 + tr(cov1 + cov2 - 2 (cov1^1/2 cov2 cov1^1/2)^1/2)``.

  The trace of the cross term is taken from the eigenvalues of the symmetric
  ``cov1^1/2 cov2 cov1^1/2`` (similar to ``cov1 cov2``), so it is real and exact for the
  rank-deficient covariances of few samples, where FID's ``scipy.linalg.sqrtm(cov1 @ cov2)``
  needs an offset and drops imaginary parts.
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
  if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != mu1.shape * 2:
    raise ValueError(f"frechet_distance: means {mu1.shape} / {mu2.shape} and covariances "
                     f"{cov1.shape} / {cov2.shape} do not describe two Gaussians of one dimension")
  s1 = _psd_sqrt(cov1)
  cross = np.sqrt(np.clip(np.linalg.eigvalsh(s1 @ cov2 @ s1), 0.0, None)).sum()
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2.0 * cross)


def frechet_distance(x, y) -> float:
  """Frechet distance between Gaussians fitted to feature sets ``x`` ``(n, D)`` and
  ``y`` ``(m, D)`` (FID's formula on whatever features are given). Biased upwards by
  ``O(D / n)``: compare numbers only at equal ``n`` and ``m``."""
  return frechet_distance_from_stats(*gaussian_stats(x), *gaussian_stats(y))


def _polynomial_kernel(a, b):
  """KID's kernel ``(a . b / D + 1)^3`` (Binkowski et al. 2018), float64."""
  return (a @ b.T / a.shape[1] + 1.0) ** 3


def kid(x, y, *, subset_size: int = 1000, num_subsets: int = 100, seed: int = 0):
  """Kernel Inception Distance of feature sets ``x`` ``(n, D)`` and ``y`` ``(m, D)``: the
  unbiased estimate of the squared MMD with the cubic polynomial kernel, averaged over
  ``num_subsets`` random subsets of ``min(subset_size, n, m)`` rows of each (Binkowski et al.
  2018; TF-GAN's and clean-fid's defaults). Unbiased at any sample size, unlike FID.

  Returns ``(kid, standard_error)``: the mean over subsets, and the standard deviation of the
  subsets' estimates over ``sqrt(num_subsets)`` (for overlapping subsets, when ``n`` or ``m``
  is below ``subset_size * num_subsets``, a lower bound of the mean's error).
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
    raise ValueError(f"kid: feature sets of shapes {x.shape} and {y.shape}; expected (n, D) and "
                     f"(m, D) of one dimension D")
  m = min(int(subset_size), len(x), len(y))
  if m < 2:
    raise ValueError(f"kid: needs at least 2 examples in each set, got {len(x)} and {len(y)}")
  rng = np.random.default_rng(seed)
  estimates = []
  for _ in range(int(num_subsets)):
    a = x[rng.choice(len(x), m, replace=False)]
    b = y[rng.choice(len(y), m, replace=False)]
    kxx, kyy, kxy = _polynomial_kernel(a, a), _polynomial_kernel(b, b), _polynomial_kernel(a, b)
    off = m * (m - 1)
    estimates.append((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off
                     - 2.0 * kxy.mean())
  estimates = np.asarray(estimates)
  se = float(estimates.std(ddof=1) / np.sqrt(len(estimates))) if len(estimates) > 1 else 0.0
  return float(estimates.mean()), se
