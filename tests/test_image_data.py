"""Image data: digits, CIFAR-10 archives, image folders, npz files; clear errors for bad inputs."""

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from configs.digits import ddpmpp_vp
from score_sde_jax import build
from score_sde_jax.data import DataError, ImageArrays
from score_sde_jax.data import cifar10, images as image_data


def test_digits_shapes_levels_and_splits():
  data = image_data.digits()
  assert data.shape == (8, 8, 1) and data.num_levels == 17
  assert len(data.train_levels) + len(data.test_levels) == 1797 and len(data.test_levels) == 180
  assert data.train_levels.min() == 0 and data.train_levels.max() == 16
  assert len(np.unique(np.concatenate([data.train_levels.ravel(), data.test_levels.ravel()]))) == 17
  # The split is fixed: no image is in both.
  train = {x.tobytes() for x in data.train_levels}
  assert sum(x.tobytes() in train for x in data.test_levels) <= 2  # sklearn's digits hold a few duplicates
  batch = next(data.batches(32, seed=0))
  assert batch.shape == (32, 8, 8, 1) and batch.dtype == np.float32
  np.testing.assert_allclose(np.unique(batch * 16), np.round(np.unique(batch * 16)), atol=1e-5)
  assert 0.0 <= batch.min() and batch.max() <= 1.0
  test = next(data.batches(180, seed=0, split="test"))
  np.testing.assert_allclose(test * 16, data.test_levels, atol=1e-5)


def test_labelled_batches_are_the_unlabelled_batches_with_their_classes():
  """Digits carry scikit-learn's classes through the fixed split; a batch with labels holds the
  same images as the batch without, each with its own digit's class."""
  from sklearn.datasets import load_digits
  digits = load_digits()
  by_image = {}
  for img, label in zip(digits.images.astype(np.uint8), digits.target):
    by_image.setdefault(img.tobytes(), set()).add(int(label))
  data = image_data.digits()
  assert data.num_classes == 10
  for split in ("train", "test"):
    x, y = next(data.batches(64, seed=1, split=split, labels=True))
    np.testing.assert_array_equal(x, next(data.batches(64, seed=1, split=split)))
    assert y.dtype == np.int32 and y.shape == (64,)
    levels = np.round(x[..., 0] * 16).astype(np.uint8)
    assert all(int(k) in by_image[img.tobytes()] for img, k in zip(levels, y))
  xs, ys = next(data.batches(8, seed=1, start_step=2, steps_per_batch=3, labels=True))
  assert xs.shape == (3, 8, 8, 8, 1) and ys.shape == (3, 8)
  np.testing.assert_array_equal(ys[1], next(data.batches(8, seed=1, start_step=3, labels=True))[1])
  np.testing.assert_array_equal(data.held_out_labels(5), next(data.batches(5, 0, split="test",
                                                                           labels=True))[1])


def test_npz_labels_and_unlabelled_data(tmp_path):
  rng = np.random.default_rng(0)
  images, labels = rng.integers(0, 256, (20, 4, 4, 1), dtype=np.uint8), np.arange(20) % 3
  np.savez(tmp_path / "l.npz", images=images, labels=labels)
  data = ImageArrays.from_npz(str(tmp_path / "l.npz"), image_size=4, num_channels=1)
  assert data.num_classes == 3
  x, y = next(data.batches(20, seed=0, split="test", labels=True))
  for img, k in zip(np.round(x * 255).astype(np.uint8), y):
    assert k == labels[np.flatnonzero((images == img).all(axis=(1, 2, 3)))[0]]
  np.savez(tmp_path / "u.npz", images=images)
  unlabelled = ImageArrays.from_npz(str(tmp_path / "u.npz"), image_size=4, num_channels=1)
  assert unlabelled.num_classes is None
  with pytest.raises(DataError, match="u.npz: has no class labels"):
    next(unlabelled.batches(4, seed=0, labels=True))
  with pytest.raises(DataError, match=r"labels of shape \(19,\)"):
    ImageArrays(images, labels=labels[:19])


def test_digits_through_the_config():
  config = ddpmpp_vp.get_config()
  data = build.experiment(config).data.load()
  assert isinstance(data, ImageArrays) and data.shape == (8, 8, 1)


def test_training_batches_resume_flip_and_dequantize():
  levels = np.arange(10 * 4 * 4).reshape(10, 4, 4, 1) % 256
  data = ImageArrays(levels.astype(np.uint8), random_flip=True, uniform_dequantization=True,
                     eval_fraction=0.2)
  first = [next(data.batches(6, seed=3, start_step=s)) for s in range(3)]
  stream = data.batches(6, seed=3)
  for expected in first:
    np.testing.assert_array_equal(next(stream), expected)
  # Dequantized: every value lies inside its level's bin [k, k + 1) / 256.
  k = np.floor(first[0] * 256)
  assert np.all((first[0] * 256 - k) >= 0) and np.all(k <= 255)
  assert len(data.test_levels) == 2 and len(data.train_levels) == 8


def _cifar_batch(n, seed):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
  data = images.transpose(0, 3, 1, 2).reshape(n, 3072)  # rows of CHW, as the real files
  labels = [int(v) for v in rng.integers(0, 10, n)]
  return images, labels, pickle.dumps({b"batch_label": b"x", b"labels": labels, b"data": data,
                                       b"filenames": [b"f"] * n}, protocol=2)


def _write_cifar(folder):
  os.makedirs(folder / "cifar-10-batches-py")
  train, train_labels, blobs = [], [], {}
  for i in range(1, 6):
    imgs, labels, blob = _cifar_batch(4, i)
    train.append(imgs)
    train_labels += labels
    blobs[f"data_batch_{i}"] = blob
  test, test_labels, blobs["test_batch"] = _cifar_batch(3, 99)
  for name, blob in blobs.items():
    (folder / "cifar-10-batches-py" / name).write_bytes(blob)
  with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
    for name, blob in blobs.items():
      info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
      info.size = len(blob)
      tar.addfile(info, io.BytesIO(blob))
  return np.concatenate(train), test, np.asarray(train_labels), np.asarray(test_labels)


def test_cifar10_reads_the_archive_and_the_folder(tmp_path):
  train, test, train_labels, test_labels = _write_cifar(tmp_path)
  for path in (tmp_path / "cifar-10-python.tar.gz", tmp_path / "cifar-10-batches-py", tmp_path):
    data = cifar10.cifar10(str(path))
    np.testing.assert_array_equal(data.train_levels, train)
    np.testing.assert_array_equal(data.test_levels, test)
    np.testing.assert_array_equal(data.train_labels, train_labels)   # the classes, for classifiers
    np.testing.assert_array_equal(data.held_out_labels(3), test_labels)
    assert data.shape == (32, 32, 3)


def test_cifar10_errors_name_the_file(tmp_path):
  with pytest.raises(DataError, match="no such file"):
    cifar10.cifar10(str(tmp_path / "nope.tar.gz"))
  bad = tmp_path / "bad.tar.gz"
  bad.write_bytes(b"not an archive")
  with pytest.raises(DataError, match="bad.tar.gz: unreadable archive"):
    cifar10.cifar10(str(bad))
  os.makedirs(tmp_path / "cifar-10-batches-py")
  (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": [1, 2]}))
  with pytest.raises(DataError, match="data_batch_1: missing"):
    cifar10.cifar10(str(tmp_path))


def test_image_folder_and_npz(tmp_path):
  os.makedirs(tmp_path / "imgs" / "sub")
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(tmp_path / "imgs" / "a.png")
  Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "imgs" / "sub" / "b.jpg")
  exact = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
  Image.fromarray(exact).save(tmp_path / "imgs" / "c.png")
  data = image_data.image_folder(str(tmp_path / "imgs"), image_size=8, num_channels=3,
                                 eval_fraction=0.34)
  assert data.shape == (8, 8, 3) and len(data.train_levels) + len(data.test_levels) == 3
  everything = np.concatenate([data.train_levels, data.test_levels])
  assert any(np.array_equal(x, exact) for x in everything)  # an 8x8 PNG is read losslessly
  grey = image_data.image_folder(str(tmp_path / "imgs"), image_size=4, num_channels=1,
                                 eval_fraction=0.34)
  assert grey.shape == (4, 4, 1)

  np.savez(tmp_path / "x.npz", images=exact[None].repeat(5, 0))
  npz = ImageArrays.from_npz(str(tmp_path / "x.npz"), image_size=8, num_channels=3, eval_fraction=0.2)
  np.testing.assert_array_equal(npz.test_levels[0], exact)


def test_bad_image_inputs_give_one_clear_error(tmp_path):
  with pytest.raises(DataError, match="no such folder"):
    image_data.image_folder(str(tmp_path / "missing"), image_size=8, num_channels=3)
  os.makedirs(tmp_path / "imgs")
  (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG garbage")
  with pytest.raises(DataError, match="broken.png: unreadable image"):
    image_data.image_folder(str(tmp_path / "imgs"), image_size=8, num_channels=3)
  np.savez(tmp_path / "small.npz", images=np.zeros((5, 10, 10, 3), np.uint8))
  with pytest.raises(DataError, match=r"small.npz: images of shape \(10, 10, 3\), expected \(8, 8, 3\)"):
    ImageArrays.from_npz(str(tmp_path / "small.npz"), image_size=8, num_channels=3)
  np.savez(tmp_path / "grey.npz", images=np.zeros((5, 8, 8), np.uint8))
  with pytest.raises(DataError, match=r"expected \(8, 8, 3\)"):
    ImageArrays.from_npz(str(tmp_path / "grey.npz"), image_size=8, num_channels=3)
  np.savez(tmp_path / "float.npz", images=np.zeros((5, 8, 8, 3), np.float32))
  with pytest.raises(DataError, match="float.npz: dtype float32, expected integer levels"):
    ImageArrays.from_npz(str(tmp_path / "float.npz"), image_size=8, num_channels=3)
  (tmp_path / "junk.npz").write_bytes(b"junk")
  with pytest.raises(DataError, match=r"junk.npz: not an npz file \(an npz is a zip archive"):
    ImageArrays.from_npz(str(tmp_path / "junk.npz"), image_size=8, num_channels=3)
  (tmp_path / "text.npz").write_text("0 1 2\n3 4 5\n")   # no hint to load pickles unsafely
  with pytest.raises(DataError) as err:
    ImageArrays.from_npz(str(tmp_path / "text.npz"), image_size=8, num_channels=3)
  assert "pickle" not in str(err.value) and "not an npz file" in str(err.value)
  (tmp_path / "cut.npz").write_bytes((tmp_path / "float.npz").read_bytes()[:60])   # a cut zip
  with pytest.raises(DataError, match="cut.npz: unreadable npz"):
    ImageArrays.from_npz(str(tmp_path / "cut.npz"), image_size=8, num_channels=3)
  config = ddpmpp_vp.get_config()
  config.data.dataset = "CIFAR10"
  with pytest.raises(build.ConfigError, match="config.data.path=''"):
    build.experiment(config).data.load()
