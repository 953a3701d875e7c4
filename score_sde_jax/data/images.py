"""Image data sets held as integer arrays: NHWC float batches in [0, 1].

:class:`ImageArrays` reads an ``.npz`` file a user gives (nothing is
downloaded). Integer levels are kept so that bits/dim is well defined.
Batches are a pure function of ``(seed, split, step)``, as for toy data, so
resumed runs see the same batches.
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np


class DataError(ValueError):
  """A data file is missing, unreadable or of the wrong shape."""


class ImageArrays:
  """Integer images ``(N, H, W, C)`` with a deterministic held-out split.

  Args:
    images: integer array ``(N, H, W, C)`` (``(N, H, W)`` is read as one channel).
    num_levels: grey levels per channel (256 for 8-bit data).
    eval_fraction: share of the images held out (the ``test`` / ``eval`` split).
    random_flip: flip training images horizontally with probability 1/2.
    uniform_dequantization: training batches are ``(k + U) / K`` instead of ``k / (K - 1)``.
  """

  def __init__(self, images, *, num_levels: int = 256, eval_fraction: float = 0.1,
               random_flip: bool = False, uniform_dequantization: bool = False, name: str = "images"):
    images = np.asarray(images)
    if images.ndim == 3:
      images = images[..., None]
    if images.ndim != 4:
      raise DataError(f"{name}: shape {images.shape}, expected (N, H, W, C) or (N, H, W)")
    if not np.issubdtype(images.dtype, np.integer):
      raise DataError(f"{name}: dtype {images.dtype}, expected integer levels 0..{num_levels - 1}")
    if images.min() < 0 or images.max() >= num_levels:
      raise DataError(f"{name}: values in [{images.min()}, {images.max()}], expected 0..{num_levels - 1}")
    n_eval = max(1, int(round(len(images) * eval_fraction)))
    if n_eval >= len(images):
      raise DataError(f"{name}: {len(images)} images are too few to hold out {n_eval}")
    order = np.random.default_rng(0).permutation(len(images))  # fixed: the split never changes
    self.test_levels = images[order[:n_eval]]
    self.train_levels = images[order[n_eval:]]
    self.num_levels = num_levels
    self.random_flip = random_flip
    self.uniform_dequantization = uniform_dequantization
    self.shape = images.shape[1:]

  @classmethod
  def from_npz(cls, path: str, *, image_size: int, num_channels: int, key: str | None = None,
               **kwargs) -> "ImageArrays":
    """Reads ``path`` (the array under ``key``, or its only array) and checks the image shape."""
    if not os.path.isfile(path):
      raise DataError(f"{path}: no such file (data.path)")
    try:
      with np.load(path) as f:
        names = list(f.keys())
        if key is None and len(names) != 1:
          raise DataError(f"{path}: holds {names}; set data.npz_key to the images' name")
        images = f[key or names[0]]
    except DataError:
      raise
    except Exception as e:  # noqa: BLE001 - any failure to read is one clear error
      raise DataError(f"{path}: unreadable npz file ({e})") from None
    data = cls(images, name=path, **kwargs)
    expected = (image_size, image_size, num_channels)
    if data.shape != expected:
      raise DataError(f"{path}: images of shape {data.shape}, the config expects {expected} "
                      f"(data.image_size, data.num_channels)")
    return data

  def to_unit(self, levels, rng=None):
    """Levels to floats in [0, 1]: ``k / (K - 1)``, or ``(k + U) / K`` when dequantizing."""
    if rng is not None and self.uniform_dequantization:
      return ((levels + rng.random(levels.shape)) / self.num_levels).astype(np.float32)
    return (levels / (self.num_levels - 1)).astype(np.float32)

  def _train_batch(self, batch_size, seed, step):
    rng = np.random.default_rng([seed, 0, step])
    idx = rng.choice(len(self.train_levels), size=batch_size,
                     replace=batch_size > len(self.train_levels))
    levels = self.train_levels[idx]
    if self.random_flip:
      flip = rng.random(batch_size) < 0.5
      levels = np.where(flip[:, None, None, None], levels[:, :, ::-1], levels)
    return self.to_unit(levels, rng)

  def batches(self, batch_size: int, seed: int, start_step: int = 0, *, split: str = "train",
              steps_per_batch: int = 0) -> Iterator[np.ndarray]:
    """Infinite iterator of ``(batch_size, H, W, C)`` float32 batches.

    ``train``: random images (and flips) drawn from ``default_rng([seed, 0, step])``.
    ``eval`` / ``test``: the held-out images in order, cycling, without noise.
    """
    if split == "train":
      step = start_step
      while True:
        if steps_per_batch:
          yield np.stack([self._train_batch(batch_size, seed, step + j)
                          for j in range(steps_per_batch)])
          step += steps_per_batch
        else:
          yield self._train_batch(batch_size, seed, step)
          step += 1
    else:
      n = len(self.test_levels)
      i = 0
      while True:
        idx = (i + np.arange(batch_size)) % n
        yield self.to_unit(self.test_levels[idx])
        i = (i + batch_size) % n
