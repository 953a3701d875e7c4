"""Reliability, second round (issue 39): nothing a run wrote is erased by a later run, non-finite
values stop with one line, the converter's memory is bounded by its file, writes are atomic.
Each test is a row of docs/troubleshooting.md and fails without its fix."""

import json
import os
import shutil
import threading

import numpy as np
import pytest

from score_sde_jax import metric_writer, modes
from score_sde_jax import workdir as workdir_lib
from test_failure_modes import _config


def _rows(steps):
  return [json.dumps({"step": s, "loss": 1.0 / s}) for s in steps]


@pytest.mark.parametrize("bad", [b"{not json", b"\xff\xfe\x00 binary", b"[1, 2, 3]",
                                 b'{"step": "80", "loss": 1.0}', b'{"loss": 2.0}'])
def test_an_unreadable_metrics_line_keeps_every_other_row(tmp_path, bad, capsys):
  """73 rows, one of them unreadable (a hand edit, a partial write, non-UTF-8 bytes, a list, a
  step as a string): a resume from step 600 keeps the 59 readable rows up to 600 (it used to keep
  the 13 before the bad line) and moves the bad line, as it was, beside the file."""
  path = str(tmp_path / "metrics.jsonl")
  lines = [line.encode() for line in _rows(range(10, 740, 10))]
  lines[13] = bad
  with open(path, "wb") as f:
    f.write(b"\n".join(lines) + b"\n")
  assert len(metric_writer.read_metrics(path)) == 72
  metric_writer.truncate_metrics(path, 600)
  assert [r["step"] for r in metric_writer.read_metrics(path)] == [
      s for s in range(10, 610, 10) if s != 140]
  with open(metric_writer.unreadable_path(path), "rb") as f:
    assert f.read() == bad + b"\n"
  assert "1 line(s) could not be read as metric rows (line 14)" in capsys.readouterr().err


def test_a_row_cut_short_by_a_kill_is_dropped_quietly(tmp_path, capsys):
  path = str(tmp_path / "metrics.jsonl")
  with open(path, "w") as f:
    f.write("\n".join(_rows([10, 20, 30])) + '\n{"step": 40, "lo')
  metric_writer.truncate_metrics(path, 30)
  assert [r["step"] for r in metric_writer.read_metrics(path)] == [10, 20, 30]
  assert not os.path.exists(metric_writer.unreadable_path(path))
  assert capsys.readouterr().err == ""


def test_training_again_without_checkpoints_moves_the_old_history_aside(tmp_path, capsys):
  """Moving checkpoints/ away and training again used to erase the old run's metrics."""
  wd = str(tmp_path / "wd")
  modes.run("train", _config(n_iters=20), wd)
  old = open(os.path.join(wd, "metrics.jsonl")).read()
  os.makedirs(os.path.join(wd, "figures"), exist_ok=True)
  with open(os.path.join(wd, "figures", "loss.png"), "w") as f:
    f.write("the old run's figure")
  shutil.move(os.path.join(wd, "checkpoints"), str(tmp_path / "elsewhere"))
  capsys.readouterr()
  modes.run("train", _config(n_iters=20), wd)
  kept = [n for n in os.listdir(wd) if n.startswith("metrics.before-")]
  assert len(kept) == 1 and open(os.path.join(wd, kept[0])).read() == old
  figures = "figures" + kept[0][len("metrics"):-len(".jsonl")]
  assert open(os.path.join(wd, figures, "loss.png")).read() == "the old run's figure"
  err = capsys.readouterr().err
  assert "starts from step 0" in err and kept[0] in err
  assert [r["step"] for r in metric_writer.read_metrics(os.path.join(wd, "metrics.jsonl"))
          if "loss" in r] == [10, 20]


def test_json_results_never_hold_nan(tmp_path):
  """``"mmd": NaN`` is not JSON; non-finite numbers are written as null."""
  path = str(tmp_path / "eval" / "r.json")
  workdir_lib.write_json(path, {"mmd": float("nan"), "x": [1.0, float("inf")], "n": 3})
  with open(path) as f:
    assert json.loads(f.read(), parse_constant=lambda c: pytest.fail(c)) == {
        "mmd": None, "x": [1.0, None], "n": 3}


def test_writes_are_atomic_and_writers_do_not_share_a_temporary_file(tmp_path, monkeypatch):
  """A full disk during np.savez left a truncated samples npz; two JSON writers shared one
  ``.tmp`` name. Now the old file stays whole and every writer has its own temporary file."""
  path = str(tmp_path / "samples" / "s.npz")
  workdir_lib.save_npz(path, samples=np.arange(10))
  real_savez = np.savez

  def full_disk(f, **arrays):
    real_savez(f, **arrays)
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(np, "savez", full_disk)
  with pytest.raises(OSError, match="No space left"):
    workdir_lib.save_npz(path, samples=np.arange(1000))
  monkeypatch.setattr(np, "savez", real_savez)
  with np.load(path) as z:
    assert np.array_equal(z["samples"], np.arange(10))
  assert os.listdir(tmp_path / "samples") == ["s.npz"]   # no temporary file left

  target = str(tmp_path / "r.json")
  errors = []

  def writer(i):
    try:
      for _ in range(50):
        workdir_lib.write_json(target, {"writer": i, "pad": "x" * 5000})
    except Exception as e:  # noqa: BLE001
      errors.append(e)

  threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors
  assert json.load(open(target))["writer"] in range(4)
  assert os.listdir(tmp_path) == sorted(os.listdir(tmp_path)) and not [
      n for n in os.listdir(tmp_path) if ".tmp" in n]


# --- The converter's memory is bounded by its file --------------------------------------------------

def _many_tensors_pickle(n, numel):
  """A protocol-2 pickle of ``{'w0': t, ..., 'w<n-1>': t}``, every tensor all of storage 0."""
  import io
  out = io.BytesIO()

  def integer(v):
    out.write(b"\x8a" + bytes([(v.bit_length() + 8) // 8]) +
              v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True))  # LONG1

  out.write(b"\x80\x02}(")                                       # PROTO 2, EMPTY_DICT, MARK
  for i in range(n):
    key = f"w{i}".encode()
    out.write(b"X" + len(key).to_bytes(4, "little") + key)
    out.write(b"ctorch._utils\n_rebuild_tensor_v2\n(")
    out.write(b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu")
    integer(numel)
    out.write(b"tQ")
    integer(0)
    out.write(b"(")
    integer(numel)
    out.write(b"t(")
    integer(1)
    out.write(b"t\x89ccollections\nOrderedDict\n)RtR")
  out.write(b"u.")                                               # SETITEMS, STOP
  return out.getvalue()


def _peak_bytes(fn):
  import tracemalloc
  tracemalloc.start()
  try:
    fn()
  finally:
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
  return peak


def test_one_storage_used_by_2000_tensors_is_refused_within_the_files_memory(tmp_path):
  """A 1 MiB file whose 2000 tensors all view its one storage asked for 2 GB (2.2 GB peak); the
  tensors of a file may take at most twice its size, so the reader stops within a few MiB."""
  import zipfile
  from score_sde_jax import torch_pickle
  numel = 1 << 18   # 1 MiB of float32
  path = str(tmp_path / "shared.pth")
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
    z.writestr("c/data.pkl", _many_tensors_pickle(2000, numel))
    z.writestr("c/data/0", np.zeros(numel, np.float32).tobytes())
  size = os.path.getsize(path)
  with pytest.raises(torch_pickle.CheckpointFormatError, match="more than 2 times the file's"):
    peak = _peak_bytes(lambda: torch_pickle.load(path))
  peak = _peak_bytes(lambda: pytest.raises(torch_pickle.CheckpointFormatError,
                                           torch_pickle.load, path))
  # The storage once, the tensors up to twice the file, and the pickle's own objects.
  assert peak < 4 * size + (8 << 20), (peak, size)
  # Two tensors sharing a storage (tied weights) are fine.
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
    z.writestr("c/data.pkl", _many_tensors_pickle(2, numel))
    z.writestr("c/data/0", np.zeros(numel, np.float32).tobytes())
  assert sorted(torch_pickle.load(path)) == ["w0", "w1"]


def test_a_compressed_storage_record_is_refused_before_it_inflates(tmp_path):
  """A 64 KiB file of DEFLATE-compressed zeros inflating to 64 MiB (the issue's 1.57 MB file
  took 3.4 GB); torch.save never compresses, so a compressed record is refused unread."""
  import zipfile
  from score_sde_jax import torch_pickle
  numel = 1 << 24
  path = str(tmp_path / "zip_bomb.pth")
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("c/data.pkl", _many_tensors_pickle(1, numel))
    z.writestr("c/data/0", bytes(4 * numel), compress_type=zipfile.ZIP_DEFLATED)
  size = os.path.getsize(path)
  assert size < 4 * numel / 100
  peak = _peak_bytes(lambda: pytest.raises(torch_pickle.CheckpointFormatError,
                                           torch_pickle.load, path))
  assert peak < 4 * size + (4 << 20), (peak, size)
  with pytest.raises(torch_pickle.CheckpointFormatError, match="storage record c/data/0 is "
                     "compressed .*refusing to inflate it"):
    torch_pickle.load(path)


def test_nan_weights_are_refused_and_a_killed_conversion_leaves_no_checkpoints(tmp_path,
                                                                              monkeypatch):
  """A converted checkpoint with NaN weights sampled 3072 NaN values with exit 0; a converter
  killed mid-write left a workdir that the next conversion refused and sampling called empty."""
  from score_sde_jax import checkpoint, convert
  from test_convert_ncsn import FIXTURES, reduced_config
  ckpt = os.path.join(FIXTURES, "ncsnv2_tiny", "checkpoint.pth")
  real = convert.convert_checkpoint

  def with_nan(*args, **kwargs):
    state, step = real(*args, **kwargs)
    p = state.ema_params["end_conv"]["kernel"]
    return state.replace(ema_params={**state.ema_params,
                                     "end_conv": {**state.ema_params["end_conv"],
                                                  "kernel": p.at[0, 0, 0, 0].set(np.nan)}}), step

  monkeypatch.setattr(convert, "convert_checkpoint", with_nan)
  with pytest.raises(convert.ConversionError, match=r"NaN or infinite weights .*\n  "
                     r"ema_params/end_conv/kernel: 1 of 216 values not finite"):
    convert.convert(ckpt, reduced_config("ncsnv2_tiny"), str(tmp_path / "nan"))
  assert not os.path.exists(tmp_path / "nan" / "checkpoints")
  monkeypatch.setattr(convert, "convert_checkpoint", real)

  def killed(*args, **kwargs):
    raise KeyboardInterrupt   # stands for a kill between the write's start and its end

  monkeypatch.setattr(checkpoint, "save", killed)
  with pytest.raises(KeyboardInterrupt):
    convert.convert(ckpt, reduced_config("ncsnv2_tiny"), str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w" / "checkpoints")
  monkeypatch.undo()
  out = convert.convert(ckpt, reduced_config("ncsnv2_tiny"), str(tmp_path / "w"))
  assert os.listdir(out) and sorted(os.listdir(tmp_path / "w")) == ["checkpoints", "config.json"]
  assert workdir_lib.load_workdir(str(tmp_path / "w")).step == 1234


# --- Non-finite values stop with one line -----------------------------------------------------------

def _nan_score(x, t):
  return x * jnp.nan


def _nan_late(x, t):   # finite until t < 0.5: the solve stops at the first non-finite drift
  return jnp.where(t[:, None] < 0.5, jnp.nan, -x)


import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from score_sde_jax import likelihood  # noqa: E402
from score_sde_jax.sampling import (NonFiniteSamples, ode_sample, pc_sample,  # noqa: E402
                                    sde_sample)
from score_sde_jax.sampling.flow import SolveError  # noqa: E402
from score_sde_jax.sde import VPSDE  # noqa: E402


@pytest.mark.parametrize("call", ["ode_sample", "log_likelihood", "encode", "ode_sample_late"])
def test_a_nan_score_stops_the_adaptive_solve_with_the_cause(call):
  """It used to run to max_steps (an eval that hangs) and then print ~60 lines blaming
  max_steps; now the first non-finite drift stops the solve, within a few steps."""
  sde, x = VPSDE(), jnp.ones((4, 2))
  calls = {"n": 0}

  def counting(score):
    def fn(x, t):
      jax.debug.callback(lambda: calls.__setitem__("n", calls["n"] + 1))
      return score(x, t)
    return fn

  run = {"ode_sample": lambda s: ode_sample(jax.random.PRNGKey(0), sde, s, (4, 2)),
         "log_likelihood": lambda s: likelihood.log_likelihood(None, sde, s, x, divergence="exact"),
         "encode": lambda s: likelihood.encode(sde, s, x),
         "ode_sample_late": lambda s: ode_sample(jax.random.PRNGKey(0), sde, s, (4, 2))}[call]
  score = _nan_late if call.endswith("late") else _nan_score
  with pytest.raises(SolveError, match=r"drift became NaN or infinite for 4 of 4 examples"):
    run(counting(score))
  assert calls["n"] < 200, calls   # not max_steps (16384) of rejected steps


def test_bad_flow_inputs_are_refused_before_solving():
  sde = VPSDE()
  score = lambda x, t: -x  # noqa: E731
  with pytest.raises(ValueError, match=r"x: 1 of 8 values are NaN or infinite"):
    likelihood.log_likelihood(None, sde, score, jnp.ones((4, 2)).at[0, 0].set(jnp.nan),
                              divergence="exact")
  with pytest.raises(ValueError, match=r"rtol=0, atol=0: an adaptive solve needs a positive"):
    ode_sample(jax.random.PRNGKey(0), sde, score, (4, 2), rtol=0, atol=0)
  with pytest.raises(ValueError, match=r"x: dtype int32; expected floating-point"):
    likelihood.log_likelihood(None, sde, score, jnp.ones((4, 2), jnp.int32), divergence="exact")
  with pytest.raises(ValueError, match=r"x: shape \(0, 2\), an empty batch"):
    likelihood.encode(sde, score, jnp.ones((0, 2)))
  with pytest.raises(SolveError, match=r"4 of 4 adaptive solves reached max_steps=3"):
    likelihood.encode(sde, lambda x, t: -5 * x, jnp.ones((4, 2)), max_steps=3)


def test_a_score_of_the_wrong_shape_is_one_error():
  with pytest.raises(ValueError, match=r"score_fn\(x, t\) returned shape \(4, 1\) for x of shape "
                     r"\(4, 2\)"):
    pc_sample(jax.random.PRNGKey(0), VPSDE(), lambda x, t: x[:, :1], (4, 2), num_steps=25)


@pytest.mark.parametrize("sampler", ["pc", "sde"])
def test_nan_samples_are_an_error_not_a_result(sampler):
  run = {"pc": lambda: pc_sample(jax.random.PRNGKey(0), VPSDE(), _nan_score, (4, 2), num_steps=25),
         "sde": lambda: sde_sample(jax.random.PRNGKey(0), VPSDE(), _nan_score, (4, 2),
                                   num_steps=5)}[sampler]
  with pytest.raises(NonFiniteSamples, match=r"8 of 8 sample values are NaN or infinite"):
    run()


# --- Concurrent readers and renamed folders ----------------------------------------------------------

@pytest.fixture(scope="module")
def trained_two_steps(tmp_path_factory):
  """A toy run with checkpoints at steps 10 and 20."""
  wd = str(tmp_path_factory.mktemp("rel") / "wd")
  modes.run("train", _config(n_iters=20), wd)
  assert sorted(int(d) for d in os.listdir(os.path.join(wd, "checkpoints")) if d.isdigit()) == \
      [10, 20]
  return wd


def test_a_renamed_step_folder_is_refused_naming_both_steps(trained_two_steps, tmp_path):
  wd = str(tmp_path / "wd")
  shutil.copytree(trained_two_steps, wd)
  os.rename(os.path.join(wd, "checkpoints", "20"), os.path.join(wd, "checkpoints", "70"))
  with pytest.raises(workdir_lib.WorkdirError, match=r"checkpoints/70: the folder is named step 70 "
                     r"but holds the state of step 20 \(renamed by hand\?\); rename it back to 20"):
    workdir_lib.load_workdir(wd)


def test_a_reader_racing_the_trainers_rotation_reads_the_newest_without_a_warning(
    trained_two_steps, tmp_path, monkeypatch, capsys):
  """The step being read vanishes (the trainer's max_to_keep rotation): the reader used to warn
  that a healthy checkpoint was damaged; it now reads the newest step left, quietly."""
  from score_sde_jax import checkpoint
  wd = str(tmp_path / "wd")
  shutil.copytree(trained_two_steps, wd)
  real = checkpoint.restore

  def rotated_while_reading(manager, step, target):
    if step == 20:
      shutil.rmtree(os.path.join(wd, "checkpoints", "20"))
      raise checkpoint.CheckpointDamaged(os.path.join(wd, "checkpoints", "20"),
                                         "it has no 'state' item")
    return real(manager, step, target)

  monkeypatch.setattr(checkpoint, "restore", rotated_while_reading)
  capsys.readouterr()
  run = workdir_lib.load_workdir(wd)
  assert run.step == 10
  assert "damaged" not in capsys.readouterr().err


def test_a_checkpoints_file_is_one_line_at_once(tmp_path):
  """orbax waited 300 s for a folder it could not make, then raised a traceback."""
  wd = tmp_path / "wd"
  wd.mkdir()
  (wd / "checkpoints").write_text("not a folder")
  with pytest.raises(workdir_lib.WorkdirError, match=r"checkpoints: is a file, not a folder"):
    modes.run("train", _config(n_iters=20), str(wd))


# --- Smaller items -----------------------------------------------------------------------------------

def test_a_seed_jax_cannot_keep_is_refused():
  """JAX keeps 32 bits of a seed: 2^32 was silently seed 0."""
  from score_sde_jax import build
  config = _config()
  config.seed = 2**32
  with pytest.raises(build.ConfigError, match=r"config.seed=4294967296: .*\[0, 2\^32\)"):
    build.experiment(config)


def test_16_bit_grey_pngs_keep_their_levels(tmp_path):
  """PIL's convert clipped 16-bit images to {0, 255}; they are now v / 257, rounded."""
  from PIL import Image
  from score_sde_jax.data import files
  ramp = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1000).astype(np.uint16)
  Image.fromarray(ramp).save(tmp_path / "a.png")
  levels = files.ImageFiles([str(tmp_path / "a.png")], image_size=8, num_channels=1,
                            preprocess=None).load(0)[..., 0]
  assert np.array_equal(levels, np.round(ramp / 257.0).astype(np.uint8))


def test_one_eval_example_evaluates_and_draws_its_figures(tmp_path):
  """``eval.num_eval_examples = 1`` wrote its results and then failed in the interpolation
  figure (six pairs drawn without replacement from one point)."""
  wd = str(tmp_path / "wd")
  config = _config(n_iters=10)
  modes.run("train", config, wd)
  config.eval.num_eval_examples, config.eval.figures = 1, True
  config.eval.bound_num_times = 0
  result = modes.run("eval", config, wd)
  assert result["num_examples"] == 1
  assert os.path.isfile(os.path.join(wd, "figures", "interpolation.png"))


def test_a_config_file_returning_a_dict_is_one_line(tmp_path):
  import subprocess
  import sys
  path = tmp_path / "c.py"
  path.write_text("def get_config():\n  return {'training': {}}\n")
  out = subprocess.run([sys.executable, "run.py", "--config", str(path), "--mode", "info"],
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 2 and out.stderr.strip().splitlines() == [
      f"error: --config={path}: get_config() returned a dict, not an ml_collections.ConfigDict "
      f"(wrap it: return ml_collections.ConfigDict(...))"], out.stderr


def test_jax_platforms_naming_a_missing_accelerator_is_one_line(tmp_path):
  import subprocess
  import sys
  out = subprocess.run([sys.executable, "run.py", "--config", "configs/toy/gmm_vp.py", "--workdir",
                        str(tmp_path / "wd"), "--config.training.n_iters=2"],
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "JAX_PLATFORMS": "cuda"})
  if out.returncode == 0:
    pytest.skip("this machine has a CUDA device")
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 2 and len(lines) == 1, out.stderr
  assert lines[0].startswith("error: JAX_PLATFORMS='cuda': ") and "unset JAX_PLATFORMS" in lines[0]


def test_a_latent_of_another_shape_is_refused_by_the_run(trained_two_steps):
  run = workdir_lib.load_workdir(trained_two_steps)
  with pytest.raises(ValueError, match=r"z: shape \(4, 3\); expected \(batch,\) \+ \(2,\)"):
    run.decode(np.zeros((4, 3), np.float32))


def test_a_failed_background_checkpoint_write_is_one_error(tmp_path, monkeypatch):
  """A full disk during training ended in ~490 lines (orbax's logs of each failed task, then the
  write's traceback raised again while the first error was being handled): the failure now
  surfaces at the next checkpoint as one error naming the newest complete checkpoint. (Measured
  on a full 600 KiB tmpfs with run.py: 1010 lines of output before, one error line after.)"""
  from score_sde_jax import checkpoint
  real_save = checkpoint.save
  calls = {"n": 0}

  def failing_save(manager, step, state, record, **kwargs):
    calls["n"] += 1
    real_save(manager, step, state, record, wait=True)
    if calls["n"] == 2:   # this write "fails in the background"; the next save finds out

      def failed():
        raise ValueError('RESOURCE_EXHAUSTED: Error writing local file "state/_sharding": '
                         'Failed to write 13693 bytes: No space left on device')

      monkeypatch.setattr(manager, "check_for_errors", failed)
      monkeypatch.setattr(manager, "wait_until_finished", failed)

  monkeypatch.setattr(checkpoint, "save", failing_save)
  wd = str(tmp_path / "wd")
  with pytest.raises(checkpoint.CheckpointWriteFailed) as e:
    modes.run("train", _config(n_iters=40), wd)
  assert str(e.value) == (
      f"writing a checkpoint to {wd}/checkpoints failed: RESOURCE_EXHAUSTED: Error writing local "
      f"file \"state/_sharding\": Failed to write 13693 bytes: No space left on device; the newest "
      f"complete checkpoint is {wd}/checkpoints/20; free the space (or fix the folder) and run the "
      f"same command again to resume from it")
  assert calls["n"] == 2   # stopped at the third checkpoint, before writing it


def test_a_compilation_cache_that_cannot_be_written_warns_once(tmp_path, monkeypatch):
  """A full disk made JAX warn once per program (54 warnings); now one line, other warnings as
  before."""
  import warnings
  from score_sde_jax import compilation
  shown, said = [], []
  monkeypatch.setattr(warnings, "showwarning", lambda *a, **k: shown.append(str(a[0])))
  compilation.one_line_for_failed_cache_writes(str(tmp_path), warn=said.append)
  with warnings.catch_warnings():
    warnings.simplefilter("always")
    for name in ("jit_step", "jit_sample", "jit_eval"):
      warnings.warn(f"Error writing persistent compilation cache entry for '{name}': "
                    f"OSError: [Errno 28] No space left on device")
    warnings.warn("something else")
  assert said == [f"warning: the compilation cache in {tmp_path} cannot be written (OSError: "
                  f"[Errno 28] No space left on device); programs compile as without a cache "
                  f"(this warning is shown once)"]
  assert shown == ["something else"]


def test_a_vp_chain_too_short_for_its_betas_is_refused():
  """Ten levels of the default VP schedule have beta_i up to 2, alpha = 1 - beta < 0: the
  reverse-diffusion and Langevin steps returned NaN samples without a word."""
  score = lambda x, t: -x  # noqa: E731
  for predictor, corrector in (("reverse_diffusion", "none"), ("none", "langevin")):
    with pytest.raises(ValueError, match=r"num_steps=10: the DDPM chain of 10 levels has beta_max / "
                       r"num_steps = 2, so alpha = 1 - beta is negative \(NaN samples\); use "
                       r"num_steps >= 20"):
      pc_sample(jax.random.PRNGKey(0), VPSDE(), score, (4, 2), num_steps=10, predictor=predictor,
                corrector=corrector)
  with pytest.raises(ValueError, match=r"num_steps=20: .* = 1, so alpha = 1 - beta is not positive "
                     r"\(NaN samples\); use num_steps >= 21"):
    pc_sample(jax.random.PRNGKey(0), VPSDE(), score, (4, 2), num_steps=20,
              predictor="ancestral_sampling", corrector="none")
  for n, predictor in ((10, "euler_maruyama"), (20, "reverse_diffusion")):
    x, _ = pc_sample(jax.random.PRNGKey(0), VPSDE(), score, (4, 2), num_steps=n,
                     predictor=predictor, corrector="none")
    assert np.all(np.isfinite(np.asarray(x)))
