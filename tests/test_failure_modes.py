"""Rows of the README's failure-mode table that no other test file covers: each bad input is one
clear line (or a warning and a safe fallback) and leaves what was written intact."""

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
from collections import namedtuple

import numpy as np
import pytest

from configs.toy import gmm_vp
from score_sde_jax import build, checkpoint, modes, parallel
from score_sde_jax import workdir as workdir_lib
from score_sde_jax.data import DataError, cifar10, images as image_data
from score_sde_jax.metric_writer import read_metrics
from score_sde_jax.modes.train import resume

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(n_iters=20, **data):
  config = gmm_vp.get_config()
  config.model.hidden, config.model.num_layers = 16, 1
  t = config.training
  t.batch_size, t.n_iters, t.n_jitted_steps, t.log_freq = 32, n_iters, 10, 10
  t.snapshot_freq_for_preemption, t.snapshot_freq = 10, 1000
  config.eval.num_batches = 1
  config.eval.batch_size = 32
  config.eval.figures = False   # figures: tests/test_train.py, tests/test_workdir.py
  for k, v in data.items():
    config.data[k] = v
  return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("fm") / "wd")
  modes.run("train", _config(), wd)
  return wd


def _resume(config, wd):
  state = build.experiment(config).init_state(parallel.make_mesh())
  manager = workdir_lib.checkpoints(wd, max_to_keep=config.training.max_to_keep,
                                     keep_period=config.training.snapshot_freq)
  return resume(build.experiment(config), wd, manager, state, parallel.make_mesh())


@pytest.mark.slow
def test_resuming_on_another_data_set_is_refused_unless_allowed(trained, tmp_path):
  wd = str(tmp_path / "wd")
  shutil.copytree(trained, wd)
  with pytest.raises(checkpoint.IncompatibleCheckpoint) as e:
    _resume(_config(dataset="moons"), wd)
  assert str(e.value) == (
      f"config.data.dataset='moons': the checkpoint in {wd}/checkpoints was written with "
      f"data.dataset='gmm' (another data set); use that value or a new workdir (or "
      f"--config.training.resume_new_data=True to continue on the new data)")
  config = _config(dataset="moons")
  config.training.resume_new_data = True
  _, step = _resume(config, wd)
  assert step == 20


@pytest.mark.slow
def test_a_kill_before_the_first_checkpoint_leaves_no_duplicate_step_0_rows(tmp_path):
  """A run killed before its first checkpoint left its step-0 rows; the rerun starts from scratch
  and writes them again: they are dropped first (there were two step-0 rows)."""
  wd = str(tmp_path / "wd")
  os.makedirs(wd)
  with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
    f.write('{"step": 0, "eval_loss_exact_score": 1.0}\n{"step": 10, "loss": 2.0}\n')
  modes.run("train", _config(), wd)
  rows = read_metrics(os.path.join(wd, "metrics.jsonl"))
  assert [r["step"] for r in rows].count(0) == 1
  assert [r["step"] for r in rows if "loss" in r] == [10, 20]


def _fill_the_disk(monkeypatch):
  usage = namedtuple("usage", "total used free")
  monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 1000, 1000))
  return pytest.raises(checkpoint.NotEnoughSpace, match=r"no space for a checkpoint in .*checkpoints: "
                       r"it takes about \d+\.\d MiB and 0\.0 MiB are free; free some space")


def test_a_full_disk_is_one_line_before_anything_compiles(tmp_path, monkeypatch):
  wd = str(tmp_path / "wd")
  with _fill_the_disk(monkeypatch):
    modes.run("train", _config(n_iters=40), wd)
  assert not os.path.exists(os.path.join(wd, "checkpoints")) or not os.listdir(
      os.path.join(wd, "checkpoints"))


@pytest.mark.slow
def test_a_full_disk_leaves_the_checkpoints_of_a_resumed_run_as_they_were(trained, tmp_path,
                                                                          monkeypatch):
  wd = str(tmp_path / "wd")
  shutil.copytree(trained, wd)
  before = sorted(os.listdir(os.path.join(wd, "checkpoints")))
  with _fill_the_disk(monkeypatch):
    modes.run("train", _config(n_iters=40), wd)
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == before


def test_an_unwritable_workdir_is_one_line(tmp_path, monkeypatch):
  """As root (CI containers) permissions do not apply, so ``os.access`` is what is faked."""
  monkeypatch.setattr(workdir_lib.folders.os, "access", lambda *a: False)
  with pytest.raises(workdir_lib.WorkdirError, match=r"workdir='.*/wd': cannot write in '.*' "
                     r"\((permission denied|read-only file system)\); give a folder you can write"):
    workdir_lib.check_writable(str(tmp_path / "wd"))


class _Evil:
  def __reduce__(self):
    return (os.system, ("echo pwned",))


def test_a_crafted_cifar_batch_is_refused_naming_the_file(tmp_path):
  payload = pickle.dumps({b"data": _Evil()})
  archive = tmp_path / "cifar-10-python.tar.gz"
  with tarfile.open(archive, "w:gz") as tar:
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
      info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
      info.size = len(payload)
      tar.addfile(info, io.BytesIO(payload))
  with pytest.raises(DataError, match=r"cifar-10-python.tar.gz:data_batch_1: "
                     r"refusing to load global (posix|os|nt)\.system"):
    cifar10.cifar10(str(archive))


def test_negative_seed_is_refused_before_a_workdir_is_made(tmp_path):
  config = _config()
  config.seed = -1
  with pytest.raises(build.ConfigError, match=r"config.seed=-1: expected an integer in \[0, 2\^32\)"):
    modes.run("train", config, str(tmp_path / "wd"))
  assert not (tmp_path / "wd").exists()


def test_run_py_reports_a_file_system_error_in_one_line(tmp_path):
  """An OSError from deep inside (here: the workdir's metrics file is a folder) is one line."""
  wd = tmp_path / "wd"
  (wd / "config.json").mkdir(parents=True)
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "run.py"), "--config",
       os.path.join(ROOT, "configs", "toy", "gmm_vp.py"), f"--workdir={wd}",
       "--config.training.n_iters=10", "--config.training.n_jitted_steps=10"],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TQDM_DISABLE="1", MPLBACKEND="Agg"))
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 1 and len(lines) == 1, out.stderr
  assert lines[0].startswith("error: Is a directory") or "config.json" in lines[0], lines


class _Touch:
  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (os.system, (f"touch {self.path}",))


def test_a_code_executing_pth_is_refused_and_runs_nothing(tmp_path):
  import zipfile
  from score_sde_jax import torch_pickle
  marker = tmp_path / "pwned"
  path = tmp_path / "evil.pth"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", pickle.dumps({"w": _Touch(marker)}, protocol=2))
  with pytest.raises(torch_pickle.CheckpointFormatError,
                     match=r"evil.pth.*refusing to load global (posix|os|nt)\.system: a checkpoint "
                           r"of tensors should not need it"):
    torch_pickle.load(str(path))
  assert not marker.exists()


def test_an_npz_with_several_arrays_names_the_field_to_set(tmp_path):
  path = tmp_path / "two.npz"
  np.savez(path, a=np.zeros((2, 8, 8), np.uint8), b=np.zeros((2, 8, 8), np.uint8))
  with pytest.raises(DataError, match=r"two.npz: holds arrays \['a', 'b'\]; name the one with the "
                     r"images with config.data.npz_key"):
    image_data.ImageArrays.from_npz(str(path), image_size=8, num_channels=1)
  data = image_data.ImageArrays.from_npz(str(path), image_size=8, num_channels=1, key="b")
  assert data.train_levels.shape[1:] == (8, 8, 1)


def test_workdir_flag_mistakes_are_one_line(tmp_path):
  (tmp_path / "file").write_text("x")
  cases = {(): "error: --workdir: required for --mode train",
           (f"--workdir={tmp_path / 'file'}",): f"error: workdir='{tmp_path / 'file'}': exists and "
                                                f"is not a folder"}
  for args, message in cases.items():
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run.py"), "--config",
         os.path.join(ROOT, "configs", "toy", "gmm_vp.py"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stderr.strip() == message, out.stderr


_NO_JAX_PROBE = """
import runpy, sys
sys.argv = ["run.py"] + sys.argv[1:]
try:
  runpy.run_path("run.py", run_name="__main__")
except SystemExit as e:
  print("exit", e.code, "jax" in sys.modules, "flax" in sys.modules)
"""


@pytest.mark.parametrize("args, message", [
    ((), "--workdir: required for --mode train"),
    (("--workdir=/no/such/parent/wd",), "parent folder '/no/such/parent' does not exist"),
    (("--workdir={wd}", "--coordinator_address=localhost", "--num_processes=2",
      "--process_id=0"), "expected host:port"),
    (("--workdir={wd}", "--cpu_devices=-1"), "--cpu_devices='-1': expected a positive number"),
])
def test_flag_and_workdir_mistakes_are_reported_before_jax_is_imported(tmp_path, args, message):
  """run.py checks its flags, workdir and process settings before importing JAX, Flax and the
  modes (seconds of imports), so these mistakes are one line at once."""
  args = [a.format(wd=tmp_path / "wd") for a in args]
  out = subprocess.run([sys.executable, "-c", _NO_JAX_PROBE, "--config",
                        os.path.join(ROOT, "configs", "toy", "gmm_vp.py"), *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.stdout.split() == ["exit", "2", "False", "False"], (out.stdout, out.stderr)
  assert out.stderr.startswith("error: ") and message in out.stderr, out.stderr
  assert not (tmp_path / "wd").exists()


def test_a_wrapped_no_space_error_is_found_and_described():
  """Orbax and tensorstore wrap the OSError of a full disk; run.py reports the one behind."""
  import errno
  from score_sde_jax import cli
  try:
    try:
      raise OSError(errno.ENOSPC, "No space left on device", "/w/checkpoints/400/state/d/x")
    except OSError as inner:
      raise RuntimeError("async save failed") from inner
  except RuntimeError as outer:
    found = cli.os_error_of(outer)
  assert found is not None and found.errno == errno.ENOSPC
  assert cli.describe_os_error(found) == (
      "No space left on device: /w/checkpoints/400/state/d/x; free some space and run the same "
      "command again (training resumes from the newest complete checkpoint)")
  assert cli.os_error_of(ValueError("a bug")) is None


@pytest.mark.slow
def test_cpu_devices_split_the_batch_and_a_bad_count_is_one_line(trained, tmp_path):
  """--cpu_devices=2 makes the CPU two JAX devices and sample mode splits its batches over them
  (the result says how many); a count that is not positive is one line before anything runs."""
  wd = str(tmp_path / "wd")
  shutil.copytree(trained, wd)
  run = [sys.executable, os.path.join(ROOT, "run.py"), "--config",
         os.path.join(ROOT, "configs", "toy", "gmm_vp.py"), f"--workdir={wd}", "--mode=sample",
         "--config.model.hidden=16", "--config.model.num_layers=1", "--config.eval.batch_size=32",
         "--config.eval.num_samples=64", "--nocompilation_cache"]
  out = subprocess.run(run + ["--cpu_devices=2"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, TQDM_DISABLE="1"))
  assert out.returncode == 0, out.stderr
  result = json.loads(out.stdout.splitlines()[0])
  assert result["devices"] == 2 and result["num_samples"] == 64
  out = subprocess.run(run + ["--cpu_devices=0"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 2
  assert out.stderr.strip() == ("error: --cpu_devices='0': expected a positive number of devices "
                                "or 'auto'"), out.stderr
