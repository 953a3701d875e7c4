"""Image data sets held as integer levels: NHWC float batches in [0, 1].

:class:`ImageArrays` holds them, from an ``.npz`` file or a folder of images a user gives
(:func:`from_path`; nothing is downloaded), or scikit-learn's digits. Integer levels are kept so
that bits/dim is well defined. Batches are a pure function of ``(seed, split, step)``, as for
toy data, so resumed runs see the same batches. CIFAR-10's archive: :mod:`cifar10`; image files
and the paper's preprocessing: :mod:`files`.
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from score_sde_jax.data.errors import DataError
from score_sde_jax.data.files import (ImageFiles, celeba_preprocess, crop_resize, image_files,
                                      lsun_preprocess, preprocess_arrays)


def _check_levels(images, num_levels, name):
  if isinstance(images, ImageFiles):
    return images  # decoded 8-bit on demand; checked file by file as they are read
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4:
    raise DataError(f"{name}: shape {images.shape}, expected (N, H, W, C) or (N, H, W)")
  if not np.issubdtype(images.dtype, np.integer):
    raise DataError(f"{name}: dtype {images.dtype}, expected integer levels 0..{num_levels - 1}")
  if images.size and (images.min() < 0 or images.max() >= num_levels):
    raise DataError(f"{name}: values in [{images.min()}, {images.max()}], expected 0..{num_levels - 1}")
  return images


class ImageArrays:
  """Integer images ``(N, H, W, C)`` with a deterministic held-out split.

  Args:
    images: integer array ``(N, H, W, C)`` (``(N, H, W)`` is read as one channel).
    labels: optional class labels ``(N,)`` (integers from 0), for noise-conditional classifiers.
    num_levels: grey levels per channel (256 for 8-bit data).
    eval_fraction: share of the images held out (the ``test`` / ``eval`` split).
    random_flip: flip training images horizontally with probability 1/2.
    uniform_dequantization: training batches are ``(k + U) / K`` instead of ``k / (K - 1)``.
  """

  def __init__(self, images, *, num_levels: int = 256, eval_fraction: float = 0.1,
               random_flip: bool = False, uniform_dequantization: bool = False, name: str = "images",
               test_images=None, labels=None, test_labels=None):
    images = _check_levels(images, num_levels, name)
    labels = _check_labels(labels, len(images), name)
    if test_images is not None:  # an official test split (CIFAR-10)
      self.train_levels = images
      self.test_levels = _check_levels(test_images, num_levels, name + " (test)")
      test_labels = _check_labels(test_labels, len(self.test_levels), name + " (test)")
      if (labels is None) != (test_labels is None):
        raise DataError(f"{name}: class labels for one split only")
      self.train_labels, self.test_labels = labels, test_labels
    else:
      n_eval = max(1, int(round(len(images) * eval_fraction)))
      if n_eval >= len(images):
        raise DataError(f"{name}: {len(images)} images are too few to hold out {n_eval}")
      order = np.random.default_rng(0).permutation(len(images))  # fixed: the split never changes
      self.test_levels = _take(images, order[:n_eval])
      self.train_levels = _take(images, order[n_eval:])
      self.test_labels = None if labels is None else labels[order[:n_eval]]
      self.train_labels = None if labels is None else labels[order[n_eval:]]
    self.num_levels = num_levels
    self.random_flip = random_flip
    self.uniform_dequantization = uniform_dequantization
    self.shape = images.shape[1:]
    self.name = name

  kind = "image"
  class_names = None            # names of the labels 0, 1, ... where the data set has them
  log_prob = None               # no exact density, score or class posterior
  marginal_score = None
  marginal_log_posterior = None

  @property
  def example_shape(self) -> tuple:
    return tuple(self.shape)

  def held_out_data(self, n: int, seed: int = 0) -> np.ndarray:
    """The first ``n`` held-out images in data space, floats in [0, 1]."""
    return self.to_unit(self.held_out(n, seed))

  def clip(self, x):
    """Samples limited to the data's range, [0, 1]."""
    return np.clip(x, 0.0, 1.0)

  @property
  def num_classes(self) -> int | None:
    """Number of classes of the labels (the largest label + 1), or ``None`` without labels."""
    if self.train_labels is None:
      return None
    return int(max(self.train_labels.max(initial=0), self.test_labels.max(initial=0))) + 1

  def held_out(self, n: int, seed: int = 0) -> np.ndarray:
    """The first ``n`` held-out images as integer levels (the split is fixed; ``seed`` is unused)."""
    return self.test_levels[:n]

  def held_out_labels(self, n: int, seed: int = 0) -> np.ndarray:
    """The class labels of :meth:`held_out` ``(n, seed)``."""
    self._require_labels()
    return self.test_labels[:n]

  def _require_labels(self):
    if self.train_labels is None:
      raise DataError(f"{self.name}: has no class labels (digits, CIFAR-10 and npz files with a "
                      f"'labels' array have them)")

  @classmethod
  def from_npz(cls, path: str, *, image_size: int, num_channels: int, key: str | None = None,
               preprocess=None, **kwargs) -> "ImageArrays":
    """Reads ``path`` (the array under ``key``, or its only array besides ``labels``) and checks
    the image shape. An array ``labels`` ``(N,)`` holds the images' classes.

    With ``preprocess`` (a function of a PIL image and ``image_size``), images that are not
    ``image_size`` square go through it first."""
    if not os.path.isfile(path):
      raise DataError(f"{path}: no such file")
    with open(path, "rb") as f:
      magic = f.read(4)
    if magic != b"PK\x03\x04":   # np.load would try it as a pickle and suggest allow_pickle
      raise DataError(f"{path}: not an npz file (an npz is a zip archive of .npy arrays, as "
                      f"numpy.savez writes)")
    try:
      with np.load(path) as f:
        names = [n for n in f.keys() if n != "labels"]  # 'labels': class labels, if any
        if key is None and len(names) != 1:
          raise DataError(f"{path}: holds arrays {names}; name the one with the images "
                          "with config.data.npz_key (key= from Python)")
        images = f[key or names[0]]
        labels = f["labels"] if "labels" in f.keys() and key != "labels" else None
    except DataError:
      raise
    except Exception as e:  # noqa: BLE001 - any failure to read is one clear error
      raise DataError(f"{path}: unreadable npz file ({e})") from None
    if preprocess is not None and images.ndim in (3, 4) and images.shape[1:3] != (image_size,) * 2:
      images = preprocess_arrays(_check_levels(images, 256, path), preprocess, image_size, path)
    return _checked_shape(cls(images, name=path, labels=labels, **kwargs), path, image_size,
                          num_channels)

  def to_unit(self, levels, rng=None):
    """Levels to floats in [0, 1]: ``k / (K - 1)``, or ``(k + U) / K`` when dequantizing."""
    if rng is not None and self.uniform_dequantization:
      return ((levels + rng.random(levels.shape)) / self.num_levels).astype(np.float32)
    return (levels / (self.num_levels - 1)).astype(np.float32)

  def _train_batch(self, batch_size, seed, step, rows=None, labels=False):
    rng = np.random.default_rng([seed, 0, step])
    idx = rng.choice(len(self.train_levels), size=batch_size,
                     replace=batch_size > len(self.train_levels))
    flip = rng.random(batch_size) < 0.5 if self.random_flip else None
    noise = (rng.random((batch_size,) + self.shape) if self.uniform_dequantization else None)
    if rows is not None:
      idx = idx[rows]
      flip = None if flip is None else flip[rows]
      noise = None if noise is None else noise[rows]
    levels = self.train_levels[idx]
    if flip is not None:
      levels = np.where(flip[:, None, None, None], levels[:, :, ::-1], levels)
    if noise is not None:
      x = ((levels + noise) / self.num_levels).astype(np.float32)
    else:
      x = self.to_unit(levels)
    return (x, self.train_labels[idx].astype(np.int32)) if labels else x

  def batches(self, batch_size: int, seed: int, start_step: int = 0, *, split: str = "train",
              steps_per_batch: int = 0, rows: slice | None = None,
              labels: bool = False) -> Iterator[np.ndarray]:
    """Infinite iterator of ``(batch_size, H, W, C)`` float32 batches (``labels=True``: pairs
    ``(images, int32 labels (batch_size,))``; the images are the same).

    ``train``: random images (and flips) drawn from ``default_rng([seed, 0, step])``.
    ``eval`` / ``test``: the held-out images in order, cycling, without noise.
    ``rows`` keeps only those rows of each global batch (a process's share);
    the choice of images is made for the whole batch first, so it does not
    depend on the number of processes, and only the kept rows are gathered.
    """
    if labels:
      self._require_labels()
    if split == "train":
      step = start_step
      while True:
        if steps_per_batch:
          yield _stack([self._train_batch(batch_size, seed, step + j, rows, labels)
                        for j in range(steps_per_batch)])
          step += steps_per_batch
        else:
          yield self._train_batch(batch_size, seed, step, rows, labels)
          step += 1
    else:
      n = len(self.test_levels)
      i = 0
      while True:
        idx = (i + np.arange(batch_size)) % n
        idx = idx if rows is None else idx[rows]
        x = self.to_unit(self.test_levels[idx])
        yield (x, self.test_labels[idx].astype(np.int32)) if labels else x
        i = (i + batch_size) % n


def _stack(batches):
  """Stacks batches, or ``(x, labels)`` pairs field by field."""
  if isinstance(batches[0], tuple):
    return tuple(np.stack(parts) for parts in zip(*batches))
  return np.stack(batches)


def _check_labels(labels, n, name):
  if labels is None:
    return None
  labels = np.asarray(labels)
  if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f"{name}: labels of shape {labels.shape} and dtype {labels.dtype}, expected "
                    f"({n},) integers (one class per image)")
  if n and labels.min() < 0:
    raise DataError(f"{name}: negative class label {labels.min()}")
  return labels


def _checked_shape(data, name, image_size, num_channels):
  expected = (image_size, image_size, num_channels)
  if data.shape != expected:
    raise DataError(f"{name}: images of shape {data.shape}, expected {expected} "
                    f"(image_size, image_size, num_channels)")
  return data


def _take(images, idx):
  return images.subset(idx) if isinstance(images, ImageFiles) else images[idx]


def digits(**kwargs) -> ImageArrays:
  """scikit-learn's 8x8 handwritten digits (1797 images, 17 grey levels 0..16), shipped with it."""
  from sklearn.datasets import load_digits  # imported here: only this data set needs scikit-learn
  data = load_digits()
  kwargs.setdefault("num_levels", 17)
  return ImageArrays(data.images.astype(np.uint8)[..., None], labels=data.target, name="digits",
                     **kwargs)


def image_folder(path: str, *, image_size: int, num_channels: int, preprocess=crop_resize,
                 eval_path: str = "", **kwargs) -> ImageArrays:
  """PNG / JPEG / WebP files under ``path`` (recursively, sorted), read when a batch needs them.

  Each image is converted to grey (1 channel) or RGB (3) and, unless it is already
  ``image_size`` square, preprocessed (default: centre square, bicubic resize). The held-out
  split is the files under ``eval_path`` if given, else a fixed share (``eval_fraction``).
  The first image is read at once, so a wrong folder fails here rather than mid-training.
  """
  if num_channels not in (1, 3):
    raise DataError(f"{path}: num_channels={num_channels}; image folders give 1 (grey) or 3 (RGB)")
  files = ImageFiles(image_files(path), image_size=image_size, num_channels=num_channels,
                     preprocess=preprocess)
  files.load(0)
  test = None
  if eval_path:
    test = ImageFiles(image_files(eval_path), image_size=image_size, num_channels=num_channels,
                      preprocess=preprocess)
    test.load(0)
  return ImageArrays(files, test_images=test, name=path, **kwargs)


def from_path(path: str, *, image_size: int, num_channels: int, preprocess=crop_resize,
              eval_path: str = "", npz_key: str | None = None, **kwargs) -> ImageArrays:
  """A folder of images (read lazily) or an ``.npz`` of 8-bit images (preprocessed if they
  are not yet ``image_size`` square)."""
  if path.endswith(".npz"):
    if eval_path:
      raise DataError(f"{path}: eval_path is for image folders; an npz file holds out "
                      f"eval_fraction of its images")
    return ImageArrays.from_npz(path, image_size=image_size, num_channels=num_channels,
                                key=npz_key, preprocess=preprocess, **kwargs)
  return image_folder(path, image_size=image_size, num_channels=num_channels,
                      preprocess=preprocess, eval_path=eval_path, **kwargs)


# The paper's data sets, each read from a path the user gives, with the original's preprocessing.
PREPROCESS = {
    "celeba": celeba_preprocess,    # img_align_celeba/*.jpg (178 x 218)
    "lsun": lsun_preprocess,        # images exported from the LSUN lmdb (e.g. *.webp)
    "celebahq": crop_resize,        # already square at the config's size; resized if not
    "ffhq": crop_resize,
    "image_folder": crop_resize,
}
