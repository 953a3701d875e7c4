"""Low-dimensional toy distributions: the base class (batches, held-out data, entropy) and the
2-D shapes. Every distribution draws samples from a ``numpy.random.Generator`` (host-side data,
deterministic from a seed). The Gaussian mixture, with its exact marginals under any SDE, is in
:mod:`mixture`.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import jax.numpy as jnp
import numpy as np


class ToyDistribution:
  """Base class: ``dim`` and ``sample(rng, n)``; batches come from :meth:`batches`.

  What a distribution can do beyond sampling is declared, not probed: ``log_prob`` (its exact
  density), ``marginal_score`` / ``marginal_log_posterior`` (its exact time-``t`` score and
  component posterior under an SDE) are ``None`` where it has none.
  """

  dim: int
  kind = "points"     # vector data, in their natural range (images: "image")
  num_classes = None  # classes of sample_with_labels (GaussianMixture: its components)
  num_levels = None   # continuous values (images: the grey levels per channel)
  log_prob = None
  marginal_score = None
  marginal_log_posterior = None

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

  def held_out_data(self, n: int, seed: int) -> np.ndarray:
    """``n`` test examples in data space (float32), as the model's samples are."""
    return self.held_out(n, seed)

  def clip(self, x):
    """Samples limited to the data's range (points have none)."""
    return x

  def entropy_mc(self, rng, n=200_000):
    """Monte-Carlo estimate of the differential entropy (nats) and its standard error, from
    the exact density (:attr:`log_prob`)."""
    lp = np.asarray(self.log_prob(jnp.asarray(self.sample(rng, n))))
    return float(-lp.mean()), float(lp.std() / np.sqrt(n))

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
