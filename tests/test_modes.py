"""run.py --mode sample and --mode eval on a trained toy workdir: samples, metrics, likelihoods, figures."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs.toy import gmm_vp
from score_sde_jax import build, metrics, modes
from score_sde_jax.workdir import load_workdir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


OVERRIDES = {"training.n_iters": 3000, "training.eval_freq": 3000, "model.ema_rate": 0.99,
             "model.num_scales": 200, "eval.num_samples": 600, "eval.batch_size": 256,
             "eval.num_eval_examples": 512, "eval.rtol": 1e-4, "eval.atol": 1e-4}


def _config():
  config = gmm_vp.get_config()
  for path, value in OVERRIDES.items():
    section, field = path.split(".")
    config[section][field] = value
  return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The 2-D ring mixture, VP, trained for 3000 steps (about 30 s)."""
  workdir = str(tmp_path_factory.mktemp("modes") / "wd")
  modes.run("train", _config(), workdir)
  return workdir


@pytest.mark.slow
def test_sample_mode_writes_samples_metrics_and_figures(trained):
  workdir = trained
  config = _config()
  for method in ("pc", "ode"):
    config.sampling.method = method
    samples, result = modes.run("sample", config, workdir)
    tag = f"{result['sampler']}_step3000"
    saved = np.load(os.path.join(workdir, "samples", f"{tag}.npz"))
    np.testing.assert_array_equal(saved["samples"], samples)
    assert samples.shape == (600, 2)
    with open(os.path.join(workdir, "eval", f"samples_{tag}.json")) as f:
      written = json.load(f)
    assert written == result
    held_out = next(build.experiment(config).data.load().batches(600, config.seed, split="test"))
    np.testing.assert_allclose(result["mmd"], metrics.mmd(samples, held_out), rtol=1e-5)
    # A 3000-step model already puts its samples on the ring: close to the held-out density.
    assert result["mmd"] < 0.02
    assert result["exact_log_prob_of_samples"] > result["exact_log_prob_of_held_out"] - 0.6
    assert result["nfe_per_batch"] == (400 if method == "pc" else result["nfe_per_batch"])
    # Each sampler's figure has its own name: the ODE run does not overwrite the PC run's.
    assert os.path.getsize(os.path.join(workdir, "figures", f"samples_{tag}.png")) > 10_000
  assert os.path.getsize(os.path.join(workdir, "figures", "trajectories.png")) > 10_000


def test_sample_mode_without_checkpoint_is_a_clear_error(tmp_path):
  cmd = [sys.executable, os.path.join(ROOT, "run.py"), "--config",
         os.path.join(ROOT, "configs", "toy", "gmm_vp.py"), f"--workdir={tmp_path}", "--mode=sample"]
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode == 2
  assert "no checkpoint" in out.stderr and "--mode train" in out.stderr


@pytest.mark.slow
def test_eval_mode_nll_is_within_a_tenth_of_a_nat_of_the_entropy(trained):
  """run.py --mode eval: the model's NLL on test data is close to the data's exact entropy."""
  cmd = [sys.executable, os.path.join(ROOT, "run.py"), "--config",
         os.path.join(ROOT, "configs", "toy", "gmm_vp.py"), f"--workdir={trained}", "--mode=eval"]
  cmd += [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  # A guard against a hang, not a time limit: this eval (512 likelihoods at 1e-4, then the
  # figures' 4096-point log-density grid) took 493 s with two test processes on 2 cores and
  # passed 600 s with a third process beside them (2026-12-07; its result was right).
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800,
                       env=dict(os.environ, TQDM_DISABLE="1"))
  assert out.returncode == 0, out.stderr
  with open(os.path.join(trained, "eval", "eval_step3000.json")) as f:
    result = json.load(f)
  assert json.loads(out.stdout.splitlines()[0]) == result
  assert result["num_examples"] == 512 and result["divergence"] == "exact"
  assert abs(result["nll_nats"] - result["data_entropy_nats"]) < 0.1, result
  # The gap is a KL divergence: non-negative up to its standard error.
  assert result["gap_nats"] > -3 * result["gap_nats_se"]
  np.testing.assert_allclose(result["gap_nats"],
                             result["nll_nats"] - result["data_entropy_nats_on_test"], atol=1e-9)
  # Well-separated equal modes: H = log 8 + log(2 pi e sigma^2) for 2-D modes of std 0.15.
  np.testing.assert_allclose(result["data_entropy_nats"],
                             np.log(8) + np.log(2 * np.pi * np.e * 0.15**2), atol=0.01)
  assert result["dsm_loss"] > 0 and result["nfe_mean"] > 7
  # ScoreFlow's bound: its mean over data bounds the SDE model's cross-entropy, which is at least
  # the data's entropy (a non-negative gap up to its standard error).
  assert result["bound_num_times"] == 1000 and result["bound_importance_sampling"]
  assert result["bound_gap_nats"] > -3 * result["bound_gap_nats_se"], result
  for name in ("log_density.png", "interpolation.png", "reconstruction.png"):
    assert os.path.getsize(os.path.join(trained, "figures", name)) > 10_000


def _conditional_logpdf_y(gmm, x, y):
  """Exact ``log p(y | x)`` of 2-D mixture data, normalised over a fine grid of y."""
  import jax.numpy as jnp
  grid = np.linspace(-4, 4, 1601)
  pts = np.stack([np.repeat(x, len(grid)), np.tile(grid, len(x))], 1).astype(np.float32)
  joint = np.asarray(gmm.log_prob(jnp.asarray(pts))).reshape(len(x), len(grid))
  log_norm = np.logaddexp.reduce(joint, axis=1) + np.log(grid[1] - grid[0])
  return np.asarray(gmm.log_prob(jnp.asarray(np.stack([x, y], 1), jnp.float32))) - log_norm


@pytest.mark.slow
def test_inpaint_mode_imputes_held_out_points(trained):
  """Known x of 300 held-out ring points, y generated (refined): what the library's ``inpaint``
  gives with the run's EMA score and the mode's key, the known part exactly, and imputed y where
  p(y | x) is high: the median exact log p(y | x) of the imputed points is within 0.5 nats of
  the held-out truth's (measured: -0.08 against 0.17; the mean is pulled down by the points the
  projection leaves between modes, see the README)."""
  import jax.numpy as jnp
  from score_sde_jax import controllable, keys
  config = _config()
  config.inpaint.num_examples, config.inpaint.samples_per_example = 300, 2
  config.inpaint.refine_steps = 200
  samples, result = modes.run("inpaint", config, trained)
  tag = "inpaint_half_step3000"
  saved = np.load(os.path.join(trained, "samples", f"{tag}.npz"))
  np.testing.assert_array_equal(saved["samples"], samples)
  truth = saved["truth"]
  assert samples.shape == (300, 2, 2) and result["max_abs_error_known"] == 0.0
  np.testing.assert_array_equal(samples[..., 0], np.repeat(truth[:, None, 0], 2, 1))
  run = load_workdir(trained, config)
  s = config.sampling
  direct, nfe = controllable.inpaint(
      keys.stream(config.seed, "inpaint"), run.sde, run.score_fn,
      jnp.asarray(np.repeat(truth, 2, axis=0)), np.repeat(saved["mask"], 2, axis=0),
      predictor=s.predictor, corrector=s.corrector, snr=s.snr, n_steps=s.n_steps_each,
      refine_steps=200)
  np.testing.assert_array_equal(np.asarray(direct).reshape(300, 2, 2), samples)
  assert result["nfe"] == nfe == 400 + 200
  gmm = build.experiment(config).data.load()
  lp = _conditional_logpdf_y(gmm, samples[..., 0].ravel(), samples[..., 1].ravel())
  lp_truth = _conditional_logpdf_y(gmm, truth[:, 0], truth[:, 1])
  assert np.median(lp) > np.median(lp_truth) - 0.5, (np.median(lp), np.median(lp_truth))
  with open(os.path.join(trained, "eval", f"{tag}.json")) as f:
    assert json.load(f) == result
  assert os.path.getsize(os.path.join(trained, "figures", f"{tag}.png")) > 10_000


def test_conditional_feature_distances_against_the_mixtures_closed_form():
  """``classifier_fd`` / ``_unguided`` with the identity as the classifier's features: exact
  draws of the ring's components 0 and 1 (250 each) are at distance ~0 from the held-out points
  of those classes, and 500 draws of the whole ring at the Frechet distance of the two moment-
  matched Gaussians, 5.445 (ring of radius 2, std 0.15). Over 20 seeds: 0.0014 +- 0.0021 (max
  0.010) and 5.55 +- 0.22; asserted below 0.05 and within 1.0 of 5.445."""
  import types

  from score_sde_jax import metrics
  from score_sde_jax.data.mixture import GaussianMixture
  from score_sde_jax.modes.conditional import feature_distances
  gmm = GaussianMixture.ring(8, 2.0, 0.15)

  def moments(classes):
    m = gmm.means[classes]
    return m.mean(0), 0.15 ** 2 * np.eye(2) + np.cov(m.T, bias=True)

  exact = metrics.frechet_distance_from_stats(*moments(list(range(8))), *moments([0, 1]))
  assert abs(exact - 5.445) < 1e-3
  x, y = gmm.sample_with_labels(np.random.default_rng(3), 20000)
  guided = np.stack([x[y == 0][:250], x[y == 1][:250]])
  run = types.SimpleNamespace(experiment=types.SimpleNamespace(seed=3), data_shape=(2,),
                              scaler=lambda v: v, sde=types.SimpleNamespace(sampling_eps=1e-3))
  clf = types.SimpleNamespace(feature_fn=lambda v, t: v)
  result = feature_distances(run, clf, guided, x[:500], np.array([0, 1]), gmm)
  labels = gmm.held_out_labels(2000, 3)
  assert result["classifier_fd_held_out_examples"] == np.isin(labels, [0, 1]).sum()
  assert result["classifier_fd"] < 0.05, result
  assert abs(result["classifier_fd_unguided"] - exact) < 1.0, result


def _classifier_config(**overrides):
  config = _config()
  config.classifier.n_iters, config.classifier.eval_freq, config.classifier.snapshot_freq = (
      1000, 500, 500)
  for field, value in overrides.items():
    config.classifier[field] = value
  return config


def test_train_classifier_steps_with_the_classifiers_ema_settings(tmp_path, monkeypatch):
  """classifier.ema_rate and classifier.ema_warmup (here not the default) reach the train step
  (whose EMA is checked against its closed form in tests/test_train.py); stopped there."""
  from score_sde_jax import train

  class Built(Exception):
    pass

  def spy(*args, **kwargs):
    raise Built(kwargs)

  monkeypatch.setattr(train, "make_train_step", spy)
  with pytest.raises(Built) as got:
    modes.run("train_classifier", _classifier_config(ema_rate=0.99, ema_warmup=False),
              str(tmp_path / "wd"))
  kwargs = got.value.args[0]
  assert kwargs["ema_rate"] == 0.99 and kwargs["ema_warmup"] is False


@pytest.mark.slow
def test_train_classifier_then_conditional_mode_samples_each_component(trained):
  """``--mode train_classifier`` on the ring (1000 steps, about 15 s) reaches the exact
  posterior's held-out accuracy: 4096 (x, t, z) draws shared by both, so the paired difference
  is far below the accuracy's binomial spread 0.0076; measured 0.377 against 0.377, asserted
  within 0.02. ``--mode conditional`` with that classifier and the run's EMA score then draws
  each component: the exact posterior at eps gives the asked-for component to at least 95% of
  the samples (measured 99.7%), and the samples are what the library's guided PC sampler gives
  with the mode's key."""
  from score_sde_jax import controllable, keys, sampling
  from score_sde_jax.workdir import load_classifier
  config = _classifier_config(samples_per_class=100)
  modes.run("train_classifier", config, trained)
  folder = os.path.join(trained, "classifier")
  with open(os.path.join(folder, "eval", "classifier_step1000.json")) as f:
    report = json.load(f)
  assert report["num_evaluations"] == 4096
  assert abs(report["accuracy"] - report["accuracy_exact"]) < 0.02, report
  assert report["accuracy_by_t"][0] > 0.95 and report["accuracy_by_t"][-1] < 0.3
  rows = [json.loads(line) for line in open(os.path.join(folder, "metrics.jsonl"))]
  assert [r["step"] for r in rows if "eval_accuracy" in r] == [500, 1000]
  assert rows[0]["step"] == 0 and "eval_accuracy_exact" in rows[0]
  assert os.path.isfile(os.path.join(folder, "figures", "classifier_accuracy_step1000.png"))

  samples, labels, result = modes.run("conditional", config, trained)
  assert samples.shape == (8, 100, 2) and labels.tolist() == list(range(8))
  assert result["exact_posterior_agreement"] >= 0.95, result
  assert result["classifier_agreement"] >= 0.95, result
  # Unguided draws of the same keys land on each of the 8 equally likely components: the asked
  # class about 1 / 8 of the time (800 draws: standard error 0.012).
  assert abs(result["classifier_agreement_unguided"] - 1 / 8) < 0.06, result
  assert result["share_outside_data_range"] < 0.01, result
  # All 8 classes asked: guided and unguided draws both have the ring's distribution.
  # All 8 classes asked: guided and unguided draws both have the ring's distribution; in the
  # classifier's features their Frechet distances from 2000 held-out points measured 0.051 and
  # 0.085 (the features' scale is the trained classifier's own; bound 0.5).
  assert result["classifier_fd"] < 0.5 and result["classifier_fd_unguided"] < 0.5, result
  run, clf = load_workdir(trained, config), load_classifier(folder)
  s = config.sampling
  guided = controllable.guided_score(run.score_fn, clf.classifier_fn, np.repeat(np.arange(8), 100))
  direct, nfe = sampling.pc_sample(keys.stream(config.seed, "conditional"), run.sde, guided,
                                   (800, 2), predictor=s.predictor, corrector=s.corrector,
                                   snr=s.snr, n_steps=s.n_steps_each)
  np.testing.assert_array_equal(np.asarray(direct).reshape(8, 100, 2), samples)
  assert result["nfe"] == nfe
  tag = "conditional_pc_reverse_diffusion_langevin_scale1_step3000"
  with open(os.path.join(trained, "eval", f"{tag}.json")) as f:
    assert json.load(f) == result
  np.testing.assert_array_equal(np.load(os.path.join(trained, "samples", f"{tag}.npz"))["samples"],
                                samples)
  assert os.path.getsize(os.path.join(trained, "figures", f"{tag}.png")) > 10_000

  # The probability-flow ODE: one class per call.
  ode = _classifier_config(samples_per_class=64, classes=(0, 4))
  ode.sampling.method, ode.sampling.ode.rtol, ode.sampling.ode.atol = "ode", 1e-3, 1e-3
  samples, labels, result = modes.run("conditional", ode, trained)
  assert samples.shape == (2, 64, 2) and labels.tolist() == [0, 4]
  assert result["exact_posterior_agreement"] >= 0.95, result
  # Two classes asked: unguided draws cover all 8 components, far from classes 0 and 4 in the
  # classifier's features (measured 23.9 against 0.44 guided).
  assert result["classifier_fd"] < result["classifier_fd_unguided"] / 10, result

  # Errors, each before anything compiles.
  bad = _classifier_config(classes=(2, 8))
  with pytest.raises(build.ConfigError, match=r"config.classifier.classes=\(2, 8\): \[8\] outside"):
    modes.run("conditional", bad, trained)
  with pytest.raises(Exception, match=r"config.classifier.hidden=64: the checkpoint in .* was "
                                      r"written with classifier.hidden=128"):
    modes.run("train_classifier", _classifier_config(hidden=64), trained)


@pytest.mark.slow
def test_conditional_mode_refuses_a_classifier_of_another_sde(trained, tmp_path):
  """A classifier trained for the VE SDE (a few steps) guiding the VP run: one error naming
  training.sde, before sampling."""
  from score_sde_jax.checkpoint import IncompatibleCheckpoint
  config = _classifier_config(n_iters=50, snapshot_freq=50, workdir=str(tmp_path / "ve_clf"))
  config.training.sde = "vesde"
  modes.run("train_classifier", config, str(tmp_path / "ve"))
  vp = _classifier_config(workdir=str(tmp_path / "ve_clf"))
  with pytest.raises(IncompatibleCheckpoint, match=r"config.training.sde='vpsde': the classifier "
                                                   r"in .*ve_clf was trained with training.sde="
                                                   r"'vesde'"):
    modes.run("conditional", vp, trained)


@pytest.mark.slow
def test_classifier_training_resumes_to_the_state_of_an_uninterrupted_run(tmp_path):
  """Stopped at 100 steps and started again to 200, the classifier's state, metrics and
  held-out evaluation equal those of one uninterrupted 200-step run."""
  import jax
  def config(n):
    c = _classifier_config(n_iters=n, snapshot_freq=100, eval_freq=100, batch_size=64)
    c.eval.batch_size = 128
    return c
  straight = modes.run("train_classifier", config(200), str(tmp_path / "a"))
  modes.run("train_classifier", config(100), str(tmp_path / "b"))
  resumed = modes.run("train_classifier", config(200), str(tmp_path / "b"))
  for x, y in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  read = lambda w: [{k: v for k, v in json.loads(line).items() if k != "steps_per_sec"}
                    for line in open(os.path.join(w, "classifier", "metrics.jsonl"))]
  assert read(str(tmp_path / "a")) == read(str(tmp_path / "b"))


def test_classifier_modes_refuse_unlabelled_data_and_wrong_class_counts(tmp_path):
  from configs.toy import moons_ve
  with pytest.raises(build.ConfigError, match=r"config.data.dataset='moons': has no class labels"):
    modes.run("train_classifier", moons_ve.get_config(), str(tmp_path / "m"))
  config = _config()
  config.data.n_modes = 5
  with pytest.raises(build.ConfigError, match=r"config.classifier.num_classes=8: the data set "
                                              r"'gmm' has 5 classes"):
    modes.run("train_classifier", config, str(tmp_path / "g"))
  config = _config()
  config.classifier.name = "wideresnet"
  with pytest.raises(build.ConfigError, match=r"config.classifier.name='wideresnet': the data "
                                              r"are vectors; expected classifier_mlp"):
    modes.run("train_classifier", config, str(tmp_path / "g"))
  assert not os.path.exists(tmp_path / "g")
