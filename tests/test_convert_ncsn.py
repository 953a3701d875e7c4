"""NCSN / NCSNv2: the RefineNets against ermongroup's PyTorch code (checkpoints it saved, in the
legacy torch format of its releases, and the outputs it computed: tests/fixtures/ncsn), the
converter's checks, and the paper configs' parameter counts."""

import importlib.util
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde_jax import build, convert, torch_pickle
from score_sde_jax.score import get_score_fn

pytestmark = pytest.mark.usefixtures("cheap_compiles")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "ncsn")

# fixture -> (config it is a reduced form of, model.name, nf, sigma_max of its 10 levels)
CASES = {
    "ncsn_tiny": ("configs/ve/ncsn/cifar10.py", "ncsn", 8, 1.0),
    "ncsnv2_tiny": ("configs/ve/ncsnv2/cifar10.py", "ncsnv2_64", 8, 5.0),
    "ncsnv2_128_tiny": ("configs/ve/ncsnv2/bedroom.py", "ncsnv2_128", 4, 5.0),
    "ncsnv2_256_tiny": ("configs/ve/ncsnv2/cifar10.py", "ncsnv2_256", 4, 5.0),
}


def load(rel):
  spec = importlib.util.spec_from_file_location(rel.replace("/", "_")[:-3], os.path.join(ROOT, rel))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def reduced_config(name):
  rel, model_name, nf, sigma_max = CASES[name]
  config = load(rel)
  config.model.name, config.model.nf = model_name, nf
  config.model.num_scales, config.model.sigma_max, config.model.sigma_min = 10, sigma_max, 0.01
  config.data.image_size = 16
  return config


def _close(ours, theirs, rtol=2e-5):
  """Within ``rtol`` of each sample's largest value (the fixtures' float32 tolerance)."""
  ours, theirs = np.asarray(ours), np.asarray(theirs)
  scale = np.max(np.abs(theirs).reshape(len(theirs), -1), axis=1)
  err = np.max(np.abs(ours - theirs).reshape(len(theirs), -1), axis=1)
  assert np.all(err <= rtol * scale), (err / scale)


@pytest.mark.parametrize("name", sorted(CASES))
def test_converted_scores_match_ermongroups_outputs(name):
  """The converted weights and EMA weights give the PyTorch network's outputs (NCSNv2's divided
  by the level's sigma, as its ``forward``) at each noise level's time."""
  config = reduced_config(name)
  exp = build.experiment(config)
  state, step = convert.convert_checkpoint(os.path.join(FIXTURES, name, "checkpoint.pth"), config)
  expected = np.load(os.path.join(FIXTURES, name, "expected.npz"))
  x = jnp.asarray(expected["x"].transpose(0, 2, 3, 1))   # NCHW -> NHWC
  labels = jnp.asarray(expected["labels"])
  sde = exp.model.sde
  np.testing.assert_allclose(sde.discrete_sigmas[::-1], expected["sigmas"], rtol=1e-6)
  t = sde.chain_time(labels)
  assert np.array_equal(sde.chain_index(t), labels)
  for params, key in ((state.params, "network_output"), (state.ema_params, "ema_network_output")):
    if expected[key].size == 0:   # NCSN keeps no EMA: the converted EMA weights are the weights
      assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params),
                                                      jax.tree.leaves(state.ema_params)))
      continue
    score_fn = get_score_fn(sde, exp.model.network, params, exp.model.continuous,
                            scale_by_sigma=exp.model.scale_by_sigma)
    _close(score_fn(x, t), expected[key].transpose(0, 2, 3, 1))
  assert step == (1234 if name != "ncsn_tiny" else 0)


def test_the_legacy_format_is_read_without_torch():
  obj = torch_pickle.load(os.path.join(FIXTURES, "ncsnv2_tiny", "checkpoint.pth"))
  assert isinstance(obj, list) and obj[2:4] == [7, 1234]
  state_dict, ema = obj[0], obj[4]
  assert state_dict["module.begin_conv.weight"].shape == (8, 3, 3, 3)
  np.testing.assert_allclose(state_dict["module.sigmas"],
                             np.exp(np.linspace(np.log(5.0), np.log(0.01), 10)), rtol=1e-6)
  assert set(ema) == {k[len("module."):] for k in state_dict if k != "module.sigmas"}


def test_a_truncated_legacy_file_is_one_error(tmp_path):
  data = open(os.path.join(FIXTURES, "ncsn_tiny", "checkpoint.pth"), "rb").read()
  for cut in (10, len(data) // 2, len(data) - 3):
    path = tmp_path / f"cut{cut}.pth"
    path.write_bytes(data[:cut])
    with pytest.raises(torch_pickle.CheckpointFormatError, match=str(path)):
      torch_pickle.load(str(path))


def _copy(tmp_path, name):
  folder = tmp_path / name
  shutil.copytree(os.path.join(FIXTURES, name), folder)
  return folder


def test_the_ladder_and_network_are_checked_against_the_runs_config_yml(tmp_path):
  folder = _copy(tmp_path, "ncsn_tiny")
  config = reduced_config("ncsn_tiny")
  config.model.sigma_max = 50.0
  with pytest.raises(convert.ConversionError,
                     match=r"model.sigma_begin=1.0 in .*config.yml, config.model.sigma_max=50.0"):
    convert.convert_checkpoint(str(folder / "checkpoint.pth"), config)
  config = reduced_config("ncsn_tiny")
  config.model.nf = 16
  with pytest.raises(convert.ConversionError, match=r"model.ngf=8 in .*config.model.nf=16"):
    convert.convert_checkpoint(str(folder / "checkpoint.pth"), config)
  # NCSN's weights hold no ladder: without its config.yml the conversion is refused.
  os.remove(folder / "config.yml")
  with pytest.raises(convert.ConversionError, match="--checkpoint_config"):
    convert.convert_checkpoint(str(folder / "checkpoint.pth"), reduced_config("ncsn_tiny"))
  state, _ = convert.convert_checkpoint(
      str(folder / "checkpoint.pth"), reduced_config("ncsn_tiny"),
      checkpoint_config=os.path.join(FIXTURES, "ncsn_tiny", "config.yml"))
  assert state.params["begin_conv"]["kernel"].shape == (3, 3, 3, 8)


def test_ncsnv2s_sigmas_buffer_is_checked_without_a_config_yml(tmp_path):
  folder = _copy(tmp_path, "ncsnv2_tiny")
  os.remove(folder / "config.yml")
  config = reduced_config("ncsnv2_tiny")
  config.model.num_scales = 11
  with pytest.raises(convert.ConversionError, match=r"'sigmas' buffer: 10 levels, 5 .. 0.01"):
    convert.convert_checkpoint(str(folder / "checkpoint.pth"), config)
  convert.convert_checkpoint(str(folder / "checkpoint.pth"), reduced_config("ncsnv2_tiny"))
  config = reduced_config("ncsnv2_tiny")
  config.training.sde, config.model.scale_by_sigma = "vpsde", False
  with pytest.raises(convert.ConversionError, match="training.sde='vpsde': NCSN / NCSNv2"):
    convert.convert_checkpoint(str(folder / "checkpoint.pth"), config)


def test_a_checkpoint_of_another_layout_lists_what_does_not_match():
  config = reduced_config("ncsnv2_tiny")
  config.model.name = "ncsnv2_128"
  with pytest.raises(convert.ConversionError,
                     match=r"\(104 problems\):\n  module.res3.0.conv2.weight \(16, 16, 3, 3\): no "
                           r"parameter res3_0/conv2/kernel"):
    convert.convert_checkpoint(os.path.join(FIXTURES, "ncsnv2_tiny", "checkpoint.pth"), config)


def test_the_command_line_writes_a_workdir_that_samples(tmp_path):
  """``python -m score_sde_jax.convert`` as a user runs it; the workdir restores."""
  from score_sde_jax import workdir as workdir_lib
  config = reduced_config("ncsnv2_tiny")
  out = convert.convert(os.path.join(FIXTURES, "ncsnv2_tiny", "checkpoint.pth"), config,
                        str(tmp_path / "w"))
  assert os.path.isdir(out)
  run = workdir_lib.load_workdir(str(tmp_path / "w"))
  assert run.step == 1234
  expected = np.load(os.path.join(FIXTURES, "ncsnv2_tiny", "expected.npz"))
  x = jnp.asarray(expected["x"].transpose(0, 2, 3, 1))
  t = run.sde.chain_time(jnp.asarray(expected["labels"]))
  _close(run.score_fn(x, t), expected["ema_network_output"].transpose(0, 2, 3, 1))
  # The config's sampler: annealed Langevin dynamics over the 10 levels (5 steps each), then
  # NCSNv2's denoising step.
  assert (run.experiment.sampling.sampler.predictor, run.experiment.sampling.sampler.corrector) == \
      ("none", "ald")
  samples, nfe = run.sample(jax.random.PRNGKey(0), 4)
  assert nfe == 10 * 5 + 1 and samples.shape == (4, 16, 16, 3)
  assert np.all(np.isfinite(np.asarray(samples)))
