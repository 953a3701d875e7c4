"""The torch-free checkpoint reader on damaged and crafted files: every mutation of a real
checkpoint either reads with values that lie in the file or is refused with
``CheckpointFormatError``; no other exception, no crash, no memory from outside the file."""

import io
import os
import pickletools
import struct
import zipfile

import numpy as np
import pytest

from score_sde_jax import torch_pickle
from score_sde_jax.torch_pickle import CheckpointFormatError

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "ve_ncsnpp_tiny.pth")
DTYPES = ("<f4", "<f8", "<i8", "<i4", "<f2", "<i2", "i1", "u1", "?")


def _records(path):
  with zipfile.ZipFile(path) as z:
    return {info.filename: z.read(info.filename) for info in z.infolist()}


def _write(records, path):
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
    for name, data in records.items():
      z.writestr(name, data)


def _arrays(obj):
  if isinstance(obj, np.ndarray):
    yield obj
  elif isinstance(obj, dict):
    for v in obj.values():
      yield from _arrays(v)
  elif isinstance(obj, (list, tuple)):
    for v in obj:
      yield from _arrays(v)


def _check_load(path, records, allowed=None):
  """Loads ``path``: a refusal is fine; a result must hold only bit patterns that its storage
  records hold (at their own alignment), whatever the dtype. ``allowed``: a cache of those bit
  patterns, shared by cases whose storage records are the same."""
  try:
    obj = torch_pickle.load(path)
  except CheckpointFormatError as e:
    assert path in str(e) and "\n" not in str(e)
    return False
  storages = [data for name, data in records.items() if "/data/" in name]
  allowed = {} if allowed is None else allowed
  for arr in _arrays(obj):
    if arr.size == 0:
      continue
    bits = np.dtype(f"u{arr.dtype.itemsize}")
    if bits not in allowed:
      allowed[bits] = np.unique(np.concatenate(
          [np.frombuffer(s[: len(s) - len(s) % bits.itemsize], bits) for s in storages]))
    values = np.ascontiguousarray(arr).view(bits).ravel()
    ok = np.searchsorted(allowed[bits], values)
    assert np.all(allowed[bits][np.minimum(ok, len(allowed[bits]) - 1)] == values), arr.shape
  return True


def _int_ops(pkl):
  """Positions and widths of the integer arguments in a pickle (sizes, strides, offsets, keys)."""
  widths = {"BININT1": 1, "BININT2": 2, "BININT": 4}
  return [(pos + 1, widths[op.name]) for op, _, pos in pickletools.genops(pkl)
          if op.name in widths]


@pytest.fixture(scope="module")
def original():
  return _records(FIXTURE)


def test_the_fixture_reads_with_every_tensor_inside_its_storage(original, tmp_path):
  assert _check_load(FIXTURE, original)


@pytest.mark.slow
def test_mutated_integers_in_the_pickle_are_read_inside_the_file_or_refused(original, tmp_path):
  """300 cases: one to three integer arguments of ``data.pkl`` (tensor sizes, strides, offsets,
  storage keys and the rest) set to random values, including 0, the largest of their width,
  and for 4-byte ones negative values and 2^28-2^31."""
  pkl_name = next(n for n in original if n.endswith("data.pkl"))
  pkl = original[pkl_name]
  ops = _int_ops(pkl)
  rng = np.random.default_rng(0)
  refused, allowed = 0, {}
  for case in range(300):
    data = bytearray(pkl)
    for _ in range(int(rng.integers(1, 4))):
      pos, width = ops[int(rng.integers(len(ops)))]
      choice = rng.integers(5)
      if width == 4:
        value = [0, 2**31 - 1, -int(rng.integers(1, 2**31)), int(rng.integers(2**28, 2**31)),
                 int(rng.integers(0, 4096))][choice]
        data[pos:pos + 4] = struct.pack("<i", value)
      else:
        top = 256**width - 1
        value = [0, top, int(rng.integers(0, top + 1)), 1, top // 2][choice]
        data[pos:pos + width] = value.to_bytes(width, "little")
    records = dict(original, **{pkl_name: bytes(data)})
    path = str(tmp_path / f"int{case}.pth")
    _write(records, path)
    refused += not _check_load(path, records, allowed)
    os.remove(path)
  assert refused > 30   # many of these mutations must be refused, not silently read


def test_truncated_storage_records_are_refused_naming_the_tensor(original, tmp_path):
  """A storage record cut short (the issue's 4-byte case among them) is refused with the tensor's
  name; before the check it returned 18,431 values of process memory."""
  storage_names = [n for n in original if "/data/" in n]
  rng = np.random.default_rng(1)
  for case in range(40):
    name = storage_names[int(rng.integers(len(storage_names)))]
    cut = 4 if case == 0 else int(rng.integers(0, max(len(original[name]), 1)))
    records = dict(original, **{name: original[name][:cut]})
    path = str(tmp_path / f"cut{case}.pth")
    _write(records, path)
    with pytest.raises(CheckpointFormatError, match=r"tensor \S+ \(storage data/\d+"):
      torch_pickle.load(path)
    os.remove(path)


def test_random_bytes_and_truncation_anywhere_are_read_from_the_file_or_refused(original,
                                                                                tmp_path):
  """200 cases: random bytes written over the file, or the file cut at a random point."""
  with open(FIXTURE, "rb") as f:
    raw = f.read()
  rng = np.random.default_rng(2)
  for case in range(200):
    data = bytearray(raw)
    if case % 2:
      data = data[: int(rng.integers(0, len(data)))]
    else:
      for _ in range(int(rng.integers(1, 20))):
        pos = int(rng.integers(0, len(data) - 8))
        data[pos:pos + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
    path = str(tmp_path / f"bytes{case}.pth")
    with open(path, "wb") as f:
      f.write(bytes(data))
    try:
      records = _records(path)
    except Exception:  # noqa: BLE001 -- zipfile itself cannot read it: the loader must refuse
      records = None
    if records is None:
      with pytest.raises(CheckpointFormatError):
        torch_pickle.load(path)
    else:
      _check_load(path, records)
    os.remove(path)


@pytest.mark.parametrize("size,stride,offset,match", [
    ((2**28,), (1,), 0, r"is larger than the file"),
    ((2**40,), (0,), 0, r"is larger than the file"),
    ((4, 4), (4, -1), 0, r"stride \(4, -1\) is not a tuple of non-negative integers"),
    ((8,), (1,), 10**6, r"offset 1000000 outside the storage"),
    ((3, 3), (3, 1), 2, r"reach element 10, past the storage's end"),
], ids=["2^28", "stride0-2^40", "negative-stride", "offset", "extent"])
def test_crafted_tensors_are_refused_with_one_line(size, stride, offset, match, tmp_path):
  """Tensors whose extent is past their storage: the segfault (2^28), the MemoryError
  (2^40 elements of stride 0) and the heap read of the issue, each one line instead."""
  path = str(tmp_path / "crafted.pth")
  record = torch_pickle._TensorRecord(torch_pickle._Storage("data/0", np.zeros(9, np.float32)),
                                      offset, size, stride)
  with pytest.raises(CheckpointFormatError, match=match):
    torch_pickle._tensor(record, "model.weight", max_bytes=4096)
  # The same through a file: a hand-written pickle of one tensor.
  body = _tensor_pickle(size, stride, offset)
  _write({"c/data.pkl": body, "c/data/0": np.zeros(9, np.float32).tobytes()}, path)
  with pytest.raises(CheckpointFormatError, match=r"crafted.pth: tensor w \(storage data/0, 9 "
                     r"elements\): .*" + match):
    torch_pickle.load(path)


def _tensor_pickle(size, stride, offset):
  """A protocol-2 pickle of ``{'w': tensor}`` as ``torch.save`` writes it."""
  out = io.BytesIO()

  def integer(v):
    out.write(b"\x8a" + bytes([(v.bit_length() + 8) // 8]) +
              v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True))  # LONG1

  out.write(b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01")               # PROTO 2, {}, 'w'
  out.write(b"ctorch._utils\n_rebuild_tensor_v2\n")                     # GLOBAL
  out.write(b"(")                                                        # MARK
  out.write(b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x09tQ")
  integer(offset)
  for values in (size, stride):
    out.write(b"(")
    for v in values:
      integer(v)
    out.write(b"t")
  out.write(b"\x89")                                                     # False
  out.write(b"ccollections\nOrderedDict\n)R")                            # OrderedDict()
  out.write(b"tR")                                                       # TUPLE, REDUCE
  out.write(b"s.")                                                       # SETITEM, STOP
  return out.getvalue()


def _scripted_archive(path, globals_pickle):
  """A TorchScript-like archive: ``data.pkl`` built with protocol-2 opcodes (as torch.jit.save
  writes them: GLOBAL, NEWOBJ, BUILD) and one float storage."""
  _write({"m/data.pkl": globals_pickle, "m/data/0": np.arange(6, dtype="<f4").tobytes(),
          "m/version": b"3\n"}, path)


def _module_pickle(module=b"__torch__.net", name=b"Conv", extra=b""):
  # as torch.jit.save: obj = Conv(); obj.__setstate__({"weight": tensor, "padding": [0, 1]})
  p = b"\x80\x02c" + module + b"\n" + name + b"\n)\x81}("
  p += b"X\x06\x00\x00\x00weightctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage"
  p += b"ctorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQK\x00K\x02K\x03\x86"
  p += b"K\x03K\x01\x86\x89ccollections\nOrderedDict\n)Rtq\x00R"
  p += b"X\x07\x00\x00\x00paddingctorch.jit._pickle\nbuild_intlist\n]q\x01(K\x00K\x01e\x85R"
  p += extra + b"ub."
  return p


def test_a_torchscript_archive_reads_as_module_dicts_without_running_its_code(tmp_path):
  """``scripted=True``: each ``__torch__`` object becomes a dict of its attributes with its
  class's name; lists built by ``torch.jit._pickle`` are lists. Without it, or for any other
  global (``os.system``), the file is refused."""
  path = str(tmp_path / "scripted.pt")
  data = _module_pickle()
  pickletools.dis(data, out=io.StringIO())    # a well-formed pickle
  _scripted_archive(path, data)
  obj = torch_pickle.load(path, scripted=True)
  assert obj["__class__"] == "__torch__.net.Conv" and obj["padding"] == [0, 1]
  np.testing.assert_array_equal(obj["weight"], np.arange(6, dtype=np.float32).reshape(2, 3))
  with pytest.raises(CheckpointFormatError, match="refusing to load global __torch__.net.Conv"):
    torch_pickle.load(path)
  evil = str(tmp_path / "evil.pt")
  _scripted_archive(evil, _module_pickle(b"os", b"system"))
  with pytest.raises(CheckpointFormatError, match="refusing to load global os.system"):
    torch_pickle.load(evil, scripted=True)
