"""Every config loads and builds; bad values stop with one clear message before compilation."""

import glob
import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from configs.toy import gmm_vp
from score_sde_jax import build, models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)
                      if not os.path.basename(p).startswith("_")
                      and "def get_config(" in open(p).read())  # defaults files are building blocks


with open(os.path.join(ROOT, "tests", "fixtures", "original_configs.json")) as f:
  PAPER_CONFIGS = set(json.load(f)["configs"])  # the paper's 28


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_the_required_toy_configs_exist():
  names = {os.path.relpath(p, ROOT) for p in CONFIG_FILES}
  for name in ("default_toy.py", "toy/gmm_vp.py", "toy/gmm_subvp.py", "toy/gmm_ve.py",
               "toy/swissroll_vp.py", "toy/moons_ve.py"):
    assert os.path.join("configs", name) in names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: os.path.relpath(p, ROOT))
def test_config_loads_and_builds(path):
  """Every config validates and builds its SDE and network; the example configs also trace
  their loss at full size (without allocating)."""
  config = _load(path)
  for section in ("training", "sampling", "eval", "data", "model", "optim"):
    assert section in config
  build.experiment(config)
  sde = build.score_model(config).sde
  assert sde.N == config.model.num_scales
  model = build.score_model(config).network
  if os.path.relpath(path, ROOT) in PAPER_CONFIGS:
    return  # full-size shapes and counts: tests/test_paper_configs.py (traced once there)
  if path.endswith("_paper.py"):
    return  # a CPU config at the paper's widths: its network is traced with the CPU config
  x = jax.ShapeDtypeStruct((2,) + build.score_model(config).data_shape, jnp.float32)
  labels = jax.ShapeDtypeStruct((2,), jnp.float32)
  assert models.param_count(model, x, labels) > 1000
  loss_fn = build.experiment(config).loss_fn(train_mode=True)
  params = jax.eval_shape(lambda a, b: model.init(jax.random.PRNGKey(0), a, b), x, labels)["params"]
  assert jax.eval_shape(loss_fn, jax.random.PRNGKey(0), params, x).shape == ()
  if config.data.dataset == "fashion_mnist":   # the excerpt, so that no package is needed
    config.data.path = os.path.join(ROOT, "tests", "fixtures", "fashion_mnist")
  if config.model.name == "mlp" or config.data.dataset in ("digits", "fashion_mnist"):
    dataset = build.experiment(config).data.load()
    batch = next(dataset.batches(4, 0))
    assert batch.shape == (4,) + build.score_model(config).data_shape


def test_the_example_configs_exist():
  names = {os.path.relpath(p, ROOT) for p in CONFIG_FILES}
  assert {"configs/digits/ddpmpp_vp.py", "configs/digits/ddpmpp_subvp.py",
          "configs/digits/ncsnpp_ve.py"} <= names
  # The paper's 28 configs and their values: tests/test_paper_configs.py.


@pytest.mark.parametrize("path,value,message", [
    ("training.sde", "vpsdee", "config.training.sde='vpsdee': expected one of ['subvpsde', 'vesde', 'vpsde']"),
    ("model.name", "unet", "config.model.name='unet': expected one of ['ddpm', 'mlp', 'ncsn', "
                           "'ncsnpp', 'ncsnv2_128', 'ncsnv2_256', 'ncsnv2_64']"),
    ("data.dataset", "imagenet", "config.data.dataset='imagenet': expected one of"),
    ("training.batch_size", 12.5, "config.training.batch_size=12.5: expected a positive integer"),
    ("training.continuous", "yes", "config.training.continuous='yes': expected True or False"),
    ("model.ema_rate", 1.5, "config.model.ema_rate=1.5: expected a number in [0, 1)"),
    ("training.snapshot_freq_for_preemption", 1001, "must be multiples of n_jitted_steps"),
    ("optim.grad_clip", 0.0, "config.optim.grad_clip=0.0: expected a finite number > 0, or < 0 "
     "for no clipping (0 would zero every update)"),
    # A NaN passes every comparison-based check: refused in any field, also unread ones.
    ("optim.grad_clip", float("nan"), "config.optim.grad_clip=nan: expected a finite number"),
    ("model.beta_max", float("inf"), "config.model.beta_max=inf: expected a finite number"),
    ("model.sigma_max", float("nan"), "config.model.sigma_max=nan: expected a finite number"),
    ("data.std", float("-inf"), "config.data.std=-inf: expected a finite number"),
    ("sampling.edm.s_tmax", float("nan"), "config.sampling.edm.s_tmax=nan: expected a finite"),
])
def test_bad_values_name_field_value_and_allowed(path, value, message):
  config = gmm_vp.get_config()
  *sections, field = path.split(".")
  node = config
  for section in sections:
    node = node[section]
  with config.unlocked():
    node.__dict__["_fields"][field] = value  # bypass ConfigDict's own type lock
  with pytest.raises(build.ConfigError) as err:
    build.experiment(config)
  assert message in str(err.value)


def test_infinity_is_allowed_where_it_means_no_bound():
  config = gmm_vp.get_config()
  config.sampling.method, config.sampling.edm.s_tmax = "edm", float("inf")   # EDM's S_tmax
  build.experiment(config)


def _cli(*args):
  cmd = [sys.executable, os.path.join(ROOT, "run.py"),
         "--config", os.path.join(ROOT, "configs", "toy", "gmm_vp.py"), *args]
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_unknown_sde_and_missing_workdir_parent(tmp_path):
  out = _cli(f"--workdir={tmp_path}/wd", "--config.training.sde=vesdee")
  assert out.returncode == 2
  assert "config.training.sde='vesdee'" in out.stderr and "vpsde" in out.stderr
  assert not (tmp_path / "wd").exists()  # nothing written
  out = _cli(f"--workdir={tmp_path}/no/such/wd")
  assert out.returncode == 2 and "parent folder" in out.stderr and "does not exist" in out.stderr


def test_cli_override_of_the_wrong_type(tmp_path):
  out = _cli(f"--workdir={tmp_path}/wd", "--config.training.batch_size=abc")
  assert out.returncode != 0
  assert "training.batch_size" in out.stderr and "abc" in out.stderr


@pytest.mark.slow
def test_cli_flag_and_config_file_mistakes_are_one_line(tmp_path):
  """Mistakes absl and ml_collections find while parsing the flags (before ``main``) are one
  ``error:`` line and exit code 2; they were tracebacks of up to 53 lines."""
  (tmp_path / "syntax.py").write_text("def get_config(:\n")
  (tmp_path / "empty.py").write_text("x = 1\n")
  cases = {
      ("--config.training.foo=1",): "error: --config.training.foo: config.training has no field "
                                    "'foo' (its fields: batch_size, continuous,",
      ("--config.trainin.n_iters=1",): "error: --config.trainin.n_iters: config has no field "
                                       "'trainin' (its fields: classifier, data,",
      ("--config.training.n_iters=abc",): "error: flag --config.training.n_iters=abc: invalid",
      (f"--config={tmp_path / 'missing.py'}",): f"error: --config={tmp_path / 'missing.py'}: no "
                                                f"such file",
      (f"--config={tmp_path / 'syntax.py'}",): "syntax.py: syntax error at line 1:",
      (f"--config={tmp_path / 'empty.py'}",): "empty.py: defines no get_config()",
  }
  for args, message in cases.items():
    r = _cli("--mode=info", *args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert message in lines[0], (message, lines[0])


def test_validating_a_config_leaves_jax_uninitialised():
  """run.py validates before jax.distributed.initialize, which must come before any JAX work."""
  code = ("from configs.toy import gmm_vp; from configs.digits import ncsnpp_ve; "
          "from score_sde_jax import build; from jax._src import xla_bridge; "
          "[build.experiment(c.get_config()) for c in (gmm_vp, ncsnpp_ve)]; "
          "assert not xla_bridge.backends_are_initialized()")
  subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_renamed_sampler_fields_name_their_new_place_and_old_workdirs_still_load():
  """The samplers' options moved into one section each (sampling.dpm_solver.order, ...): an
  override or a config file with an old name is refused naming the new one; a config saved with
  the old names (an earlier workdir) is read as the same experiment."""
  from score_sde_jax import cli
  config = gmm_vp.get_config()
  assert cli._unknown_override(config, ["--config.sampling.dpm_order=3"]) == (
      "--config.sampling.dpm_order: renamed; it is now --config.sampling.dpm_solver.order")
  assert "--config.sampling.dpm_solver.num_steps and --config.sampling.edm.num_steps" in (
      cli._unknown_override(config, ["--config.sampling.fast_num_steps=9"]))
  with config.unlocked():
    config.sampling.ode_solver = "dopri5"
  with pytest.raises(build.ConfigError, match=r"config.sampling.ode_solver: renamed; it is now "
                                              r"sampling.ode.solver"):
    build.experiment(config)
  old = gmm_vp.get_config().to_dict()
  s = old["sampling"]
  for section in ("ode", "sde", "dpm_solver", "edm"):
    del s[section]
  s.update(ode_solver="dopri5", rtol=1e-3, atol=1e-4, ode_num_steps=0, sde_num_steps=77,
           fast_num_steps=9, fast_schedule="logsnr", fast_sigma_min=0.02, fast_sigma_max=5.0,
           dpm_order=3, edm_churn=2.0, edm_s_tmin=0.1, edm_s_tmax=9.0, edm_s_noise=1.1,
           method="edm")
  exp = build.experiment(old, scope="network")
  samplers = exp.sampling.samplers
  assert exp.sampling.method == "edm"
  assert (samplers["ode"].solver, samplers["ode"].rtol, samplers["ode"].atol) == ("dopri5", 1e-3, 1e-4)
  assert samplers["sde"].num_steps == 77
  assert (samplers["dpm_solver"].order, samplers["dpm_solver"].num_steps,
          samplers["dpm_solver"].schedule) == (3, 9, "logsnr")
  e = samplers["edm"]
  assert (e.num_steps, e.sigma_min, e.sigma_max, e.churn, e.s_tmin, e.s_tmax, e.s_noise) == (
      9, 0.02, 5.0, 2.0, 0.1, 9.0, 1.1)
