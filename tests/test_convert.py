"""The paper's PyTorch checkpoints: torch-free reading, strict conversion, output parity."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from score_sde_jax import build, checkpoint, convert, state_dict, torch_pickle
from score_sde_jax.score import get_score_fn, time_labels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")  # made by the original code: see its README
NAMES = ["ve_ncsnpp_tiny", "vp_ddpmpp_tiny", "vp_ddpm_tiny"]


def _config(name):
  with open(os.path.join(FIXTURES, f"{name}.config.json")) as f:
    return ml_collections.ConfigDict(json.load(f))


def _rel_err(port, ref):
  port, ref = np.asarray(port), np.asarray(ref)
  return np.abs(port - ref).reshape(len(ref), -1).max(1) / np.abs(ref).reshape(len(ref), -1).max(1)


@pytest.fixture(scope="module", params=NAMES)
def converted(request):
  name = request.param
  config = _config(name)
  state, step = convert.convert_checkpoint(os.path.join(FIXTURES, f"{name}.pth"), config)
  expected = dict(np.load(os.path.join(FIXTURES, f"{name}.expected.npz")))
  return name, config, state, step, expected


def test_network_output_and_score_match_the_original(converted):
  """Model weights -> network output, EMA weights -> score, within 2e-5 per sample (relative)."""
  name, config, state, step, e = converted
  assert step == 1234
  model, sde = build.score_model(config).network, build.score_model(config).sde
  x = jnp.asarray(e["x"].transpose(0, 2, 3, 1))  # NCHW -> NHWC
  t = jnp.asarray(e["t"])
  labels = time_labels(sde, t, continuous=True)
  np.testing.assert_allclose(labels, e["labels"], rtol=1e-6)
  out = model.apply({"params": state.params}, x, labels)
  if config.model.scale_by_sigma:  # the original divides inside the network, this library in score.py
    out = out / labels[:, None, None, None]
  assert out.shape == x.shape and out.dtype == x.dtype
  assert np.all(_rel_err(out, e["network_output"].transpose(0, 2, 3, 1)) < 2e-5)
  score = get_score_fn(sde, model, state.ema_params, True,
                       scale_by_sigma=config.model.scale_by_sigma)(x, t)
  assert np.all(_rel_err(score, e["score"].transpose(0, 2, 3, 1)) < 2e-5)
  # Model and EMA weights really differ (the fixture perturbs them apart).
  out_ema = model.apply({"params": state.ema_params}, x, labels)
  assert np.all(_rel_err(out_ema, model.apply({"params": state.params}, x, labels)) > 0.1)


def test_reader_is_bit_exact_and_keeps_the_layout():
  ckpt = torch_pickle.load(os.path.join(FIXTURES, "ve_ncsnpp_tiny.pth"))
  assert sorted(ckpt) == ["ema", "model", "optimizer", "step"]
  sd = ckpt["model"]
  assert len(sd) == 158 and next(iter(sd)) == "module.sigmas"
  np.testing.assert_allclose(sd["module.sigmas"], np.exp(np.linspace(np.log(50), np.log(0.01), 1000)),
                             rtol=1e-12)
  assert sd["module.sigmas"].dtype == np.float64
  assert len(ckpt["ema"]["shadow_params"]) == 156 == len(convert.trainable_keys(sd))
  assert ckpt["optimizer"]["param_groups"][0]["lr"] == 2e-4
  assert sd["module.all_modules.3.weight"].shape == (16, 3, 3, 3)  # OIHW


def _write_truncated(src, dst):
  with open(src, "rb") as f:
    data = f.read()
  with open(dst, "wb") as f:
    f.write(data[: len(data) // 2])


def test_corrupt_or_mismatched_checkpoints_fail_clearly_and_write_nothing(tmp_path):
  config = _config("ve_ncsnpp_tiny")
  truncated = tmp_path / "truncated.pth"
  _write_truncated(os.path.join(FIXTURES, "ve_ncsnpp_tiny.pth"), truncated)
  with pytest.raises(torch_pickle.CheckpointFormatError, match="truncated.pth"):
    convert.convert(str(truncated), config, str(tmp_path / "wd1"))
  with pytest.raises(torch_pickle.CheckpointFormatError, match="no such file"):
    convert.convert(str(tmp_path / "missing.pth"), config, str(tmp_path / "wd2"))
  wrong = _config("ve_ncsnpp_tiny")
  wrong.model.nf = 32
  with pytest.raises(convert.ConversionError) as err:
    convert.convert(os.path.join(FIXTURES, "ve_ncsnpp_tiny.pth"), wrong, str(tmp_path / "wd3"))
  assert "all_modules_1/kernel" in str(err.value) and "problems" in str(err.value)
  # A DDPM checkpoint for an NCSN++ config.
  with pytest.raises(convert.ConversionError, match="does not match the network .* problems"):
    convert.convert(os.path.join(FIXTURES, "vp_ddpm_tiny.pth"), _config("vp_ddpmpp_tiny"),
                    str(tmp_path / "wd4"))
  assert not any((tmp_path / f"wd{i}").exists() for i in range(1, 5))


def test_strict_matching_lists_every_kind_of_problem_and_maps_a_good_dict():
  expected = {("a", "kernel"): (3, 2), ("b", "bias"): (4,), ("c", "bias"): (5,)}
  rename = lambda key, x: ((key.split(".")[0], "kernel" if x.ndim == 2 else "bias"),
                           x.T if x.ndim == 2 else x)
  good = {"a.weight": np.arange(6.0).reshape(2, 3), "b.bias": np.ones(4), "c.bias": np.zeros(5),
          "buf.sigmas": np.ones(7)}
  flat = state_dict.match(good, expected, rename, what="checkpoint", error=ValueError,
                          skip=lambda key: key.startswith("buf."))
  assert set(flat) == set(expected)
  np.testing.assert_array_equal(flat[("a", "kernel")], np.arange(6.0).reshape(2, 3).T)
  bad = {"a.weight": np.ones((3, 2)),            # lands with shape (2, 3): a mismatch
         "b.bias": np.ones(4), "b.other": np.ones(4),  # the second fills b/bias again
         "d.bias": np.ones(1)}                   # no parameter d/bias; c/bias left empty
  with pytest.raises(ValueError) as err:
    state_dict.match(bad, expected, lambda k, x: rename(k.replace("other", "bias"), x),
                     what="checkpoint", error=ValueError)
  message = str(err.value)
  assert "(4 problems)" in message
  for part in ("a/kernel has (3, 2)", "b/bias filled twice", "no parameter d/bias",
               "c/bias (5,): no tensor in the checkpoint"):
    assert part in message, part


@pytest.mark.slow
def test_cli_writes_a_workdir_that_restores_and_refuses_to_overwrite(tmp_path):
  name = "vp_ddpmpp_tiny"
  config_path = tmp_path / "config.py"
  config_path.write_text(
      "import json, ml_collections\n"
      f"def get_config():\n  return ml_collections.ConfigDict(json.load(open({os.path.join(FIXTURES, name + '.config.json')!r})))\n")
  cmd = [sys.executable, "-m", "score_sde_jax.convert", "--checkpoint",
         os.path.join(FIXTURES, f"{name}.pth"), f"--config={config_path}", f"--workdir={tmp_path}/wd"]
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  state, _ = convert.convert_checkpoint(os.path.join(FIXTURES, f"{name}.pth"), _config(name))
  manager = checkpoint.make_manager(str(tmp_path / "wd" / "checkpoints"))
  assert manager.latest_step() == 1234
  restored = checkpoint.restore(manager, 1234, checkpoint.abstract_like(state))
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    np.testing.assert_array_equal(a, b)
  again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert again.returncode == 2 and "already holds checkpoints" in again.stderr


# Counted by the original code (its manifest): sum(p.numel() for p in model.parameters()).
FIXTURE_PARAMS = {"ve_ncsnpp_tiny": 190_835, "vp_ddpmpp_tiny": 189_347, "vp_ddpm_tiny": 281_379}


@pytest.mark.parametrize("name", NAMES)
def test_info_mode_counts_the_fixture_parameters(name, tmp_path, capsys):
  """--mode info needs no workdir and allocates nothing; its last line is JSON. run.py itself
  runs it for the first fixture (the others in this process: the same function)."""
  from score_sde_jax import modes
  expected = FIXTURE_PARAMS[name]
  if name == NAMES[0]:
    config_path = tmp_path / "config.py"
    config_path.write_text(
        "import json, ml_collections\n"
        f"def get_config():\n  return ml_collections.ConfigDict(json.load(open({os.path.join(FIXTURES, name + '.config.json')!r})))\n")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), f"--config={config_path}",
                          "--mode=info"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    printed = out.stdout
  else:
    modes.run("info", _config(name))
    printed = capsys.readouterr().out
  summary = json.loads(printed.strip().splitlines()[-1])
  assert summary["params"] == expected
  assert summary["image_size"] == 16 and summary["model"] in ("ncsnpp", "ddpm")


@pytest.mark.slow
def test_converted_fixture_samples_and_evaluates_bits_per_dim(tmp_path):
  """convert -> run.py --mode sample -> run.py --mode eval, on 16x16 images from an npz file."""
  name = "vp_ddpmpp_tiny"
  images = np.random.default_rng(0).integers(0, 256, size=(40, 16, 16, 3), dtype=np.uint8)
  np.savez(tmp_path / "images.npz", images=images)
  config_path = tmp_path / "config.py"
  config_path.write_text(f"""
import json, ml_collections
from configs.default_toy import get_default_configs

def get_config():
  config = get_default_configs()
  fixture = json.load(open({os.path.join(FIXTURES, name + '.config.json')!r}))
  config.model = ml_collections.ConfigDict({{**config.model.to_dict(), **fixture["model"]}})
  config.model.num_scales = 100
  config.data = ml_collections.ConfigDict(dict(dataset="npz", path={str(tmp_path / 'images.npz')!r},
      image_size=16, num_channels=3, centered=fixture["data"]["centered"]))
  config.training.sde = fixture["training"]["sde"]
  config.eval.batch_size = 4
  config.eval.num_samples = 4
  config.eval.num_eval_examples = 4
  config.eval.divergence = "rademacher"
  config.eval.rtol = config.eval.atol = 1e-3
  config.eval.bound_num_times = 20
  config.sampling.predictor = "reverse_diffusion"
  config.sampling.corrector = "none"
  return config
""")
  run = lambda *args: subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True,
                                     text=True, timeout=600, env=dict(os.environ, TQDM_DISABLE="1"))
  wd = tmp_path / "wd"
  out = run("-m", "score_sde_jax.convert", "--checkpoint", os.path.join(FIXTURES, f"{name}.pth"),
            f"--config={config_path}", f"--workdir={wd}")
  assert out.returncode == 0, out.stderr
  out = run(os.path.join(ROOT, "run.py"), f"--config={config_path}", f"--workdir={wd}", "--mode=sample")
  assert out.returncode == 0, out.stderr
  saved = np.load(wd / "samples" / "pc_reverse_diffusion_none_step1234.npz")
  assert saved["samples"].shape == (4, 16, 16, 3) and np.all(np.isfinite(saved["samples"]))
  assert saved["nfe"].tolist() == [100]
  assert (wd / "figures" / "samples_pc_reverse_diffusion_none_step1234.png").stat().st_size > 1000
  out = run(os.path.join(ROOT, "run.py"), f"--config={config_path}", f"--workdir={wd}", "--mode=eval")
  assert out.returncode == 0, out.stderr
  with open(wd / "eval" / "eval_step1234.json") as f:
    result = json.load(f)
  # The fixture's network is perturbed random weights and the images are uniform noise, so the
  # value says nothing about quality; this checks the path end to end (the numbers themselves
  # are tested in test_likelihood.py).
  assert result["num_examples"] == 4 and np.isfinite(result["bits_per_dim"])
  assert result["bits_per_dim"] > 0 and result["nfe_mean"] > 7 and np.isfinite(result["dsm_loss"])
  assert result["bound_num_times"] == 20 and np.isfinite(result["bound_bits_per_dim"])


def test_the_originals_own_config_builds_without_fields_its_network_never_reads(tmp_path):
  """The original configs/ve/cifar10_ncsnpp.py has no model.fourier_scale (positional embedding):
  the network builds with the original's parameter count, and a fixture converts without it."""
  with open(os.path.join(FIXTURES, "original_ve_cifar10_ncsnpp.config.json")) as f:
    original = ml_collections.ConfigDict(json.load(f))
  assert "fourier_scale" not in original.model
  build.score_model(original)
  model = build.score_model(original).network
  from score_sde_jax.models import param_count
  shape = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  assert param_count(model, shape, jax.ShapeDtypeStruct((1,), jnp.float32)) == 62_693_251
  config = _config("vp_ddpmpp_tiny")
  del config.model["fourier_scale"]
  state, step = convert.convert_checkpoint(os.path.join(FIXTURES, "vp_ddpmpp_tiny.pth"), config)
  assert step == 1234
  with pytest.raises(build.ConfigError, match="config.model.fourier_scale: missing"):
    config.model.embedding_type = "fourier"
    build.score_model(config).network
