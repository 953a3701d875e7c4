"""Reads PyTorch ``.pth`` checkpoints (``torch.save`` zip format) without PyTorch.

A restricted ``pickle.Unpickler`` accepts only the handful of globals a
checkpoint of tensors, dicts, lists and numbers refers to, and rebuilds each
tensor as a NumPy array straight from the archive's storage records. Written
by hand because the only library that reads the format is PyTorch itself,
which would make a multi-GB dependency of a converter; nothing else in the
package needs it.
"""

from __future__ import annotations

import collections
import pickle
import zipfile

import numpy as np


class CheckpointFormatError(ValueError):
  """The file is not a readable PyTorch checkpoint."""


class _StorageType:
  def __init__(self, dtype):
    self.dtype = np.dtype(dtype)


_STORAGES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8",
    "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?",
}


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  itemsize = storage.dtype.itemsize
  if not size:
    return np.array(storage[storage_offset])
  view = np.lib.stride_tricks.as_strided(storage[storage_offset:], shape=tuple(size),
                                         strides=tuple(s * itemsize for s in stride))
  return np.array(view)  # own the memory, C order


def _rebuild_parameter(data, requires_grad, backward_hooks):
  return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
  def __init__(self, file, archive, prefix):
    super().__init__(file)
    self._archive = archive
    self._prefix = prefix
    self._cache = {}

  def find_class(self, module, name):
    if module == "torch" and name in _STORAGES:
      return _StorageType(_STORAGES[name])
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    raise CheckpointFormatError(f"refusing to load global {module}.{name}: a checkpoint of "
                                f"tensors should not need it")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
      raise CheckpointFormatError(f"unknown persistent id {pid!r}")
    storage_type, key = pid[1], pid[2]
    if key not in self._cache:
      name = f"{self._prefix}/data/{key}"
      try:
        raw = self._archive.read(name)
      except KeyError:
        raise CheckpointFormatError(f"storage record {name} is missing (truncated file?)") from None
      self._cache[key] = np.frombuffer(raw, dtype=storage_type.dtype)
    return self._cache[key]


def load(path: str):
  """The object ``torch.save`` wrote to ``path``, with tensors as NumPy arrays.

  Raises :class:`CheckpointFormatError` naming the file for a missing,
  truncated or non-checkpoint file.
  """
  try:
    archive = zipfile.ZipFile(path)
  except FileNotFoundError:
    raise CheckpointFormatError(f"{path}: no such file") from None
  except (zipfile.BadZipFile, OSError) as e:
    raise CheckpointFormatError(f"{path}: not a PyTorch zip checkpoint ({e})") from None
  with archive:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
    if len(pickles) != 1:
      raise CheckpointFormatError(f"{path}: expected one '*/data.pkl' record, found {pickles}")
    prefix = pickles[0][: -len("/data.pkl")]
    try:
      with archive.open(pickles[0]) as f:
        return _Unpickler(f, archive, prefix).load()
    except CheckpointFormatError as e:
      raise CheckpointFormatError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError) as e:
      raise CheckpointFormatError(f"{path}: unreadable checkpoint ({e})") from None
