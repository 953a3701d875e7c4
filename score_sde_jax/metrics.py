"""Sample-quality metrics for vector data: kernel MMD and sliced Wasserstein distance.

Both compare two sample sets ``x`` ``(n, D)`` and ``y`` ``(m, D)``. Written out
here because they are a few lines of ``jnp`` and the usual packages for them
(e.g. POT, or MMD in torch-based libraries) would bring a second array library.
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
