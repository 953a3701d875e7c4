"""One trainer per workdir: a second one is refused with the holder's pid and host, a lock left
by a killed run is taken over, and the refused run changes nothing."""

import glob
import os
import signal
import socket
import subprocess
import sys

import pytest

from score_sde_jax import workdir as workdir_lib
from score_sde_jax.workdir import WorkdirLocked

HOLD = """
import sys, time
from score_sde_jax import workdir
with workdir.lock(sys.argv[1]):
  print("held", flush=True)
  time.sleep(600)
"""


def _holder(folder, root):
  proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=root,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "held", proc.stderr.read()
  return proc


def _snapshot(folder):
  return {p: open(p, "rb").read() for p in glob.glob(os.path.join(folder, "**"), recursive=True)
          if os.path.isfile(p)}


def test_a_second_trainer_is_refused_and_a_killed_ones_lock_is_taken_over(tmp_path, root, capsys):
  proc = _holder(tmp_path, root)
  try:
    with pytest.raises(WorkdirLocked) as e:
      with workdir_lib.lock(str(tmp_path)):
        pass
    message = str(e.value)
    assert f"process {proc.pid} on host {socket.gethostname()}" in message, message
    assert "is training in it" in message and "use another workdir" in message
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  # The kernel released the killed holder's lock; its file still names it.
  with workdir_lib.lock(str(tmp_path)):
    err = capsys.readouterr().err
    assert f"was left by process {proc.pid} on host" in err and "taking it over" in err, err
    assert f'"pid": {os.getpid()}' in open(tmp_path / workdir_lib.LOCK_FILE).read()
  # A clean exit leaves an empty file: the next run has nothing to take over.
  assert open(tmp_path / workdir_lib.LOCK_FILE).read() == ""
  with workdir_lib.lock(str(tmp_path)):
    pass
  assert capsys.readouterr().err == ""


def test_run_py_on_a_locked_workdir_is_one_line_and_touches_nothing(tmp_path, root):
  wd = tmp_path / "wd"
  wd.mkdir()
  (wd / "metrics.jsonl").write_text('{"step": 100, "loss": 1.0}\n')
  proc = _holder(wd, root)
  try:
    before = _snapshot(str(wd))
    out = subprocess.run(
        [sys.executable, os.path.join(root, "run.py"), "--config",
         os.path.join(root, "configs", "toy", "gmm_vp.py"), f"--workdir={wd}",
         "--config.training.n_iters=100"],
        cwd=root, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TQDM_DISABLE="1", MPLBACKEND="Agg"))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: workdir='{wd}': process {proc.pid} "), lines
    assert _snapshot(str(wd)) == before
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
