"""MNIST-format (idx) files: MNIST, Fashion-MNIST, KMNIST and EMNIST ship their images and labels
in them (``train-images-idx3-ubyte[.gz]``, ...). Read with numpy; nothing is downloaded.

The format (LeCun's): two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
0x0D float32, 0x0E float64), the number of dimensions, each dimension as a big-endian uint32,
then the values, big-endian, in C order.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from score_sde_jax.data.errors import DataError
from score_sde_jax.data.images import ImageArrays

DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
          0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

# Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist).
FASHION_MNIST_PATH = "/usr/share/datasets/fashion-mnist"

# Fashion-MNIST's labels 0-9 (its README).
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")

SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: str) -> np.ndarray:
  """The array an idx file holds (gzip-compressed or not, told by its first bytes), in native
  byte order. A file that is not idx, or is cut short, is one :class:`DataError`."""
  try:
    with open(path, "rb") as f:
      raw = f.read()
    if raw[:2] == b"\x1f\x8b":
      raw = gzip.decompress(raw)
  except FileNotFoundError:
    raise DataError(f"{path}: no such file") from None
  except (OSError, EOFError, gzip.BadGzipFile) as e:
    raise DataError(f"{path}: unreadable gzip file ({e}); it may be cut short") from None
  if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in DTYPES or not 1 <= raw[3] <= 4:
    raise DataError(f"{path}: not an idx file (header {raw[:4].hex() or 'empty'}; expected "
                    f"0000, a type code in {sorted(hex(c) for c in DTYPES)}, 1-4 dimensions)")
  ndim, dtype = raw[3], DTYPES[raw[2]]
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise DataError(f"{path}: idx header cut short ({len(raw)} bytes, {header} needed)")
  shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
  expected = int(np.prod(shape)) * dtype.itemsize
  if len(raw) - header != expected:
    raise DataError(f"{path}: {len(raw) - header} bytes of values, the header's shape {shape} "
                    f"needs {expected} ({'cut short' if len(raw) - header < expected else 'extra bytes'})")
  return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(folder: str, stem: str) -> str:
  """``stem`` in ``folder``, compressed or not (also the ``train-images.idx3-ubyte`` spelling)."""
  dotted = stem.replace("-idx", ".idx")
  for name in (stem + ".gz", stem, dotted + ".gz", dotted):
    if os.path.isfile(os.path.join(folder, name)):
      return os.path.join(folder, name)
  raise DataError(f"{folder}: no {stem}[.gz] (an MNIST-format folder holds train-images-idx3-"
                  f"ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-"
                  f"ubyte, each gzipped or not)")


def read_split(folder: str, split: str):
  """``(images (N, 28, 28) uint8, labels (N,) int64)`` of ``split`` (``train`` / ``test``)."""
  image_file, label_file = (_find(folder, stem) for stem in SPLITS[split])
  images, labels = read_idx(image_file), read_idx(label_file)
  if images.ndim != 3 or images.dtype != np.uint8:
    raise DataError(f"{image_file}: {images.dtype} values of shape {images.shape}; expected "
                    f"uint8 images (N, height, width)")
  if labels.ndim != 1 or len(labels) != len(images) or labels.dtype != np.uint8:
    raise DataError(f"{label_file}: {labels.dtype} labels of shape {labels.shape}; expected "
                    f"{len(images)} uint8 labels, one per image of {image_file}")
  return images, labels.astype(np.int64)


def mnist_like(path: str, *, image_size: int = 28, name: str = "mnist", **kwargs) -> ImageArrays:
  """An MNIST-format data set from the folder ``path``: its published train / test split, its
  labels, 256 grey levels. ``image_size``: the files' size (28), or 4 more (32 from 28), padded
  with 2 background pixels (0) on each side, so that networks that halve the size three times
  (the paper's CIFAR-10 layout) apply."""
  if not os.path.isdir(path):
    raise DataError(f"{path}: no such folder (give the folder of the four idx files"
                    f"{'; apt-get install dataset-fashion-mnist puts them in ' + FASHION_MNIST_PATH if 'fashion' in name else ''})")
  train, train_labels = read_split(path, "train")
  test, test_labels = read_split(path, "test")
  size = train.shape[1]
  if train.shape[1:] != test.shape[1:] or train.shape[1] != train.shape[2]:
    raise DataError(f"{path}: train images {train.shape[1:]} and test images {test.shape[1:]}; "
                    f"expected square images of one size")
  if image_size not in (size, size + 4):
    raise DataError(f"image_size={image_size}: the files hold {size}x{size} images; use {size} "
                    f"(as they are) or {size + 4} (padded with 2 background pixels each side)")
  if image_size == size + 4:
    pad = ((0, 0), (2, 2), (2, 2))
    train, test = np.pad(train, pad), np.pad(test, pad)
  return ImageArrays(train[..., None], labels=train_labels, test_images=test[..., None],
                     test_labels=test_labels, name=name, **kwargs)


def fashion_mnist(path: str = "", **kwargs) -> ImageArrays:
  """Fashion-MNIST (Xiao et al. 2017; 60,000 train and 10,000 test images of 10 kinds of clothing,
  MIT licence) from ``path``, by default Debian's package folder :data:`FASHION_MNIST_PATH`."""
  if not path:
    if not os.path.isdir(FASHION_MNIST_PATH):
      raise DataError(f"data.path='': Fashion-MNIST is read from {FASHION_MNIST_PATH} (apt-get "
                      f"install dataset-fashion-mnist) or from the folder data.path names; "
                      f"nothing is downloaded")
    path = FASHION_MNIST_PATH
  data = mnist_like(path, name="fashion_mnist", **kwargs)
  data.class_names = FASHION_MNIST_CLASSES
  return data
