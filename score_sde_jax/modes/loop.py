"""The training loop that score models and classifiers share: resume, steps, logging, the
divergence stop, checkpoints, and a stop requested from outside (run.py's Ctrl-C)."""

from __future__ import annotations

import os
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from score_sde_jax import checkpoint, parallel
from score_sde_jax.build import ConfigError
from score_sde_jax import workdir as workdir_lib
from score_sde_jax.metric_writer import move_aside, truncate_metrics


class TrainingDiverged(RuntimeError):
  """The loss or the parameters became NaN or infinite."""


class TrainingInterrupted(RuntimeError):
  """A stop was requested (:class:`StopRequest`, run.py's Ctrl-C): the loop ended between two
  calls, with pending checkpoint writes finished."""


class StopRequest:
  """Asks a running loop to stop after its current call. run.py's SIGINT handler sets one
  rather than raising ``KeyboardInterrupt`` at an arbitrary point: raised inside orbax's
  asynchronous save (asyncio turns it into a cancelled task), it was swallowed and training went
  on, or the save deadlocked."""

  def __init__(self):
    self._event = threading.Event()

  def set(self) -> None:
    self._event.set()

  def is_set(self) -> bool:
    return self._event.is_set()


def log(*args):
  if parallel.is_main_process():
    print(*args, flush=True)


@jax.jit
def _all_finite(tree):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def save_checkpoint(manager, step, state, record):
  if not bool(_all_finite(state.params)):
    raise TrainingDiverged(f"parameters are not finite at step {step}; checkpoint not written, "
                           f"the last good one in {manager.directory} is kept")
  try:   # a previous background write that failed is reported now, not at the end
    manager.check_for_errors()
  except Exception as e:  # noqa: BLE001 -- orbax re-raises the write's own exception
    raise checkpoint.write_failed(manager, e) from None
  checkpoint.check_space(manager, state)
  checkpoint.save(manager, step, state, record)


def log_row(fetched, k, steps, seconds):
  """One metrics row: the mean of every step since the previous log."""
  row = {name: float(np.mean([np.mean(m[name]) for m in fetched])) for name in fetched[0]}
  if k > 1:
    row["lr"] = float(fetched[-1]["lr"][-1])
  row["steps_per_sec"] = steps / max(seconds, 1e-9)
  return row


def start_or_resume(experiment, folder, manager, state, mesh, *, select, hints=None):
  """``(state, start_step)``: the newest checkpoint in ``manager`` if there is one (refused when
  the ``select``-ed views of its config and of ``experiment`` differ), else ``state``; writes
  ``config.json`` (the experiment's record) and cuts ``metrics.jsonl`` back to the step resumed
  from."""
  restored, start_step = workdir_lib.restore_newest(manager, state, mesh, experiment=experiment,
                                                    select=select, move_damaged=True, hints=hints)
  if parallel.is_main_process():
    workdir_lib.write_json(os.path.join(folder, "config.json"), dict(experiment.record))
    # From scratch every row is redone, the step-0 rows too (a run killed before its first
    # checkpoint left them), and an earlier run's history (checkpoints moved away) is moved
    # aside, not erased; on resume the rows up to the checkpoint's step stay.
    metrics_path = os.path.join(folder, "metrics.jsonl")
    if not start_step:
      moved = move_aside(metrics_path, warn=workdir_lib.warn)
      figures = os.path.join(folder, "figures")
      if moved and os.path.isdir(figures):   # the earlier run's figures go with its history
        target = figures + moved[len(os.path.splitext(metrics_path)[0]):-len(".jsonl")]
        os.replace(figures, target)
        workdir_lib.warn(f"{figures}: the earlier run's figures moved to {target}")
    truncate_metrics(metrics_path, start_step if start_step else -1, warn=workdir_lib.warn)
  if start_step:
    log(f"resuming from step {start_step} in {folder}")
  state = restored if restored is not None else state
  checkpoint.check_space(manager, state)  # a full disk is known before anything compiles
  return state, start_step


def run_loop(*, state, make_step, batches, mesh, start_step, n_iters, steps_per_call, log_freq,
             manager, writer, record, checkpoint_due, evaluate=None, after_checkpoint=None,
             desc="train", stop: StopRequest | None = None):
  """Trains from ``start_step`` to exactly ``n_iters``. ``make_step(r)`` is the jitted train
  step of ``r`` steps per call (``r > 1`` or ``steps_per_call > 1``: ``lax.scan`` over a leading
  batch axis), ``batches`` yields one step's batch at a time. Calls run ``steps_per_call = k``
  steps and end on multiples of ``k``; a shorter call reaches ``n_iters`` when ``k`` does not
  divide it (or the next multiple after a start off them), compiled once more. Every
  ``log_freq`` steps the mean of the step metrics since the last row is written (and a
  non-finite loss stops the run, keeping the last good checkpoint); ``evaluate(state, prev,
  step)`` runs after every call; a checkpoint (with ``record``, the config) is saved when
  ``checkpoint_due(step)`` and at the end, then ``after_checkpoint(state, step)`` runs. A set
  ``stop`` ends the loop between two calls (:class:`TrainingInterrupted`). The writer and the
  checkpoint manager are closed (and waited for) on the way out."""
  steps_fns = {}

  def step_fn(r):
    if r not in steps_fns:
      steps_fns[r] = make_step(r)
    return steps_fns[r]

  k = steps_per_call
  step = start_step
  bar = tqdm(total=n_iters, initial=start_step, unit="step", dynamic_ncols=True,
             disable=not parallel.is_main_process(), desc=desc)
  last_time, last_step = time.perf_counter(), start_step
  pending = []  # device metrics of the calls since the last log, fetched together
  completed = False
  quiet = checkpoint.quiet_failed_writes()
  quiet.__enter__()
  try:
    while step < n_iters:
      if stop is not None and stop.is_set():
        raise TrainingInterrupted(f"stopped at step {step}")
      r = min(k - step % k, n_iters - step)
      rows = [next(batches) for _ in range(r)]
      batch = rows[0] if k == 1 else jax.tree.map(lambda *x: np.stack(x), *rows)
      batch = parallel.shard_batch(batch, mesh, batch_axis=1 if k > 1 else 0)
      state, metrics = step_fn(r)(state, batch)
      prev, step = step, step + r
      pending.append(metrics)
      bar.update(r)
      if step // log_freq > prev // log_freq or step >= n_iters:
        fetched, pending = jax.device_get(pending), []
        if not np.all([np.all(np.isfinite(m["loss"])) for m in fetched]):
          good = manager.latest_step()
          kept = (f"The last good checkpoint (step {good}) in {manager.directory} is kept"
                  if good is not None else f"No checkpoint was written yet ({manager.directory} "
                  f"has none)")
          raise TrainingDiverged(
              f"loss is not finite between steps {last_step} and {step}; stopping. "
              f"{kept}")
        now = time.perf_counter()
        row = log_row(fetched, k, step - last_step, now - last_time)
        last_time, last_step = now, step
        writer.write(step, row)
        bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
      if evaluate is not None:
        evaluate(state, prev, step)
      if checkpoint_due(step) or step >= n_iters:
        save_checkpoint(manager, step, state, record)
        if after_checkpoint is not None:
          after_checkpoint(state, step)
    completed = True
  finally:
    bar.close()
    try:
      manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001 -- a background write failed
      if completed:   # else the loop's own error is the one to report
        raise checkpoint.write_failed(manager, e) from None
    finally:
      writer.close()
      quiet.__exit__(None, None, None)
  return state


def check_batch(batch_size, mesh, field):
  """A global batch that does not split over the devices is a config error, before compiling."""
  try:
    parallel.check_batch_size(batch_size, mesh, field)
  except ValueError as e:
    raise ConfigError(f"config.{e}") from None
