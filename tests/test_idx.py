"""MNIST-format (idx) files: Fashion-MNIST from its published files (an excerpt in
tests/fixtures/fashion_mnist; Debian's full set when installed), padding to 32x32, the config
path, and one clear error for each malformed file."""

import gzip
import os
import shutil
import struct

import numpy as np
import pytest

from configs.fashion_mnist import ddpmpp_vp
from score_sde_jax import build
from score_sde_jax.data import DataError, idx

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "fixtures", "fashion_mnist")
# The published first labels (Fashion-MNIST's README: 9 ankle boot, 0 T-shirt/top, 3 dress, ...).
FIRST_TRAIN_LABELS = [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
FIRST_TEST_LABELS = [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]


def _write(path, array, code=0x08, compress=True):
  header = bytes([0, 0, code, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
  data = header + array.astype(idx.DTYPES[code]).tobytes()
  with (gzip.open(path, "wb") if compress else open(path, "wb")) as f:
    f.write(data)
  return data


def test_the_excerpt_reads_with_its_published_labels():
  data = idx.mnist_like(FIXTURE, image_size=28, name="fashion_mnist")
  assert data.train_levels.shape == (300, 28, 28, 1) and data.test_levels.shape == (100, 28, 28, 1)
  assert data.train_levels.dtype == np.uint8 and data.num_levels == 256
  assert data.train_labels[:10].tolist() == FIRST_TRAIN_LABELS
  assert data.test_labels[:10].tolist() == FIRST_TEST_LABELS
  assert data.num_classes == 10 and set(data.train_labels.tolist()) == set(range(10))
  # Byte sums (the full set's first images are the same: the next test), a black background.
  assert int(data.train_levels.astype(np.int64).sum()) == 17481620
  assert int(data.test_levels.astype(np.int64).sum()) == 5854180
  assert np.median(data.train_levels[:, 0, 0]) == 0 and data.train_levels.max(axis=(1, 2, 3)).min() >= 254
  x = next(data.batches(8, seed=0))
  assert x.shape == (8, 28, 28, 1) and 0.0 <= x.min() and x.max() <= 1.0


@pytest.mark.skipif(not os.path.isdir(idx.FASHION_MNIST_PATH),
                    reason="apt-get install dataset-fashion-mnist")
def test_the_full_set_from_debians_package_starts_with_the_excerpt():
  full = idx.fashion_mnist()
  assert full.train_levels.shape == (60000, 28, 28, 1) and full.test_levels.shape == (10000, 28, 28, 1)
  part = idx.mnist_like(FIXTURE, name="fashion_mnist")
  np.testing.assert_array_equal(full.train_levels[:300], part.train_levels)
  np.testing.assert_array_equal(full.test_labels[:100], part.test_labels)
  assert np.bincount(full.train_labels).tolist() == [6000] * 10   # balanced, as published


def test_padding_to_32_adds_two_background_pixels_each_side():
  a = idx.mnist_like(FIXTURE, image_size=28)
  b = idx.mnist_like(FIXTURE, image_size=32)
  assert b.train_levels.shape == (300, 32, 32, 1)
  np.testing.assert_array_equal(b.train_levels[:, 2:30, 2:30], a.train_levels)
  assert b.train_levels[:, :2].max() == b.train_levels[:, -2:].max() == 0
  assert b.test_levels[:, :, :2].max() == b.test_levels[:, :, -2:].max() == 0
  with pytest.raises(DataError, match="image_size=30: the files hold 28x28 images; use 28 .* or 32"):
    idx.mnist_like(FIXTURE, image_size=30)


def test_uncompressed_files_and_other_value_types_read(tmp_path):
  values = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
  data = _write(tmp_path / "a", values, code=0x0C, compress=False)
  np.testing.assert_array_equal(idx.read_idx(str(tmp_path / "a")), values)
  assert idx.read_idx(str(tmp_path / "a")).dtype == np.int32   # native order
  assert data[:4] == b"\0\0\x0c\x03"


def test_malformed_files_are_one_clear_error(tmp_path):
  images = np.zeros((5, 28, 28), np.uint8)
  _write(tmp_path / "ok", images)
  raw = gzip.decompress((tmp_path / "ok").read_bytes())
  (tmp_path / "short").write_bytes(gzip.compress(raw[:-10]))
  with pytest.raises(DataError, match=r"short: 3910 bytes of values, the header's shape \(5, 28, "
                                      r"28\) needs 3920 \(cut short\)"):
    idx.read_idx(str(tmp_path / "short"))
  (tmp_path / "cut.gz").write_bytes((tmp_path / "ok").read_bytes()[:-30])
  with pytest.raises(DataError, match="cut.gz: unreadable gzip file .* cut short"):
    idx.read_idx(str(tmp_path / "cut.gz"))
  (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
  with pytest.raises(DataError, match=r"png: not an idx file \(header 89504e47"):
    idx.read_idx(str(tmp_path / "png"))
  with pytest.raises(DataError, match="nothere: no such file"):
    idx.read_idx(str(tmp_path / "nothere"))

  # A folder whose labels do not match its images, or that lacks a file.
  folder = tmp_path / "set"
  shutil.copytree(FIXTURE, folder)
  _write(folder / "train-labels-idx1-ubyte.gz", np.zeros(299, np.uint8))
  with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: uint8 labels of shape \(299,\); "
                                      r"expected 300 uint8 labels"):
    idx.mnist_like(str(folder))
  os.remove(folder / "t10k-images-idx3-ubyte.gz")
  _write(folder / "train-labels-idx1-ubyte.gz", np.zeros(300, np.uint8))
  with pytest.raises(DataError, match=r"no t10k-images-idx3-ubyte\[.gz\]"):
    idx.mnist_like(str(folder))


def test_the_config_names_the_folder_and_checks_the_size(tmp_path):
  config = ddpmpp_vp.get_config()
  config.data.path = FIXTURE
  data = build.experiment(config).data.load()
  assert data.example_shape == (32, 32, 1) and len(data.train_levels) == 300
  assert data.class_names[9] == "Ankle boot" and len(data.class_names) == data.num_classes
  from score_sde_jax.modes.conditional import _class_name
  assert _class_name(data, 0) == "0: T-shirt/top" and _class_name(data, 12) == "class 12"
  config.data.dataset = "mnist"            # any MNIST-format folder
  assert build.experiment(config).data.load().example_shape == (32, 32, 1)
  config.data.path = str(tmp_path / "missing")
  with pytest.raises(DataError, match="data.dataset='mnist': .*missing: no such folder"):
    build.experiment(config).data.load()
  config.data.dataset, config.data.path = "mnist", ""
  with pytest.raises(ValueError, match="data.path='': data set 'mnist' is read from a path you give"):
    build.experiment(config).data.load()


def test_without_debians_package_the_default_path_says_what_to_install(monkeypatch, tmp_path):
  monkeypatch.setattr(idx, "FASHION_MNIST_PATH", str(tmp_path / "not-installed"))
  config = ddpmpp_vp.get_config()
  with pytest.raises(DataError, match=r"data.path='': Fashion-MNIST is read from .*not-installed "
                                      r"\(apt-get install dataset-fashion-mnist\) or from the "
                                      r"folder data.path names; nothing is downloaded"):
    build.experiment(config).data.load()
