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

  is_image = True

  @property
  def example_shape(self) -> tuple:
    return tuple(self.shape)

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
      images = _preprocess_arrays(_check_levels(images, 256, path), preprocess, image_size, path)
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


def _preprocess_arrays(images, preprocess, image_size, name):
  from PIL import Image
  out = []
  for i, levels in enumerate(images):
    try:
      img = _apply(preprocess, Image.fromarray(levels[..., 0] if levels.shape[-1] == 1 else levels),
                   image_size)
    except ValueError as e:
      raise DataError(f"{name}: image {i}: {e}") from None
    out.append(np.asarray(img, np.uint8).reshape(image_size, image_size, levels.shape[-1]))
  return np.stack(out)


def _checked_shape(data, name, image_size, num_channels):
  expected = (image_size, image_size, num_channels)
  if data.shape != expected:
    raise DataError(f"{name}: images of shape {data.shape}, expected {expected} "
                    f"(image_size, image_size, num_channels)")
  return data


def digits(**kwargs) -> ImageArrays:
  """scikit-learn's 8x8 handwritten digits (1797 images, 17 grey levels 0..16), shipped with it."""
  from sklearn.datasets import load_digits  # imported here: only this data set needs scikit-learn
  data = load_digits()
  kwargs.setdefault("num_levels", 17)
  return ImageArrays(data.images.astype(np.uint8)[..., None], labels=data.target, name="digits",
                     **kwargs)


class _NumpyUnpickler(__import__("pickle").Unpickler):
  """CIFAR-10 batches hold dicts of bytes, lists and numpy arrays: allow only those globals."""

  _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
              ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
              ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

  def find_class(self, module, name):
    if (module, name) in self._ALLOWED:
      return super().find_class(module, name)
    raise DataError(f"refusing to load global {module}.{name}: a CIFAR-10 batch holds only "
                    f"numpy arrays, bytes and lists (a crafted or foreign pickle)")


def _cifar_batch(raw: bytes, name: str):
  import io
  try:
    batch = _NumpyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64) if b"labels" in batch else None
  except DataError as e:  # the unpickler's refusal: name the file it came from
    raise DataError(f"{name}: {e}") from None
  except Exception as e:  # noqa: BLE001
    raise DataError(f"{name}: unreadable CIFAR-10 batch ({e})") from None
  if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
    raise DataError(f"{name}: data of shape {data.shape}, expected (N, 3072)")
  if labels is not None and labels.shape != (len(data),):
    labels = None  # not one label per image: treated as unlabelled
  return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels  # CHW rows -> NHWC


CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST = "test_batch"


def cifar10(path: str, **kwargs) -> ImageArrays:
  """CIFAR-10 from the python-pickle archive ``cifar-10-python.tar.gz`` or its extracted folder.

  ``path`` is the archive, the ``cifar-10-batches-py`` folder, or a folder holding either.
  The official test batch is the held-out split. Nothing is downloaded.
  """
  import tarfile
  if not os.path.exists(path):
    raise DataError(f"{path}: no such file or folder (give cifar-10-python.tar.gz or its "
                    f"extracted cifar-10-batches-py folder)")
  if os.path.isdir(path):
    for candidate in (path, os.path.join(path, "cifar-10-batches-py")):
      if os.path.isfile(os.path.join(candidate, CIFAR_TEST)):
        def read(n, folder=candidate):
          p = os.path.join(folder, n)
          if not os.path.isfile(p):
            raise DataError(f"{p}: missing CIFAR-10 batch")
          with open(p, "rb") as f:
            return _cifar_batch(f.read(), p)
        break
    else:
      archive = os.path.join(path, "cifar-10-python.tar.gz")
      if os.path.isfile(archive):
        return cifar10(archive, **kwargs)
      raise DataError(f"{path}: no {CIFAR_TEST} here or in cifar-10-batches-py/")
    train, test = [read(n) for n in CIFAR_TRAIN], read(CIFAR_TEST)
  else:
    try:
      with tarfile.open(path) as tar:
        members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
        def read(n):
          if n not in members:
            raise DataError(f"{path}: archive has no {n}")
          return _cifar_batch(tar.extractfile(members[n]).read(), f"{path}:{n}")
        train, test = [read(n) for n in CIFAR_TRAIN], read(CIFAR_TEST)
    except (tarfile.TarError, OSError, EOFError) as e:
      raise DataError(f"{path}: unreadable archive ({e})") from None
  labelled = all(lab is not None for _, lab in train + [test])
  return ImageArrays(np.concatenate([im for im, _ in train]), test_images=test[0], name=path,
                     labels=np.concatenate([lab for _, lab in train]) if labelled else None,
                     test_labels=test[1] if labelled else None, **kwargs)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


# --- Preprocessing: the original's resize_op per data set (datasets.py), on PIL images ------------
# TensorFlow's antialiased resize (a triangle / Keys cubic kernel stretched by the scale factor when
# shrinking) is what PIL's BILINEAR / BICUBIC resize does; the result is rounded to 8-bit levels
# here (the original kept floats), so that bits/dim stays defined.

def central_crop(img, size: int):
  """The ``size`` x ``size`` centre: top ``(h - size) // 2``, left ``(w - size) // 2``."""
  w, h = img.size
  if min(w, h) < size:
    raise ValueError(f"{w}x{h} is smaller than the {size}x{size} centre crop")
  top, left = (h - size) // 2, (w - size) // 2
  return img.crop((left, top, left + size, top + size))


def resize_small(img, size: int):
  """Shorter side to ``size`` (antialiased bilinear), aspect ratio kept."""
  from PIL import Image
  w, h = img.size
  ratio = size / min(w, h)
  return img.resize((round(w * ratio), round(h * ratio)), Image.BILINEAR)


def crop_resize(img, size: int):
  """Largest centred square, then antialiased bicubic resize to ``size`` (LSUN at 256)."""
  from PIL import Image
  w, h = img.size
  img = central_crop(img, min(w, h))
  return img if img.size == (size, size) else img.resize((size, size), Image.BICUBIC)


def celeba_preprocess(img, size: int):
  """CelebA: the centre 140 x 140 of the aligned 178 x 218 faces, shorter side resized to ``size``."""
  return resize_small(central_crop(img, 140), size)


def lsun_preprocess(img, size: int):
  """LSUN: at 128, shorter side to 128 then the centre; otherwise :func:`crop_resize`."""
  if size == 128:
    return central_crop(resize_small(img, size), size)
  return crop_resize(img, size)


def _apply(preprocess, img, size: int):
  """Images already ``size`` x ``size`` are taken as they are (already preprocessed)."""
  return img if img.size == (size, size) else preprocess(img, size)


class ImageFiles:
  """Image files decoded, converted and preprocessed when a batch needs them, so a data set
  of any size (LSUN's 3 million bedrooms) costs only its file list in memory.

  Indexing with an integer array or a slice returns ``uint8`` levels ``(n, H, W, C)``;
  files are decoded by a few threads (PIL releases the GIL while decoding).
  """

  ndim = 4
  dtype = np.dtype(np.uint8)

  def __init__(self, files, *, image_size: int, num_channels: int, preprocess=crop_resize,
               threads: int | None = None):
    if num_channels not in (1, 3):
      raise DataError(f"num_channels={num_channels}; image files give 1 (grey) or 3 (RGB)")
    self.files = list(files)
    self.image_size, self.num_channels = image_size, num_channels
    self.preprocess = preprocess
    self.threads = threads or min(8, os.cpu_count() or 1)
    self._pool = None

  def __len__(self):
    return len(self.files)

  @property
  def shape(self):
    return (len(self.files), self.image_size, self.image_size, self.num_channels)

  def subset(self, idx) -> "ImageFiles":
    return ImageFiles([self.files[i] for i in np.asarray(idx)], image_size=self.image_size,
                      num_channels=self.num_channels, preprocess=self.preprocess,
                      threads=self.threads)

  def load(self, i: int) -> np.ndarray:
    from PIL import Image
    f = self.files[i]
    try:
      with Image.open(f) as img:
        img = _apply(self.preprocess, img.convert("L" if self.num_channels == 1 else "RGB"),
                     self.image_size)
        levels = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError) as e:
      raise DataError(f"{f}: unreadable image ({e})") from None
    expected = (self.image_size, self.image_size)
    if levels.shape[:2] != expected:
      raise DataError(f"{f}: {levels.shape[1]}x{levels.shape[0]} after preprocessing, expected "
                      f"{expected[1]}x{expected[0]}")
    return levels.reshape(self.shape[1:])

  def __getitem__(self, idx):
    if isinstance(idx, slice):
      idx = range(*idx.indices(len(self.files)))
    idx = np.asarray(idx)
    if idx.ndim == 0:
      return self.load(int(idx))
    if len(idx) < 2 or self.threads == 1:
      images = [self.load(int(i)) for i in idx]
    else:
      if self._pool is None:
        from concurrent.futures import ThreadPoolExecutor
        self._pool = ThreadPoolExecutor(self.threads)
      images = list(self._pool.map(self.load, idx.tolist()))
    return np.stack(images) if images else np.zeros((0,) + self.shape[1:], np.uint8)

  def __array__(self, dtype=None, copy=None):
    return self[:] if dtype is None else self[:].astype(dtype)


def _take(images, idx):
  return images.subset(idx) if isinstance(images, ImageFiles) else images[idx]


def _image_files(path: str) -> list:
  if not os.path.isdir(path):
    raise DataError(f"{path}: no such folder")
  files = sorted(os.path.join(root, f) for root, _, names in os.walk(path) for f in names
                 if f.lower().endswith(IMAGE_SUFFIXES))
  if not files:
    raise DataError(f"{path}: no {'/'.join(IMAGE_SUFFIXES)} files")
  return files


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
  files = ImageFiles(_image_files(path), image_size=image_size, num_channels=num_channels,
                     preprocess=preprocess)
  files.load(0)
  test = None
  if eval_path:
    test = ImageFiles(_image_files(eval_path), image_size=image_size, num_channels=num_channels,
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
