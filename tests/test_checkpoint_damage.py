"""Damaged checkpoints: a step folder that cannot be read back, or whose arrays changed on disk,
is named in one warning line and the previous step is used (train, sample and eval alike);
training moves the damaged folders aside (never deletes them) and writes those steps again."""

import glob
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.toy import gmm_vp
from score_sde_jax import build, checkpoint, parallel
from score_sde_jax import workdir as workdir_lib
from score_sde_jax.checkpoint import IncompatibleCheckpoint
from score_sde_jax.workdir import WorkdirError


def _config(**optim):
  config = gmm_vp.get_config()
  config.model.hidden, config.model.num_layers = 16, 1
  for k, v in optim.items():
    config.optim[k] = v
  return config


def _state(config, shift):
  state = build.experiment(config).init_state(parallel.make_mesh())
  return state.replace(params=jax.tree.map(lambda p: p + shift, state.params),
                       ema_params=jax.tree.map(lambda p: p - shift, state.ema_params))


@pytest.fixture(scope="module")
def template(tmp_path_factory):
  """A workdir with good checkpoints at steps 100 and 200 (different states)."""
  wd = str(tmp_path_factory.mktemp("template") / "wd")
  config = _config()
  manager = workdir_lib.checkpoints(wd, max_to_keep=config.training.max_to_keep,
                                     keep_period=config.training.snapshot_freq)
  states = {s: _state(config, s / 1000) for s in (100, 200)}
  for step, state in states.items():
    checkpoint.save(manager, step, state, config.to_dict(), wait=True)
  return wd, config, {s: jax.device_get(st) for s, st in states.items()}


@pytest.fixture
def wd(template, tmp_path):
  folder = str(tmp_path / "wd")
  shutil.copytree(template[0], folder)
  return folder


def _restore(config, wd, **kw):
  state = build.experiment(config).init_state(parallel.make_mesh())
  return workdir_lib.restore_newest(workdir_lib.checkpoints(wd), state,
                                    experiment=build.experiment(config), **kw)


def _same(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _files(folder):
  return sorted(p for p in glob.glob(os.path.join(folder, "**"), recursive=True)
                if os.path.isfile(p))


def _data_files(step_dir):
  """The array data files of a step's state (orbax's OCDBT data folders)."""
  return [p for p in _files(os.path.join(step_dir, "state")) if f"{os.sep}d{os.sep}" in p]


def _truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _xor(path):
  data = bytearray(open(path, "rb").read())
  for i in range(len(data)):
    data[i] ^= 0x5A
  open(path, "wb").write(bytes(data))


def _damage(step_dir, how):
  state = os.path.join(step_dir, "state")
  if how == "empty folder":
    shutil.rmtree(step_dir)
    os.makedirs(step_dir)
  elif how == "truncated data":
    for p in _data_files(step_dir):
      _truncate(p)
  elif how == "deleted data":
    for p in _data_files(step_dir):
      os.remove(p)
  elif how == "xor data":
    for p in _data_files(step_dir):
      _xor(p)
  elif how == "garbage _METADATA":
    open(os.path.join(state, "_METADATA"), "w").write("{not json")
  elif how == "missing manifest.ocdbt":
    for p in glob.glob(os.path.join(state, "**", "manifest.ocdbt"), recursive=True):
      os.remove(p)
  elif how == "no config item":
    shutil.rmtree(os.path.join(step_dir, "config"))
  elif how == "garbage config":
    for p in _files(os.path.join(step_dir, "config")):
      if not p.endswith(".txt"):
        open(p, "w").write("[1, 2")
  else:
    raise AssertionError(how)


SCENARIOS = ["empty folder", "truncated data", "deleted data", "xor data", "garbage _METADATA",
             "missing manifest.ocdbt", "no config item", "garbage config"]


@pytest.mark.parametrize("how", SCENARIOS)
def test_a_damaged_newest_step_falls_back_to_the_previous_one(template, wd, how, capsys):
  _, config, states = template
  step_dir = os.path.join(wd, "checkpoints", "200")
  _damage(step_dir, how)
  before = _files(wd)
  state, step = _restore(config, wd)
  assert step == 100 and _same(state, states[100])
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1, err
  assert err[0].startswith(f"warning: checkpoint {step_dir} is damaged: "), err
  assert err[0].endswith("; trying the previous step"), err
  assert _files(wd) == before  # reading never changes anything


def test_an_empty_step_folder_newer_than_all_others_is_skipped(template, wd, capsys):
  _, config, states = template
  os.makedirs(os.path.join(wd, "checkpoints", "400"))
  state, step = _restore(config, wd)
  assert step == 200 and _same(state, states[200])
  assert "checkpoints/400 is damaged: it has no 'state' item" in capsys.readouterr().err


@pytest.mark.slow
def test_single_bit_flips_never_restore_changed_values(template, wd):
  """Every flip of one bit in the newest step's array data either restores exactly what was
  saved or falls back to step 100; without the checksums most flips restored changed values."""
  _, config, states = template
  # The arrays are read from state/d/ (state/ocdbt.process_0/ keeps each process's own copy of
  # what was merged there; orbax does not read it back).
  files = glob.glob(os.path.join(wd, "checkpoints", "200", "state", "d", "*"))
  assert files
  rng = np.random.default_rng(0)
  outcomes = []
  for i in range(12):
    path = files[i % len(files)]
    original = open(path, "rb").read()
    data = bytearray(original)
    pos = int(rng.integers(len(data)))
    data[pos] ^= 1 << int(rng.integers(8))
    open(path, "wb").write(bytes(data))
    state, step = _restore(config, wd)
    assert (step == 200 and _same(state, states[200])) or (step == 100 and _same(state, states[100]))
    outcomes.append(step)
    open(path, "wb").write(original)
  assert outcomes.count(100) >= 10, outcomes  # measured: 12 of 12 detected


def test_every_step_damaged_is_one_error_and_nothing_moves(template, wd):
  _, config, _ = template
  for step in (100, 200):
    _damage(os.path.join(wd, "checkpoints", str(step)), "xor data")
  before = _files(wd)
  with pytest.raises(WorkdirError, match=r"no readable checkpoint in .*checkpoints: all 2 step "
                     r"folders are damaged .*move them elsewhere to start afresh"):
    _restore(config, wd, move_damaged=True)
  assert _files(wd) == before


def test_training_moves_damaged_steps_aside_and_writes_them_again(template, wd, capsys):
  _, config, states = template
  step_dir = os.path.join(wd, "checkpoints", "200")
  _damage(step_dir, "truncated data")
  damaged_files = {os.path.relpath(p, step_dir): open(p, "rb").read() for p in _files(step_dir)}
  state, step = _restore(config, wd, move_damaged=True)
  assert step == 100 and _same(state, states[100])
  moved = step_dir + ".damaged"
  assert {os.path.relpath(p, moved): open(p, "rb").read() for p in _files(moved)} == damaged_files
  err = capsys.readouterr().err
  assert f"{step_dir} moved to {moved}" in err
  manager = workdir_lib.checkpoints(wd, max_to_keep=config.training.max_to_keep,
                                     keep_period=config.training.snapshot_freq)
  assert manager.all_steps() == [100]
  checkpoint.save(manager, 200, jax.device_put(states[200]), config.to_dict(), wait=True)
  state, step = _restore(config, wd)
  assert step == 200 and _same(state, states[200])


def test_load_workdir_falls_back_too(template, wd, capsys):
  """What --mode sample and --mode eval read."""
  _, config, states = template
  _damage(os.path.join(wd, "checkpoints", "200"), "xor data")
  run = workdir_lib.load_workdir(wd)
  assert run.step == 100 and _same(run.state, states[100])
  assert "checkpoints/200 is damaged" in capsys.readouterr().err


def test_checksums_are_modular_sums_of_the_words():
  """The oracle: numpy's uint64 sums of the uint32 words, reduced modulo 2^32."""
  rng = np.random.default_rng(1)
  tree = {"f": rng.standard_normal(1001).astype(np.float32),
          "i": rng.integers(-2**31, 2**31, (7, 3)).astype(np.int32),
          "h": rng.standard_normal(5).astype(np.float16),
          "b": np.array([True, False, True])}
  sums = checkpoint.checksums(jax.tree.map(jnp.asarray, tree))

  def oracle(x):
    w = (x.view(np.uint32) if x.dtype.itemsize == 4 else
         x.view(np.uint16).astype(np.uint32) if x.dtype.itemsize == 2 else
         x.astype(np.uint32)).ravel().astype(np.uint64)
    i = np.arange(1, w.size + 1, dtype=np.uint64)
    return [int(w.sum() % 2**32), int(((w * i) % 2**32).sum() % 2**32)]

  assert sums == {f"['{k}']": oracle(v) for k, v in tree.items()}
  flipped = dict(tree, f=tree["f"].copy())
  flipped["f"].view(np.uint32)[500] ^= 1 << 31
  assert checkpoint.checksums(jax.tree.map(jnp.asarray, flipped))["['f']"][0] != sums["['f']"][0]


def test_the_optimizers_structure_is_part_of_the_compatibility_check(template, wd):
  _, config, states = template
  with pytest.raises(IncompatibleCheckpoint, match=r"config.optim.grad_clip=-1.0 \(clipping off\): "
                     r"the checkpoint in .* was written with optim.grad_clip=1.0 \(clipping on\)"):
    _restore(_config(grad_clip=-1.0), wd)
  with pytest.raises(IncompatibleCheckpoint, match=r"config.optim.weight_decay=0.01 \(AdamW\)"):
    _restore(_config(weight_decay=0.01), wd)
  state, step = _restore(_config(grad_clip=0.5), wd)  # another clipping value: same structure
  assert step == 200 and _same(state, states[200])
  # Sampling and evaluation restore the optimizer state as saved, whatever this config says.
  run = workdir_lib.load_workdir(wd, _config(grad_clip=-1.0, weight_decay=0.01))
  assert run.step == 200 and _same(run.state, states[200])
