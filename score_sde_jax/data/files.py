"""Image files decoded when a batch needs them, and the original's preprocessing per data set
(centre crops and antialiased resizes on PIL images)."""

from __future__ import annotations

import os

import numpy as np

from score_sde_jax.data.errors import DataError

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


def apply_preprocess(preprocess, img, size: int):
  """Images already ``size`` x ``size`` are taken as they are (already preprocessed)."""
  return img if img.size == (size, size) else preprocess(img, size)


def as_8bit(img):
  """A 16- or 32-bit grey image as 8-bit levels ``round(v / 257)`` (PIL's ``convert`` clips such
  images to 0 and 255); other images as they are."""
  from PIL import Image
  if img.mode not in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
    return img
  a = np.asarray(img, dtype=np.float64)
  if img.mode != "I" or a.max(initial=0) > 255:   # "I" holding 8-bit values stays as it is
    a = a / 257.0
  return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L")


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
        img = apply_preprocess(self.preprocess,
                               as_8bit(img).convert("L" if self.num_channels == 1 else "RGB"),
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


def image_files(path: str) -> list:
  if not os.path.isdir(path):
    raise DataError(f"{path}: no such folder")
  files = sorted(os.path.join(root, f) for root, _, names in os.walk(path) for f in names
                 if f.lower().endswith(IMAGE_SUFFIXES))
  if not files:
    raise DataError(f"{path}: no {'/'.join(IMAGE_SUFFIXES)} files")
  return files


def preprocess_arrays(images, preprocess, image_size, name):
  from PIL import Image
  out = []
  for i, levels in enumerate(images):
    try:
      img = apply_preprocess(
          preprocess, Image.fromarray(levels[..., 0] if levels.shape[-1] == 1 else levels),
          image_size)
    except ValueError as e:
      raise DataError(f"{name}: image {i}: {e}") from None
    out.append(np.asarray(img, np.uint8).reshape(image_size, image_size, levels.shape[-1]))
  return np.stack(out)
