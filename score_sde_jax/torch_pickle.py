"""Reads PyTorch ``.pth`` checkpoints (``torch.save``'s zip format, and the legacy format of
torch < 1.6 that NCSN's and NCSNv2's released checkpoints use) and the weights of TorchScript
archives (``torch.jit.save``) without PyTorch.

A restricted ``pickle.Unpickler`` accepts only the handful of globals a
checkpoint of tensors, dicts, lists and numbers refers to, and rebuilds each
tensor as a NumPy array straight from the archive's storage records. With
``scripted=True`` it also reads a TorchScript archive's ``data.pkl``: each module object
(a ``__torch__.<module>.<Class>`` global) becomes a dict of its attributes with its class's
name under ``"__class__"``; the archive's code (``code/``) is never read or run. Written
by hand because the only library that reads the format is PyTorch itself,
which would make a multi-GB dependency of a converter and of the FID network's loader.
"""

from __future__ import annotations

import collections
import math
import os
import pickle
import zipfile
from typing import Any, NamedTuple

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


class _Storage(NamedTuple):
  """A storage record of the archive: its name and its elements."""

  name: str
  array: np.ndarray


class _LegacyStorage:
  """A storage of the legacy (pre-zip, torch < 1.6) format: its elements follow the pickle, so
  the array is filled in once the whole object is read; ``view`` is ``(offset, size)`` of a
  storage view, or None."""

  def __init__(self, key, dtype, numel, root=None, view=None):
    self.name, self.dtype, self.numel = f"storage {key}", dtype, numel
    self.root, self.view, self.data = root, view, None

  @property
  def array(self):
    base = (self.root or self).data
    if base is None:
      raise CheckpointFormatError(f"{self.name}: its data is missing (truncated file?)")
    if self.view is None:
      return base
    offset, size = self.view
    if offset + size > len(base):
      raise CheckpointFormatError(f"{self.name}: a view past its storage's end")
    return base[offset:offset + size]


class _TensorRecord(NamedTuple):
  """A tensor as the pickle describes it; checked against its storage by :func:`_tensor` once
  the whole object is read (so an error can name the tensor)."""

  storage: Any
  offset: Any
  size: Any
  stride: Any


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
  return _TensorRecord(storage, storage_offset, size, stride)


def _ints(value, what):
  if not (isinstance(value, (tuple, list)) and
          all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)):
    raise CheckpointFormatError(f"{what} {value!r} is not a tuple of non-negative integers")
  return tuple(value)


def _tensor(record: _TensorRecord, name: str, max_bytes: int) -> np.ndarray:
  """The array of ``record``, refused unless every element it addresses lies in its storage and
  its size fits in the file (a stride-0 tensor could otherwise ask for any amount of memory)."""
  what = f"tensor {name}"
  if not isinstance(record.storage, (_Storage, _LegacyStorage)):
    raise CheckpointFormatError(f"{what}: its storage is {type(record.storage).__name__}, not a "
                                f"storage record")
  storage, n = record.storage.array, len(record.storage.array)
  where = f"{what} (storage {record.storage.name}, {n} elements)"
  offset = record.offset
  if not (isinstance(offset, int) and not isinstance(offset, bool) and 0 <= offset <= n):
    raise CheckpointFormatError(f"{where}: offset {offset!r} outside the storage")
  size, stride = _ints(record.size, f"{where}: size"), _ints(record.stride, f"{where}: stride")
  if len(size) != len(stride):
    raise CheckpointFormatError(f"{where}: size {size} and stride {stride} differ in length")
  numel = math.prod(size)
  if numel * storage.dtype.itemsize > max_bytes:
    raise CheckpointFormatError(f"{where}: size {size} ({numel} elements) is larger than the "
                                f"file ({max_bytes} bytes)")
  if numel == 0:
    return np.zeros(size, storage.dtype)
  last = offset + sum((k - 1) * st for k, st in zip(size, stride))
  if last >= n:
    raise CheckpointFormatError(f"{where}: size {size}, stride {stride} and offset {offset} "
                                f"reach element {last}, past the storage's end")
  itemsize = storage.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                         strides=tuple(st * itemsize for st in stride))
  return np.array(view)  # own the memory, C order


class _Budget:
  """Bytes that the tensors of one file may take in all: :data:`MATERIALIZE_FACTOR` times the
  file (a storage used by many tensors, each within the file's size, could otherwise take any
  multiple of it)."""

  def __init__(self, file_bytes: int):
    self.file_bytes = file_bytes
    self.left = MATERIALIZE_FACTOR * file_bytes + (1 << 16)

  def take(self, nbytes: int, name: str) -> None:
    self.left -= nbytes
    if self.left < 0:
      raise CheckpointFormatError(
          f"tensor {name}: the tensors read so far take more than {MATERIALIZE_FACTOR} times the "
          f"file's {self.file_bytes} bytes (one storage used by many tensors?); refusing to "
          f"materialise them")


# A checkpoint's tensors take about its size; shared storages (tied weights) may take a little more.
MATERIALIZE_FACTOR = 2


def _materialize(obj, name: str, budget: _Budget, depth: int = 0):
  """``obj`` with every tensor record replaced by its checked array (``name``: its key path);
  ``budget``: the bytes the whole file may materialise, shared by every tensor in it."""
  if depth > 100:
    raise CheckpointFormatError(f"{name}: nested more than 100 levels deep")
  if isinstance(obj, _TensorRecord):
    array = _tensor(obj, name, budget.file_bytes)
    budget.take(array.nbytes, name)
    return array
  if isinstance(obj, (_Storage, _LegacyStorage)):
    raise CheckpointFormatError(f"{name}: a bare storage record, not a tensor")
  if isinstance(obj, _ScriptObject):
    attributes = getattr(obj, "attributes", {})
    out = {"__class__": obj.torch_class}
    for k, v in attributes.items():
      out[k] = _materialize(v, f"{name}.{k}" if name else str(k), budget, depth + 1)
    return out
  if isinstance(obj, dict):
    out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
    for k, v in obj.items():
      out[k] = _materialize(v, f"{name}.{k}" if name else str(k), budget, depth + 1)
    return out
  if isinstance(obj, (list, tuple)):
    items = [_materialize(v, f"{name}[{i}]", budget, depth + 1) for i, v in enumerate(obj)]
    return items if isinstance(obj, list) else tuple(items)
  return obj


def _rebuild_parameter(data, requires_grad, backward_hooks):
  return data


class _ScriptObject:
  """An object of a TorchScript class, as its pickle builds it: no method of the class runs;
  its state (a dict of attributes) is kept for :func:`_materialize`."""

  torch_class = ""

  def __setstate__(self, state):
    if not isinstance(state, dict):
      raise CheckpointFormatError(f"{self.torch_class}: its state is {type(state).__name__}, "
                                  f"not a dict of attributes")
    self.attributes = state


def _script_class(qualified: str):
  return type("ScriptObject", (_ScriptObject,), {"torch_class": qualified, "__slots__": ()})


def _build_list(values):
  if not isinstance(values, (list, tuple)):
    raise CheckpointFormatError(f"a TorchScript list of {type(values).__name__}")
  return list(values)


_SCRIPTED = {("torch.jit._pickle", f"build_{kind}list"): _build_list
             for kind in ("int", "double", "bool", "tensor")}

_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
  def __init__(self, file, archive, prefix, scripted=False):
    super().__init__(file)
    self._archive = archive
    self._prefix = prefix
    self._cache = {}
    self._scripted = scripted
    self._classes = {}

  def find_class(self, module, name):
    if module == "torch" and name in _STORAGES:
      return _StorageType(_STORAGES[name])
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if self._scripted and (module, name) in _SCRIPTED:
      return _SCRIPTED[(module, name)]
    if self._scripted and module.startswith("__torch__.") and name.isidentifier():
      qualified = f"{module}.{name}"
      return self._classes.setdefault(qualified, _script_class(qualified))
    raise CheckpointFormatError(f"refusing to load global {module}.{name}: a checkpoint of "
                                f"tensors should not need it")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
      raise CheckpointFormatError(f"unknown persistent id {pid!r}")
    storage_type, key = pid[1], pid[2]
    if not isinstance(storage_type, _StorageType):
      raise CheckpointFormatError(f"persistent id {pid!r}: {storage_type!r} is not a storage type")
    if not isinstance(key, str):
      raise CheckpointFormatError(f"persistent id {pid!r}: the record key is not a string")
    if (key, storage_type.dtype) not in self._cache:
      name = f"{self._prefix}/data/{key}"
      try:
        info = self._archive.getinfo(name)
      except KeyError:
        raise CheckpointFormatError(f"storage record {name} is missing (truncated file?)") from None
      if info.compress_type != zipfile.ZIP_STORED:
        # torch.save stores records uncompressed; a compressed one could inflate to any size.
        raise CheckpointFormatError(f"storage record {name} is compressed (method "
                                    f"{info.compress_type}); torch.save never compresses, "
                                    f"refusing to inflate it")
      raw = self._archive.read(name)
      usable = len(raw) - len(raw) % storage_type.dtype.itemsize
      self._cache[key, storage_type.dtype] = _Storage(
          f"data/{key}", np.frombuffer(raw[:usable], dtype=storage_type.dtype))
    return self._cache[key, storage_type.dtype]


_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c   # torch.serialization.MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001


class _LegacyUnpickler(_Unpickler):
  """The main pickle of the legacy format: persistent ids ``('storage', type, key, location,
  numel, view_metadata)``, each storage's elements stored after the pickle."""

  def __init__(self, file, size):
    super().__init__(file, None, "")
    self._roots = {}
    self._size = size

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
      raise CheckpointFormatError(f"unknown persistent id {pid!r}")
    storage_type, key, _, numel, view = pid[1:]
    if not isinstance(storage_type, _StorageType):
      raise CheckpointFormatError(f"persistent id {pid!r}: {storage_type!r} is not a storage type")
    if not (isinstance(key, str) and isinstance(numel, int) and numel >= 0):
      raise CheckpointFormatError(f"persistent id {pid!r}: bad key or element count")
    if numel * storage_type.dtype.itemsize > self._size:
      raise CheckpointFormatError(f"storage {key}: {numel} elements, more than the file holds")
    root = self._roots.setdefault(key, _LegacyStorage(key, storage_type.dtype, numel))
    if view is None:
      return root
    if not (isinstance(view, tuple) and len(view) == 3 and all(
        isinstance(v, int) and v >= 0 for v in view[1:])):
      raise CheckpointFormatError(f"persistent id {pid!r}: bad view {view!r}")
    return _LegacyStorage(view[0], storage_type.dtype, view[2], root=root, view=view[1:])


def _load_legacy(f, size: int):
  """The object of a legacy-format ``torch.save`` file (``f`` at its start)."""
  header = _RefuseAll(f)
  if header.load() != _LEGACY_MAGIC:
    raise CheckpointFormatError("not a PyTorch checkpoint (neither a zip archive nor the legacy "
                                "format's magic number)")
  if header.load() != _LEGACY_PROTOCOL:
    raise CheckpointFormatError("legacy format of an unknown protocol version")
  header.load()   # sys_info: byte order and type sizes (little-endian on every platform torch ran)
  unpickler = _LegacyUnpickler(f, size)
  obj = unpickler.load()
  keys = _RefuseAll(f).load()
  if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
    raise CheckpointFormatError("the list of storage keys after the pickle is damaged")
  for key in keys:
    storage = unpickler._roots.get(key)
    if storage is None:
      raise CheckpointFormatError(f"storage {key} is listed but no tensor uses it")
    raw = f.read(8)
    if len(raw) != 8:
      raise CheckpointFormatError(f"storage {key}: the file ends before its data")
    numel = int.from_bytes(raw, "little", signed=True)
    if numel != storage.numel:
      raise CheckpointFormatError(f"storage {key}: {numel} elements in the file, "
                                  f"{storage.numel} in its record")
    data = f.read(numel * storage.dtype.itemsize)
    if len(data) != numel * storage.dtype.itemsize:
      raise CheckpointFormatError(f"storage {key}: the file ends inside its data (truncated?)")
    storage.data = np.frombuffer(data, dtype=storage.dtype)
  return obj


class _RefuseAll(pickle.Unpickler):
  """The legacy format's small header pickles: numbers, dicts and lists only."""

  def find_class(self, module, name):
    raise CheckpointFormatError(f"refusing to load global {module}.{name} in the file's header")


def load(path: str, *, scripted: bool = False):
  """The object ``torch.save`` wrote to ``path``, with tensors as NumPy arrays; with
  ``scripted``, the module tree of a ``torch.jit.save`` archive (see the module docstring).

  The file is untrusted input: only the globals of a checkpoint of tensors are accepted (no code
  runs), and every tensor is checked against its storage record before an array is made.
  Raises :class:`CheckpointFormatError` naming the file (and the tensor, where one is at fault)
  for a missing, truncated, damaged or non-checkpoint file.
  """
  if not scripted and os.path.isfile(path) and not zipfile.is_zipfile(path):
    try:
      size = os.path.getsize(path)
      with open(path, "rb") as f:
        return _materialize(_load_legacy(f, size), "", _Budget(size))
    except CheckpointFormatError as e:
      raise CheckpointFormatError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 -- whatever a damaged pickle raises
      raise CheckpointFormatError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                                  f"{e})") from None
  try:
    archive = zipfile.ZipFile(path)
  except FileNotFoundError:
    raise CheckpointFormatError(f"{path}: no such file") from None
  except Exception as e:  # noqa: BLE001 -- BadZipFile, OSError, or whatever a damaged directory raises
    raise CheckpointFormatError(f"{path}: not a PyTorch zip checkpoint ({type(e).__name__}: "
                                f"{e})") from None
  with archive:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
    if len(pickles) != 1:
      raise CheckpointFormatError(f"{path}: expected one '*/data.pkl' record, found {pickles}")
    prefix = pickles[0][: -len("/data.pkl")]
    try:
      with archive.open(pickles[0]) as f:
        obj = _Unpickler(f, archive, prefix, scripted).load()
      return _materialize(obj, "", _Budget(os.path.getsize(path)))
    except CheckpointFormatError as e:
      raise CheckpointFormatError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError) as e:
      raise CheckpointFormatError(f"{path}: unreadable checkpoint ({e})") from None
    except Exception as e:  # noqa: BLE001 -- any other failure of a damaged pickle or archive
      raise CheckpointFormatError(f"{path}: unreadable checkpoint ({type(e).__name__}: "
                                  f"{e})") from None
