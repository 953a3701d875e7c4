"""Scale-out: results on a 4-device mesh and across two processes equal those of one device.

Several devices come from ``--xla_force_host_platform_device_count`` in
subprocesses, so the rest of the suite keeps its single CPU device; the two
processes are ``run.py`` started with ``jax.distributed`` on 127.0.0.1.
"""

import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import default_toy
from score_sde_jax import build, checkpoint, modes, parallel
from score_sde_jax.data.images import digits


def _env(devices=1, x64=False):
  env = dict(os.environ, TQDM_DISABLE="1", MPLBACKEND="Agg", JAX_PLATFORMS="cpu",
             JAX_ENABLE_X64="1" if x64 else "0")
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def _worker(root, *args, x64=False):
  out = subprocess.run([sys.executable, os.path.join(root, "tests", "multidevice_worker.py"), *args],
                       env=_env(4, x64), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def float32_results(root):
  return _worker(root)


@pytest.fixture(scope="module")
def float64_results(root):
  return _worker(root, "--x64", x64=True)


def adam_step_bound(lr, beta1, beta2, t):
  """The largest change of one parameter in Adam's step ``t`` (bias-corrected, eps -> 0).

  ``m_t = (1 - b1) sum_i b1^(t-i) g_i / (1 - b1^t)`` and ``v_t = (1 - b2) sum_i b2^(t-i) g_i^2 /
  (1 - b2^t)``; by Cauchy-Schwarz ``|sum b1^(t-i) g_i| <= sqrt(sum_j (b1^2 / b2)^j)
  sqrt(sum b2^(t-i) g_i^2)``, so ``|lr m_t / sqrt(v_t)| <= lr (1 - b1) / (1 - b1^t)
  sqrt((1 - b2^t) / (1 - b2)) sqrt(sum_{j<t} (b1^2 / b2)^j)`` (``lr`` at ``t = 1``)."""
  geometric = sum((beta1**2 / beta2) ** j for j in range(t))
  return lr * (1 - beta1) / (1 - beta1**t) * np.sqrt((1 - beta2**t) / (1 - beta2) * geometric)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["train_1_k1", "train_10_k1", "train_10_k5", "train_10_k5_host"])
def test_train_steps_on_4_devices_equal_1_device(float32_results, case):
  """Same global batch and key on 1 and 4 devices.

  What round-off bounds: the first loss (same parameters; a mean over 64 examples, whose
  summation order may differ: relative error up to 64 eps_f32 = 3.8e-6, bound 4e-6) and, after
  one step, Adam's first moment, ``(1 - beta1)`` times the gradient (the same bound).

  What it does not: the parameters. Adam's update ``lr g / (|g| + eps)`` has slope
  ``lr / eps`` = 1e5 at ``g = 0``, so a gradient component within round-off of zero can move its
  parameter by up to ``2 lr`` (measured: 7.9e-6 after one step on one machine, against a
  round-off bound of 6e-6). The parameters and the EMA (a convex combination of them) are
  bounded by the update rule, twice the largest Adam step per step (:func:`adam_step_bound`).
  """
  r = float32_results
  assert r["devices"] == 4 and r["mesh_shape"] == {"data": 4}
  c = r[case]
  assert c["param_sharding"] == "P()"  # replicated
  names = ["first_loss"] + (["mu"] if c["n_steps"] == 1 else [])
  for name in names:
    diff, scale = c[name]
    assert diff <= 4e-6 * max(scale, 1.0), (name, diff, scale)
  bound = sum(2 * adam_step_bound(c["lr"], c["beta1"], c["beta2"], t)
              for t in range(1, c["n_steps"] + 1))
  for name in ("params", "ema"):
    assert c[name][0] <= bound, (name, c[name], bound)
  # The steps did move the parameters: an Adam step moves every parameter whose gradient is
  # well above eps by about lr.
  assert c["moved_from_init"] > 0.5 * c["lr"]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["pc_langevin", "pc_euler_ald", "sde"])
def test_fixed_step_samplers_on_4_devices_equal_1_device(float32_results, case):
  c = float32_results[case]
  assert c["sharding"] == "P('data',)"  # the samples stay split over the devices
  assert c["nfe"][0] == c["nfe"][1]
  diff, scale = c["x"]
  assert diff <= 1e-5 * max(scale, 1.0), (diff, scale)
  assert 0.8 < c["std"] < 3.0  # samples of the ring mixture (std about 1.4), not a collapse


@pytest.mark.slow
@pytest.mark.parametrize("case", ["ode", "loglik_exact", "loglik_rademacher", "encode"])
def test_adaptive_solves_on_4_devices_equal_1_device(float64_results, case):
  """Per-example (shard_map) solves: in float64 the results agree to round-off, with equal NFE.

  (In float32 a 1-ulp difference can flip one accept / reject decision of the
  step-size controller, which moves a result by up to the solver tolerance.)
  """
  c = float64_results[case]
  assert float64_results["x64"]
  for name in ("x", "logp", "z"):
    if name in c:
      diff, scale = c[name]
      assert diff <= 1e-10 * max(scale, 1.0), (name, diff, scale)
  if "nfe" in c:
    assert c["nfe"][0] == c["nfe"][1] > 50
  if "nfe_equal" in c:
    assert c["nfe_equal"]
  if "sharding" in c:
    assert c["sharding"] == "P('data',)"


# --- Per-process data -------------------------------------------------------------------------

def test_rows_of_a_batch_are_slices_of_the_global_batch():
  from configs.toy import gmm_vp
  dataset = build.experiment(gmm_vp.get_config()).data.load()
  full = next(dataset.batches(64, 3, 5))
  part = next(dataset.batches(64, 3, 5, rows=slice(16, 32)))
  np.testing.assert_array_equal(part, full[16:32])
  stacked = next(dataset.batches(64, 3, 5, steps_per_batch=2, rows=slice(32, 64)))
  np.testing.assert_array_equal(stacked, next(dataset.batches(64, 3, 5, steps_per_batch=2))[:, 32:])

  images = digits(random_flip=True, uniform_dequantization=True)
  for split in ["train", "test"]:
    full = next(images.batches(40, 1, 7, split=split))
    halves = [next(images.batches(40, 1, 7, split=split, rows=r))
              for r in (slice(0, 20), slice(20, 40))]
    np.testing.assert_array_equal(np.concatenate(halves), full)


def test_local_rows_and_shard_batch_on_one_process():
  mesh = parallel.make_mesh()
  assert parallel.local_rows(mesh, 8) == slice(0, 8)  # one process holds the whole batch
  x = np.arange(16.0).reshape(8, 2)
  np.testing.assert_array_equal(np.asarray(parallel.shard_batch(x, mesh)), x)
  np.testing.assert_array_equal(parallel.to_host(parallel.replicate({"a": x}, mesh))["a"], x)


# --- Two processes ----------------------------------------------------------------------------

TINY = ["--config.training.n_jitted_steps=5", "--config.training.batch_size=64",
        "--config.eval.batch_size=64", "--config.eval.num_batches=1",
        "--config.training.log_freq=10", "--config.training.eval_freq=10",
        "--config.training.snapshot_freq=100", "--config.training.snapshot_freq_for_preemption=10",
        "--config.model.hidden=32", "--config.model.num_layers=2", "--config.eval.num_samples=64",
        "--config.eval.num_eval_examples=64"]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _cmd(root, workdir, mode, n_iters, *extra):
  return [sys.executable, os.path.join(root, "run.py"), "--config",
          os.path.join(root, "configs", "default_toy.py"), f"--workdir={workdir}", f"--mode={mode}",
          f"--config.training.n_iters={n_iters}", *TINY, *extra]


def _run_one(root, workdir, mode, n_iters, devices=1):
  out = subprocess.run(_cmd(root, workdir, mode, n_iters), cwd=root, env=_env(devices),
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def _run_two(root, workdir, mode, n_iters):
  """Two processes with two CPU devices each (a 4-device mesh over 2 processes)."""
  port = _free_port()
  procs = [subprocess.Popen(
      _cmd(root, workdir, mode, n_iters, f"--coordinator_address=127.0.0.1:{port}",
           "--num_processes=2", f"--process_id={i}", "--distributed_timeout=120"),
      cwd=root, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in (1, 0)]  # the coordinator second: process 1 waits for it
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return outs[1][0], outs[0][0]  # stdout of process 0, of process 1


def _config(n_iters):
  config = default_toy.get_config()
  for arg in TINY + [f"--config.training.n_iters={n_iters}"]:
    path, value = arg[len("--config."):].split("=")
    section, field = path.split(".")
    config[section][field] = type(config[section][field])(value)
  return config


def _restore(workdir, step, config):
  state = build.experiment(config).init_state(parallel.make_mesh())
  manager = checkpoint.make_manager(os.path.join(workdir, "checkpoints"))
  return checkpoint.restore(manager, step, checkpoint.abstract_like(state))


def _max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow
def test_two_processes_train_sample_and_eval_like_one(tmp_path, root):
  two, one = tmp_path / "two", tmp_path / "one"
  _run_two(root, two, "train", 20)
  _run_one(root, one, "train", 30)

  # The two-process checkpoint restores in this (one-device) process and equals the
  # one-process run at the same step.
  config = _config(30)
  s_two, s_one = _restore(two, 20, config), _restore(one, 20, config)
  assert int(s_two.step) == 20
  assert _max_diff(s_two.params, s_one.params) < 1e-6
  assert _max_diff(s_two.ema_params, s_one.ema_params) < 1e-6
  assert _max_diff(s_two.params, _restore(one, 10, config).params) > 1e-3  # steps 10-20 mattered
  # Metrics are written once (by process 0), with the same losses.
  rows_two = [json.loads(line) for line in open(two / "metrics.jsonl")]
  rows_one = [json.loads(line) for line in open(one / "metrics.jsonl")]
  assert [r["step"] for r in rows_two] == [0, 10, 10, 20, 20]
  for a, b in zip(rows_two, rows_one):
    for k in set(a) & {"loss", "eval_loss", "eval_loss_exact_score"}:
      assert abs(a[k] - b[k]) < 1e-5 * max(1.0, abs(b[k])), (k, a, b)

  # Resuming the two-process run in one process continues it exactly.
  _run_one(root, two, "train", 30)
  assert _max_diff(_restore(two, 30, config).params, _restore(one, 30, config).params) < 1e-6

  # Sampling and likelihood in two processes: results gathered, written once, equal to one process.
  out0, out1 = _run_two(root, two, "sample", 30)
  assert '"sampler"' in out0 and '"sampler"' not in out1
  name = "pc_reverse_diffusion_langevin_step30.npz"
  samples_two = np.load(two / "samples" / name)["samples"]
  _run_one(root, one, "sample", 30)
  samples_one = np.load(one / "samples" / name)["samples"]
  assert samples_two.shape == (64, 2)
  assert np.max(np.abs(samples_two - samples_one)) < 1e-4 * max(1.0, np.abs(samples_one).max())

  _run_two(root, two, "eval", 30)
  _run_one(root, one, "eval", 30)
  ev_two = json.load(open(two / "eval" / "eval_step30.json"))
  ev_one = json.load(open(one / "eval" / "eval_step30.json"))
  assert abs(ev_two["dsm_loss"] - ev_one["dsm_loss"]) < 1e-5 * abs(ev_one["dsm_loss"])
  assert abs(ev_two["nll_nats"] - ev_one["nll_nats"]) < 1e-3


# --- Start-up errors --------------------------------------------------------------------------

def _run_expect_error(root, tmp_path, *extra, devices=1):
  start = time.monotonic()
  out = subprocess.run(_cmd(root, tmp_path / "w", "train", 20, *extra), cwd=root,
                       env=_env(devices), capture_output=True, text=True, timeout=120)
  seconds = time.monotonic() - start
  assert out.returncode == 2, out.stderr[-3000:]
  errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, out.stderr[-3000:]
  assert "Traceback" not in out.stderr and "Check failure" not in out.stderr
  return errors[0], seconds


def test_batch_not_divisible_by_device_count(root, tmp_path):
  msg, _ = _run_expect_error(root, tmp_path, "--config.training.batch_size=66", devices=4)
  assert "training.batch_size=66" in msg and "divisible by the number of devices (4)" in msg
  assert not (tmp_path / "w").exists()  # refused before anything was written


def test_unreachable_coordinator_fails_fast_and_clearly(root, tmp_path):
  address = f"127.0.0.1:{_free_port()}"  # nothing listens there
  msg, seconds = _run_expect_error(root, tmp_path, f"--coordinator_address={address}",
                                   "--num_processes=2", "--process_id=1",
                                   "--distributed_timeout=2")
  assert address in msg and "within 2 s" in msg
  assert seconds < 60


def test_missing_processes_end_the_coordinator_clearly(root, tmp_path):
  """Process 0 alone: a watchdog ends it with one line instead of XLA's abort."""
  address = f"127.0.0.1:{_free_port()}"
  msg, seconds = _run_expect_error(root, tmp_path, f"--coordinator_address={address}",
                                   "--num_processes=2", "--process_id=0",
                                   "--distributed_timeout=2")
  assert address in msg and "not all 2 processes" in msg
  assert seconds < 60


@pytest.mark.parametrize("flags, field", [
    (["--coordinator_address=127.0.0.1:1234"], "num_processes=None"),
    (["--coordinator_address=127.0.0.1:1234", "--num_processes=2", "--process_id=2"],
     "process_id=2"),
    (["--coordinator_address=localhost", "--num_processes=2", "--process_id=0"],
     "expected host:port"),
])
def test_bad_distributed_flags(root, tmp_path, flags, field):
  msg, _ = _run_expect_error(root, tmp_path, *flags)
  assert field in msg


def test_distributed_without_a_cluster(root, tmp_path, monkeypatch):
  for name in list(os.environ):
    if name.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR", "TPU_", "KUBERNETES_")):
      monkeypatch.delenv(name)
  msg, _ = _run_expect_error(root, tmp_path, "--distributed", "--distributed_timeout=5")
  assert "no cluster was detected" in msg and "--coordinator_address" in msg


def test_coordinator_port_in_use(root, tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    msg, _ = _run_expect_error(root, tmp_path, f"--coordinator_address=127.0.0.1:{port}",
                               "--num_processes=2", "--process_id=0")
  assert f"port {port} is already in use" in msg
