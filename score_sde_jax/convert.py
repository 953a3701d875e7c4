"""Converts the paper's released PyTorch checkpoints, and NCSN's and NCSNv2's, into this
library's workdirs.

    python -m score_sde_jax.convert --checkpoint checkpoint_26.pth \\
        --config configs/ve/cifar10_ncsnpp_continuous.py --workdir workdirs/ve_cifar10
    python -m score_sde_jax.convert --checkpoint cifar10/checkpoint_300000.pth \\
        --config configs/ve/ncsnv2/cifar10.py --workdir workdirs/ncsnv2_cifar10

NCSN / NCSNv2 checkpoints (``ermongroup/ncsn``, ``ermongroup/ncsnv2``): see
``score_sde_jax.convert_refinenet``; the rest of this docstring is about the paper's.

A released checkpoint (``score_sde_pytorch``'s ``utils.save_checkpoint``) is a
dict with ``model`` (state dict, keys prefixed ``module.``), ``ema``
(``shadow_params``: a list ordered like the trainable parameters), ``optimizer``
and ``step``. Every tensor is mapped onto the Flax parameter tree of the
network the config builds (``module.all_modules.<i>.<sub>.<name>`` ->
``all_modules_<i>/<sub>/<name>``; OIHW -> HWIO, Linear (out, in) -> (in, out),
GroupNorm ``weight`` -> ``scale``), and the conversion is strict: every
tensor used exactly once with the right shape and every Flax parameter filled,
or one error listing what did not match. The result is an orbax checkpoint
(model weights as ``params``, EMA weights as ``ema_params``, a fresh optimizer
state) that ``run.py`` restores like any trained workdir. The file is read
without PyTorch (``score_sde_jax.torch_pickle``). Nothing is written unless
the whole conversion succeeds, and an existing checkpoint is never overwritten.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from score_sde_jax import build, checkpoint, models, torch_pickle, train
from score_sde_jax import convert_refinenet as refinenet
from score_sde_jax import state_dict as state_dict_lib
from score_sde_jax import workdir as workdir_lib
from score_sde_jax.experiment import Experiment
from score_sde_jax.torch_pickle import CheckpointFormatError

_KEY = re.compile(r"^module\.all_modules\.(\d+)\.(.+)$")
_BUFFERS = ("module.sigmas",)
_FROZEN = ("module.all_modules.0.W",)  # the Gaussian Fourier projection: no gradient, not in the EMA


class ConversionError(ValueError):
  """The checkpoint does not fit the network the config builds."""


def _flax_path_and_array(key: str, value: np.ndarray):
  match = _KEY.match(key)
  if match is None:
    raise ConversionError(f"unexpected state-dict key {key!r} (expected 'module.all_modules.<i>....')")
  index, rest = match.groups()
  parts = [f"all_modules_{index}"] + rest.split(".")
  name = parts[-1]
  if name == "weight":
    if value.ndim == 4:
      parts[-1], value = "kernel", value.transpose(2, 3, 1, 0)   # OIHW -> HWIO
    elif value.ndim == 2:
      parts[-1], value = "kernel", value.T                      # Linear (out, in) -> (in, out)
    elif value.ndim == 1:
      parts[-1] = "scale"                                       # GroupNorm
  return tuple(parts), np.ascontiguousarray(value, dtype=np.float32)


def trainable_keys(state_dict) -> list[str]:
  """State-dict keys in the order of ``ema['shadow_params']``: no buffers, no frozen tensors."""
  return [k for k in state_dict if k not in _BUFFERS and k not in _FROZEN]


def map_state_dict(state_dict: dict, expected: dict) -> dict:
  """Flax ``params`` (nested dict) from a PyTorch state dict, strictly.

  ``expected`` maps flattened Flax paths to shapes. Raises
  :class:`ConversionError` listing unused tensors, shape mismatches and
  unfilled parameters.
  """
  flat = state_dict_lib.match(state_dict, expected, _flax_path_and_array, what="checkpoint",
                              error=ConversionError, skip=lambda key: key in _BUFFERS)
  return traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()})


def _expected_shapes(model):
  shape = model.data_shape
  params = models.param_shapes(model.network, jax.ShapeDtypeStruct((1,) + shape, jnp.float32),
                               jax.ShapeDtypeStruct((1,), jnp.float32))
  return {k: v.shape for k, v in traverse_util.flatten_dict(params).items()}


def read_paper_checkpoint(path: str) -> dict:
  """The released checkpoint dict, with its layout checked."""
  ckpt = torch_pickle.load(path)
  if not isinstance(ckpt, dict) or not {"model", "ema", "step"} <= set(ckpt):
    keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
    raise CheckpointFormatError(f"{path}: expected a dict with 'model', 'ema', 'step' (and "
                                f"'optimizer'), found {keys}")
  ema = ckpt["ema"]
  if not isinstance(ema, dict) or "shadow_params" not in ema:
    raise CheckpointFormatError(f"{path}: 'ema' has no 'shadow_params'")
  return ckpt


def _experiment(config) -> Experiment:
  return config if isinstance(config, Experiment) else build.experiment(config, scope="network")


def _refinenet_fields(exp) -> dict:
  """The run's values that an NCSN / NCSNv2 checkpoint must agree with, by config name."""
  net, sde = exp.model.network, exp.model.sde
  if exp.model.sde_name != "vesde":
    raise ConversionError(f"config.training.sde={exp.model.sde_name!r}: NCSN / NCSNv2 checkpoints "
                          f"are models of NCSN's noise levels, a VE SDE ('vesde')")
  return {"model.nf": net.nf, "model.num_scales": sde.N, "model.sigma_max": sde.sigma_max,
          "model.sigma_min": sde.sigma_min, "data.num_channels": net.num_channels,
          "data.image_size": exp.model.data_shape[0], "model.normalization": net.normalization,
          "model.nonlinearity": net.activation, "data.centered": net.centered}


def _convert_refinenet(path: str, exp, expected, checkpoint_config):
  obj = torch_pickle.load(path)
  state_dict, ema, step = refinenet.split_checkpoint(obj, path)
  ours = _refinenet_fields(exp)
  run_config = refinenet.find_run_config(path, checkpoint_config)
  if run_config is not None:
    refinenet.check_against_run_config(refinenet.read_run_config(run_config), ours, run_config)
  elif not any(refinenet.flax_path(k) == ("sigmas",) for k in state_dict):
    raise ConversionError(f"{path}: an NCSN checkpoint holds no noise levels; give the run's "
                          f"config.yml (--checkpoint_config), or put it beside the checkpoint, so "
                          f"that its sigma_begin, sigma_end and num_classes can be checked against "
                          f"the config's model.sigma_max, sigma_min and num_scales")
  refinenet.check_sigmas_buffer(state_dict, ours)
  params = refinenet.map_state_dict(state_dict, expected, "checkpoint's state dict")
  ema_params = (params if ema is None
                else refinenet.map_state_dict(ema, expected, "checkpoint's EMA shadow"))
  def unflatten(flat):
    return traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()})
  return unflatten(params), unflatten(ema_params), int(step)


def convert_checkpoint(path: str, config, checkpoint_config: str | None = None):
  """``(TrainState, step)`` from a released checkpoint, for the network that ``config`` (a
  config, or an :class:`~score_sde_jax.experiment.Experiment`) describes: the paper's
  (``score_sde_pytorch``), or NCSN's / NCSNv2's (``ermongroup``) for their networks, checked
  against ``checkpoint_config`` (their run's ``config.yml``; default: the one beside ``path``)."""
  exp = _experiment(config)
  expected = _expected_shapes(exp.model)
  if isinstance(exp.model.network, (models.NCSN, models.NCSNv2)):
    try:
      params, ema_params, step = _convert_refinenet(path, exp, expected, checkpoint_config)
    except refinenet.RefineNetConversionError as e:
      raise ConversionError(str(e)) from None
    return _state(exp, params, ema_params, step), step
  ckpt = read_paper_checkpoint(path)
  state_dict = ckpt["model"]
  params = map_state_dict(state_dict, expected)

  keys = trainable_keys(state_dict)
  shadow = list(ckpt["ema"]["shadow_params"])
  if len(shadow) != len(keys):
    raise ConversionError(f"ema.shadow_params has {len(shadow)} tensors, the model has {len(keys)} "
                          f"trainable ones: checkpoint and config do not match")
  ema_dict = dict(state_dict)
  for key, value in zip(keys, shadow):
    if tuple(np.shape(value)) != tuple(np.shape(state_dict[key])):
      raise ConversionError(f"ema.shadow_params entry for {key}: shape {np.shape(value)}, the "
                            f"model tensor has {np.shape(state_dict[key])}")
    ema_dict[key] = value  # frozen tensors (the Fourier W) keep the model's value, as ema.copy_to
  ema_params = map_state_dict(ema_dict, expected)

  step = int(ckpt["step"])
  return _state(exp, params, ema_params, step), step


def _state(exp, params, ema_params, step):
  optimizer = exp.part("optimizer").make()
  return train.TrainState(step=jnp.asarray(step, jnp.int32), params=params, ema_params=ema_params,
                          opt_state=optimizer.init(params), key=jax.random.PRNGKey(exp.seed))


def convert(path: str, config, workdir: str, checkpoint_config: str | None = None) -> str:
  """Converts ``path`` into an orbax checkpoint in ``workdir/checkpoints``; returns that folder.

  Refuses a workdir that already holds a checkpoint; writes nothing on any error.
  """
  workdir = workdir_lib.check_workdir(workdir)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if os.path.exists(ckpt_dir) and not (os.path.isdir(ckpt_dir) and not os.listdir(ckpt_dir)):
    raise workdir_lib.WorkdirError(f"--workdir={workdir!r}: already holds checkpoints in "
                                   f"{ckpt_dir}; use a new workdir")
  exp = _experiment(config)
  state, step = convert_checkpoint(path, exp, checkpoint_config)
  check_finite(state)
  os.makedirs(workdir, exist_ok=True)
  # Written into a temporary folder renamed at the end: a conversion killed mid-write leaves
  # only that folder (removed by the next conversion), never a half-written checkpoints/.
  for stale in glob.glob(os.path.join(workdir, ".checkpoints.converting-*")):
    shutil.rmtree(stale, ignore_errors=True)
  tmp_dir = tempfile.mkdtemp(prefix=".checkpoints.converting-", dir=workdir)
  try:
    manager = checkpoint.make_manager(tmp_dir)
    checkpoint.save(manager, step, state, dict(exp.record), wait=True)
    manager.close()
    os.replace(tmp_dir, ckpt_dir)   # onto nothing, or onto the empty folder checked above
  except BaseException:
    shutil.rmtree(tmp_dir, ignore_errors=True)
    raise
  workdir_lib.write_json(os.path.join(workdir, "config.json"), dict(exp.record))
  return ckpt_dir


def check_finite(state) -> None:
  """Refuses weights with NaN or infinite values (a damaged or diverged checkpoint), naming the
  parameters: they would sample NaN images without a word."""
  bad = []
  for tree, name in ((state.params, "params"), (state.ema_params, "ema_params")):
    for path, leaf in traverse_util.flatten_dict(tree).items():
      n = int(np.size(leaf) - np.count_nonzero(np.isfinite(np.asarray(leaf))))
      if n:
        bad.append(f"  {name}/{'/'.join(path)}: {n} of {np.size(leaf)} values not finite")
  if bad:
    shown = bad[:10] + ([f"  ... and {len(bad) - 10} more"] if len(bad) > 10 else [])
    raise ConversionError("the checkpoint holds NaN or infinite weights (damaged, or saved after "
                          "training diverged); nothing written:\n" + "\n".join(shown))


def main(argv):
  from absl import flags
  del argv
  FLAGS = flags.FLAGS
  try:
    out = convert(FLAGS.checkpoint, FLAGS.config, FLAGS.workdir, FLAGS.checkpoint_config)
  except (CheckpointFormatError, ConversionError, build.ConfigError, workdir_lib.WorkdirError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except Exception as e:  # noqa: BLE001 (file-system errors are one line, others raise)
    from score_sde_jax import cli
    cli.exit_on_os_error(e)
    raise
  print(f"converted {FLAGS.checkpoint} -> {out}")


if __name__ == "__main__":
  from absl import app, flags
  from absl import logging as absl_logging
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "Config of the network the checkpoint holds.")
  flags.DEFINE_string("checkpoint", None, "The released .pth file.")
  flags.DEFINE_string("workdir", None, "New workdir for the converted checkpoint.")
  flags.DEFINE_string("checkpoint_config", None, "NCSN / NCSNv2 checkpoints: the run's config.yml "
                      "(default: the one beside --checkpoint).")
  flags.mark_flags_as_required(["config", "checkpoint", "workdir"])
  absl_logging.set_verbosity(absl_logging.WARNING)
  from score_sde_jax import cli
  app.run(main, flags_parser=cli.parse_flags)
