"""CIFAR-10 from its python-pickle archive or folder, read with an unpickler that allows only the
numpy types a batch holds (a crafted pickle is refused, never run)."""

from __future__ import annotations

import os

import numpy as np

from score_sde_jax.data.errors import DataError
from score_sde_jax.data.images import ImageArrays


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
