"""Every mode in one tiny workdir (the files and JSON keys each writes), and load_workdir: a trained
or converted workdir from Python, with the sample mode's own score function and samples."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import score_sde_jax
from configs.toy import gmm_vp
from score_sde_jax import build, checkpoint, convert, keys, modes
from score_sde_jax.metric_writer import read_metrics
from score_sde_jax.score import get_score_fn

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
STEPS = 300


def _config():
  config = gmm_vp.get_config()
  config.model.hidden, config.model.num_layers = 32, 1
  config.model.num_scales = 100
  t = config.training
  t.n_iters, t.batch_size, t.log_freq, t.eval_freq = STEPS, 256, 100, 150
  t.snapshot_freq_for_preemption, t.snapshot_freq = 150, 300
  e = config.eval
  e.batch_size, e.num_batches, e.num_samples, e.num_eval_examples = 128, 1, 256, 128
  e.rtol = e.atol = 1e-3
  return config


def _every_mode(folder, figures: bool):
  wd = str(folder / "wd")
  config = _config()
  config.eval.figures = figures
  modes.run("train", config, wd)
  modes.run("sample", config, wd)
  modes.run("eval", config, wd)
  return wd


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """Train, sample and eval without figures (``eval.figures=False``; they are most of the
  time: 50 of 86 s)."""
  return _every_mode(tmp_path_factory.mktemp("modes"), figures=False)


def test_without_figures_the_modes_write_the_same_files_but_figures(workdir):
  files = {os.path.relpath(os.path.join(root, f), workdir)
           for root, _, names in os.walk(workdir) for f in names}
  tag = f"pc_reverse_diffusion_langevin_step{STEPS}"
  assert {"config.json", "metrics.jsonl", f"samples/{tag}.npz", f"eval/samples_{tag}.json",
          f"eval/eval_step{STEPS}.json"} <= files
  assert not any(f.startswith("figures") or f.endswith(".png") for f in files), files


@pytest.mark.slow
def test_every_mode_writes_its_files(tmp_path):
  workdir = _every_mode(tmp_path, figures=True)
  files = {os.path.relpath(os.path.join(root, f), workdir)
           for root, _, names in os.walk(workdir) for f in names}
  tag = f"pc_reverse_diffusion_langevin_step{STEPS}"
  expected = {"config.json", "metrics.jsonl", f"samples/{tag}.npz", f"eval/samples_{tag}.json",
              f"eval/eval_step{STEPS}.json"} | {f"figures/{name}.png" for name in (
                  "loss", "forward_diffusion", "score_field", f"samples_{tag}", "trajectories",
                  "log_density", "interpolation", "reconstruction")}
  assert expected <= files, expected - files
  others = {f.split("/")[0] for f in files - expected}
  assert others == {"checkpoints", "tensorboard", "train.lock"}, others
  assert sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))
                if d.isdigit()) == [150, 300]
  for name in expected:
    if name.endswith(".png"):
      assert os.path.getsize(os.path.join(workdir, name)) > 10_000, name


def test_json_results_and_metrics_rows_have_their_keys(workdir):
  tag = f"pc_reverse_diffusion_langevin_step{STEPS}"
  with open(os.path.join(workdir, "eval", f"samples_{tag}.json")) as f:
    sampled = json.load(f)
  assert set(sampled) == {"step", "sampler", "num_samples", "nfe_per_batch", "seconds", "devices",
                          "mmd", "mmd_held_out_vs_train_data", "sliced_wasserstein",
                          "share_outside_data_range", "data_range",
                          "exact_log_prob_of_samples", "exact_log_prob_of_held_out"}
  assert sampled["num_samples"] == 256 and sampled["nfe_per_batch"] == 200  # 100 steps, P + C
  assert sampled["share_outside_data_range"] < 0.05   # 300 steps already sample the ring
  with open(os.path.join(workdir, "eval", f"eval_step{STEPS}.json")) as f:
    evaluated = json.load(f)
  assert set(evaluated) == {"step", "num_examples", "dsm_loss", "dsm_loss_se", "nfe_mean",
                            "divergence", "nll_nats", "nll_nats_se", "data_entropy_nats_on_test",
                            "data_entropy_nats", "data_entropy_nats_se", "gap_nats", "gap_nats_se",
                            "bound_nll_nats", "bound_nll_nats_se", "bound_num_times",
                            "bound_importance_sampling", "bound_gap_nats", "bound_gap_nats_se",
                            "settings_hash"}
  assert evaluated["num_examples"] == 128 and evaluated["step"] == STEPS
  # The bound is run.nll_bound's on the held-out points, with the eval's key stream.
  run = score_sde_jax.load_workdir(workdir)
  held_out = run.experiment.data.load().held_out(128, run.experiment.seed)
  bound = run.nll_bound(jax.random.fold_in(keys.stream(run.experiment.seed, "likelihood_bound"),
                                           0), held_out)
  assert bound.nfe == 1001 and evaluated["bound_num_times"] == 1000
  np.testing.assert_allclose(evaluated["bound_nll_nats"], float(np.mean(bound.nll)), rtol=1e-5)
  np.testing.assert_allclose(evaluated["bound_gap_nats"], evaluated["bound_nll_nats"]
                             - evaluated["data_entropy_nats_on_test"], atol=1e-6)
  rows = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  assert set(rows[0]) == {"step", "eval_loss_exact_score"} and rows[0]["step"] == 0
  train_rows = [r for r in rows if "loss" in r]
  assert [r["step"] for r in train_rows] == [100, 200, 300]
  assert set(train_rows[0]) == {"step", "loss", "grad_norm", "lr", "steps_per_sec"}
  assert [r["step"] for r in rows if "eval_loss" in r] == [150, 300]


def test_load_workdir_gives_the_checkpoints_score_function(workdir):
  run = score_sde_jax.load_workdir(workdir)
  assert run.step == STEPS and run.model.hidden == 32 and run.sde.N == 100
  # Independently: the checkpoint's EMA parameters through get_score_fn with the config's flags.
  config = _config()
  model = build.score_model(config).network
  manager = checkpoint.make_manager(os.path.join(workdir, "checkpoints"))
  abstract = build.experiment(config).model.abstract_state(build.experiment(config).optimizer.make())
  state = checkpoint.restore(manager, STEPS, checkpoint.abstract_like(
      abstract, jax.sharding.SingleDeviceSharding(jax.devices()[0])))
  reference = get_score_fn(build.score_model(config).sde, model, state.ema_params)
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 2))
  t = jnp.linspace(0.01, 1.0, 16)
  np.testing.assert_array_equal(run.score_fn(x, t), reference(x, t))


def test_run_sample_reproduces_the_sample_mode(workdir, monkeypatch):
  config = _config()
  run = score_sde_jax.load_workdir(workdir, config)
  x, nfe = run.sample(keys.stream(config.seed, "sample"), config.eval.num_samples)
  saved = np.load(os.path.join(workdir, "samples",
                               f"pc_reverse_diffusion_langevin_step{STEPS}.npz"))
  np.testing.assert_array_equal(x, saved["samples"])
  assert nfe == 200
  # Fewer samples than a batch: a batch of 5, not one of eval.batch_size = 128 cut short.
  batches = []
  sampling_fn = type(run.experiment).sampling_fn
  monkeypatch.setattr(type(run.experiment), "sampling_fn",
                      lambda self, b, *a, **k: batches.append(b) or sampling_fn(self, b, *a, **k))
  small, nfe = run.sample(keys.stream(config.seed, "sample"), 5)
  assert small.shape == (5, 2) and nfe == 200 and batches == [5]
  assert np.all(np.isfinite(small))
  # Other sampler settings on the same run: the probability-flow ODE, as overrides.
  z, nfe = run.sample(jax.random.PRNGKey(1), 8, method="ode", rtol=1e-3, atol=1e-3)
  assert z.shape == (8, 2) and nfe > 7
  with pytest.raises(TypeError, match=r"^key: expected a PRNG key \(jax.random.key or PRNGKey\), "
                                      r"got int 0; sampling is random"):
    run.sample(0, 16)


def test_load_workdir_refuses_a_config_of_another_network(workdir):
  config = _config()
  config.model.hidden = 64
  with pytest.raises(checkpoint.IncompatibleCheckpoint, match="config.model.hidden=64"):
    score_sde_jax.load_workdir(workdir, config)


@pytest.mark.slow
def test_load_workdir_on_a_converted_checkpoint(tmp_path):
  """A converted released checkpoint: load_workdir's score equals the original code's."""
  name = "vp_ddpmpp_tiny"
  with open(os.path.join(FIXTURES, f"{name}.config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  convert.convert(os.path.join(FIXTURES, f"{name}.pth"), config, str(tmp_path / "wd"))
  run = score_sde_jax.load_workdir(str(tmp_path / "wd"))
  assert run.step == 1234
  e = np.load(os.path.join(FIXTURES, f"{name}.expected.npz"))
  score = run.score_fn(jnp.asarray(e["x"].transpose(0, 2, 3, 1)), jnp.asarray(e["t"]))
  ref = e["score"].transpose(0, 2, 3, 1)
  err = np.abs(np.asarray(score) - ref).reshape(4, -1).max(1) / np.abs(ref).reshape(4, -1).max(1)
  assert np.all(err < 2e-5), err


def test_the_documentations_workdir_examples_run(workdir):
  from test_readme import blocks_with_workdir
  (_, readme), = blocks_with_workdir("README.md")
  (_, library), = blocks_with_workdir("docs/library.md")
  # The README's example is the first lines of the library page's (each statement the same, up
  # to comments), so running the library page's runs both.
  code = lambda block: [line.split("#")[0].strip() for line in block.splitlines()
                        if line.split("#")[0].strip()]
  assert code(readme) == code(library)[:len(code(readme))], (code(readme), code(library))
  namespace = {}
  exec(library.replace('"workdirs/demo"', repr(workdir)), namespace)
  assert namespace["x"].shape == (1000, 2) and namespace["logp"].shape == (100,)
  assert namespace["score"].shape == (8, 2) and namespace["x_back"].shape == (8, 2)
