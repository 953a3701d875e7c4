"""Checkpoints: exact round trip, resume after SIGKILL, refusal of incompatible configs, NaN stop."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs.toy import gmm_vp
from score_sde_jax.metric_writer import read_metrics
from score_sde_jax import build, checkpoint, parallel
from score_sde_jax import workdir as workdir_lib

TINY = ["--config.model.hidden=16", "--config.model.num_layers=1", "--config.training.batch_size=32",
        "--config.training.n_jitted_steps=10", "--config.training.log_freq=50",
        "--config.training.eval_freq=500", "--config.training.snapshot_freq_for_preemption=100",
        "--config.training.snapshot_freq=1000", "--config.eval.batch_size=64",
        "--config.eval.num_batches=1"]


def _run(root, workdir, *extra, wait=True):
  cmd = [sys.executable, os.path.join(root, "run.py"), "--config",
         os.path.join(root, "configs", "toy", "gmm_vp.py"), f"--workdir={workdir}", *TINY, *extra]
  env = dict(os.environ, TQDM_DISABLE="1", MPLBACKEND="Agg")
  proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  if not wait:
    return proc
  out, err = proc.communicate(timeout=300)
  return proc.returncode, out, err


def _tiny_config(**training):
  config = gmm_vp.get_config()
  for arg in TINY:
    path, value = arg[len("--config."):].split("=")
    section, field = path.split(".")
    config[section][field] = type(config[section][field])(value)
  for k, v in training.items():
    config.training[k] = v
  return config


def _restore(config, workdir):
  state = build.experiment(config).init_state(parallel.make_mesh())
  return workdir_lib.restore_newest(workdir_lib.checkpoints(workdir), state,
                                    experiment=build.experiment(config))


def _assert_same_state(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_exact(tmp_path):
  config = _tiny_config()
  state = build.experiment(config).init_state(parallel.make_mesh())
  state = state.replace(key=jax.random.PRNGKey(123),
                        params=jax.tree.map(lambda p: p + 0.1234567, state.params))
  manager = checkpoint.make_manager(str(tmp_path / "checkpoints"))
  checkpoint.save(manager, 7, state, config.to_dict(), wait=True)
  restored, step = workdir_lib.restore_newest(workdir_lib.checkpoints(str(tmp_path)), state,
                                              experiment=build.experiment(config))
  assert step == 7
  _assert_same_state(restored, state)
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  assert checkpoint.read_config(manager, 7)["model"]["hidden"] == 16


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_final_state(tmp_path, root):
  n_iters = "--config.training.n_iters=3000"
  code, _, err = _run(root, tmp_path / "straight", n_iters)
  assert code == 0, err

  proc = _run(root, tmp_path / "killed", n_iters, wait=False)
  ckpt_dir = tmp_path / "killed" / "checkpoints"
  deadline = time.time() + 240
  while time.time() < deadline:
    steps = [int(d) for d in os.listdir(ckpt_dir) if d.isdigit()] if ckpt_dir.exists() else []
    if steps and max(steps) >= 300:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  killed_at = max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  assert killed_at < 3000, "the run finished before it could be killed"

  code, out, err = _run(root, tmp_path / "killed", n_iters)
  assert code == 0, err
  assert "resuming from step" in out

  config = _tiny_config(n_iters=3000)
  straight, s1 = _restore(config, str(tmp_path / "straight"))
  resumed, s2 = _restore(config, str(tmp_path / "killed"))
  assert s1 == s2 == 3000
  _assert_same_state(resumed, straight)
  # metrics.jsonl has each logged step once, as an uninterrupted run would.
  rows = read_metrics(str(tmp_path / "killed" / "metrics.jsonl"))
  steps = [r["step"] for r in rows if "loss" in r]
  assert steps == list(range(50, 3001, 50))


@pytest.mark.slow
def test_ten_random_sigkills_and_sigterms_resume_bit_identically(tmp_path, root):
  """The kill/resume property with both signals: ten interruptions at random moments (SIGKILL
  and SIGTERM alternating), each followed by the same command; the final state equals an
  uninterrupted run's bit for bit, and metrics.jsonl has each logged step once."""
  n_iters = "--config.training.n_iters=1500"
  code, _, err = _run(root, tmp_path / "straight", n_iters)
  assert code == 0, err
  rng = np.random.default_rng(0)
  wd = tmp_path / "killed"
  for i in range(10):
    proc = _run(root, wd, n_iters, wait=False)
    time.sleep(float(rng.uniform(3.0, 9.0)))   # start-up and compiling take about 3 s
    proc.send_signal(signal.SIGKILL if i % 2 == 0 else signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (-signal.SIGKILL, 143, 0), (proc.returncode, err)
    if proc.returncode == 143:
      assert "Traceback" not in err and "terminated (SIGTERM)" in err, err
  code, _, err = _run(root, wd, n_iters)
  assert code == 0, err
  config = _tiny_config(n_iters=1500)
  straight, s1 = _restore(config, str(tmp_path / "straight"))
  resumed, s2 = _restore(config, str(wd))
  assert s1 == s2 == 1500
  _assert_same_state(resumed, straight)
  steps = [r["step"] for r in read_metrics(str(wd / "metrics.jsonl")) if "loss" in r]
  assert steps == list(range(50, 1501, 50))


@pytest.mark.slow
@pytest.mark.parametrize("sig,code,prefix", [(signal.SIGINT, 130, "interrupted: "),
                                             (signal.SIGTERM, 143, "terminated (SIGTERM); ")],
                         ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_is_one_line_naming_the_checkpoint_to_resume_from(tmp_path, root, sig, code,
                                                                 prefix):
  """SIGINT (Ctrl-C) during training: exit code 130 and one line naming the newest checkpoint,
  not a KeyboardInterrupt traceback. SIGTERM (schedulers, docker stop) the same way, exit 143
  (it used to exit 143 at once, abandoning the checkpoint write in progress); the run resumes."""
  proc = _run(root, tmp_path / "wd", "--config.training.n_iters=100000", wait=False)
  ckpt_dir = tmp_path / "wd" / "checkpoints"
  deadline = time.time() + 240
  while time.time() < deadline:
    if ckpt_dir.exists() and any(d.isdigit() for d in os.listdir(ckpt_dir)):
      break
    time.sleep(0.05)
  time.sleep(0.5)
  proc.send_signal(sig)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == code, err
  assert "Traceback" not in err, err
  last = err.strip().splitlines()[-1]
  assert last.startswith(f"{prefix}the newest checkpoint is {ckpt_dir}/"), last
  assert last.endswith("; the same command resumes from it")
  step = int(last.split(f"{ckpt_dir}/")[1].split(";")[0])
  _, restored_step = _restore(_tiny_config(n_iters=100000), str(tmp_path / "wd"))
  assert restored_step == step


@pytest.mark.slow
def test_incompatible_checkpoint_and_nan_loss(tmp_path, root):
  wd = tmp_path / "wd"
  code, _, err = _run(root, wd, "--config.training.n_iters=200")
  assert code == 0, err
  config = _tiny_config(n_iters=200)
  before, step = _restore(config, str(wd))
  assert step == 200

  # A different network cannot resume from this checkpoint: clear error, nothing touched.
  code, _, err = _run(root, wd, "--config.training.n_iters=400", "--config.model.hidden=32")
  assert code == 2
  assert "config.model.hidden=32" in err and "hidden=16" in err

  # A learning rate that blows up the parameters stops training; the last good checkpoint stays.
  code, _, err = _run(root, wd, "--config.training.n_iters=400", "--config.optim.lr=1e30",
                      "--config.optim.warmup=0")
  assert code == 2 and "not finite" in err, err
  assert "The last good checkpoint (step 200)" in err, err
  after, step = _restore(config, str(wd))
  assert step == 200
  _assert_same_state(after, before)

  # The same from scratch: the message says that there is no checkpoint (it said "step None").
  code, _, err = _run(root, tmp_path / "fresh", "--config.training.n_iters=400",
                      "--config.optim.lr=1e30", "--config.optim.warmup=0")
  assert code == 2 and "No checkpoint was written yet" in err and "None" not in err, err


def test_ctrl_c_line_is_in_the_modes_terms(tmp_path):
  """Training names where a rerun resumes; sampling and evaluating say that nothing was written
  and the checkpoints are untouched (not training's "resumes from")."""
  import run
  wd = str(tmp_path / "wd")
  line = run.interrupted_line("sample", False, wd)
  assert line == (f"interrupted: --mode sample stopped before writing its results (they are "
                  f"written when it completes); the checkpoints in {wd}/checkpoints are untouched: "
                  f"run the same command again to start it over")
  assert run.interrupted_line("train", True, wd) == f"interrupted: no checkpoint in {wd}/checkpoints yet"


def test_an_incompatible_checkpoint_names_the_decisive_difference_first():
  """Another SDE or network changes many fields; the error names the SDE or network (not
  model.beta_max or data.centered, which come first in the alphabet and cannot help), then counts
  the rest."""
  from configs import default_toy
  from configs.digits import ddpmpp_vp
  from configs.toy import gmm_ve
  view = lambda config: build.compat.views(config.to_dict()).model
  vp = default_toy.get_config()
  with pytest.raises(checkpoint.IncompatibleCheckpoint) as e:
    checkpoint.check_compatible(view(vp), view(gmm_ve.get_config()), "W")
  message = str(e.value)
  assert message.startswith("config.training.sde='vesde': the checkpoint in W was written with "
                            "training.sde='vpsde' (another SDE; "), message
  assert "more fields differ: " in message and message.endswith("; use that value or a new workdir")
  with pytest.raises(checkpoint.IncompatibleCheckpoint) as e:
    checkpoint.check_compatible(view(vp), view(ddpmpp_vp.get_config()), "W")
  assert str(e.value).startswith("config.model.name='ncsnpp': the checkpoint in W was written "
                                 "with model.name='mlp' (another network; "), str(e.value)
  # One field alone: named without a count.
  other = default_toy.get_config()
  other.model.hidden = 32
  with pytest.raises(checkpoint.IncompatibleCheckpoint) as e:
    checkpoint.check_compatible(view(vp), view(other), "W")
  assert str(e.value) == ("config.model.hidden=32: the checkpoint in W was written with "
                          "model.hidden=256; use that value or a new workdir")


def test_a_config_with_tuples_resumes_from_its_json_copy():
  """Configs hold tuples (ch_mult, attn_resolutions); the checkpoint's JSON copy holds lists."""
  import json
  from configs.digits import ddpmpp_vp
  config = ddpmpp_vp.get_config()
  saved = json.loads(json.dumps(config.to_dict()))
  assert saved["model"]["ch_mult"] == [1, 2]
  view = lambda d: build.compat.views(d).model
  checkpoint.check_compatible(view(saved), view(config.to_dict()), "here")  # no error
  config.model.ch_mult = (1, 2, 2)
  with pytest.raises(checkpoint.IncompatibleCheckpoint, match="model.ch_mult"):
    checkpoint.check_compatible(view(saved), view(config.to_dict()), "here")
