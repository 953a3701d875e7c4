"""``--mode train``: the training loop with logging, evaluation, checkpoints and figures.

Started again with the same command after being killed, training resumes from
the last complete checkpoint and reaches the same final state as an
uninterrupted run: the PRNG key is part of the checkpointed state and batch
``i`` is a pure function of ``(seed, i)``. Every process of a multi-process
run executes this loop (one program, JAX's multi-controller model): each loads
its own rows of every global batch and all take part in every compiled
computation; only process 0 writes metrics, figures and JSON (orbax
coordinates the checkpoint writes itself).
"""

from __future__ import annotations

import os
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from score_sde_jax import build, checkpoint, figures, keys, losses, parallel, train
from score_sde_jax import workdir as workdir_lib
from score_sde_jax.data import get_data_inverse_scaler, get_data_scaler
from score_sde_jax.metric_writer import MetricWriter, truncate_metrics


class TrainingDiverged(RuntimeError):
  """The loss or the parameters became NaN or infinite."""


class TrainingInterrupted(RuntimeError):
  """A stop was requested (:func:`request_stop`, run.py's Ctrl-C): the loop ended between two
  calls, with pending checkpoint writes finished."""


_STOP = threading.Event()


def request_stop() -> None:
  """Asks the running training loop to stop after its current call. run.py's SIGINT handler
  calls this rather than raising ``KeyboardInterrupt`` at an arbitrary point: raised inside
  orbax's asynchronous save (asyncio turns it into a cancelled task), it was swallowed and
  training went on, or the save deadlocked."""
  _STOP.set()


def log(*args):
  if parallel.is_main_process():
    print(*args, flush=True)


def check_batch(batch_size, mesh, field):
  """A global batch that does not split over the devices is a config error, before compiling."""
  try:
    parallel.check_batch_size(batch_size, mesh, field)
  except ValueError as e:
    raise build.ConfigError(f"config.{e}") from None


def score_fn_of(config, sde, model, params):
  """The score function of ``params`` that the config's sampler uses."""
  return build.get_score_fn(config, sde, model, params,
                            flow=build.samples_by_flow(config.sampling.method))


@jax.jit
def _all_finite(tree):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def eval_batches(config, dataset, mesh):
  """The fixed evaluation batches (model space, this process's rows, sharded)."""
  e, scaler = config.eval, get_data_scaler(config.data.centered)
  batches = dataset.batches(e.batch_size, config.seed, split="eval",
                            rows=parallel.local_rows(mesh, e.batch_size))
  return [parallel.shard_batch(scaler(next(batches)), mesh) for _ in range(e.num_batches)]


def mean_loss(*, step_fn, state, batches, key) -> float:
  """The mean of ``step_fn(state, batch, fold_in(key, i))`` over the batches."""
  values = [step_fn(state, batch, jax.random.fold_in(key, i)) for i, batch in enumerate(batches)]
  return float(np.mean(jax.device_get(values)))


def exact_score_floor(config, sde, dataset, mesh, batches) -> float:
  """The exact score's loss on the evaluation batches and keys: the floor the eval loss approaches."""
  t = config.training
  exact = lambda x, tt: dataset.marginal_score(sde, x, tt)
  step_fn = jax.jit(lambda _, batch, key: losses.denoising_score_matching(
      jax.random.split(key)[0], sde, exact, batch, reduce_mean=t.reduce_mean,
      likelihood_weighting=t.likelihood_weighting, eps=t.eps),
      out_shardings=parallel.replicated(mesh))
  return mean_loss(step_fn=step_fn, state=None, batches=batches,
                   key=keys.stream(config.seed, "eval_loss"))


def snapshot_figure(*, config, workdir, sampling_fn, score_fn, step, dataset):
  """Samples of the EMA model at a snapshot, as the paper's ``snapshot_sampling``."""
  x, _ = sampling_fn(keys.stream(config.seed, "snapshot"), score_fn)
  x = parallel.to_host(x)
  if parallel.is_main_process():
    figures.snapshot(dataset, x, os.path.join(workdir, "samples", f"snapshot_{step}.png"),
                     title=f"step {step} (EMA)")


def save_checkpoint(manager, step, state, config_dict):
  if not bool(_all_finite(state.params)):
    raise TrainingDiverged(f"parameters are not finite at step {step}; checkpoint not written, "
                           f"the last good one in {manager.directory} is kept")
  checkpoint.check_space(manager, state)
  checkpoint.save(manager, step, state, config_dict)


def log_row(fetched, k, steps, seconds):
  """One metrics row: the mean of every step since the previous log."""
  row = {name: float(np.mean([np.mean(m[name]) for m in fetched])) for name in fetched[0]}
  if k > 1:
    row["lr"] = float(fetched[-1]["lr"][-1])
  row["steps_per_sec"] = steps / max(seconds, 1e-9)
  return row


def start_or_resume(config, folder, manager, state, mesh, *, view=build.compatibility_view):
  """``(state, start_step)``: the newest checkpoint in ``manager`` if there is one (refused when
  ``view`` of its config differs; a score model's also when the data set changed, unless
  ``training.resume_new_data``), else ``state``; writes ``config.json`` and cuts
  ``metrics.jsonl`` back to the step resumed from."""
  hints = None
  if view is build.compatibility_view and not config.training.get("resume_new_data", False):
    view = lambda d: {**build.compatibility_view(d), **build.resume_data_view(d)}
    hints = {path: "or --config.training.resume_new_data=True to continue on the new data"
             for path in ("data.dataset", "data.path")}
  restored, start_step = workdir_lib.restore_newest(config, manager, state, mesh, view=view,
                                                    move_damaged=True, hints=hints)
  if parallel.is_main_process():
    workdir_lib.write_json(os.path.join(folder, "config.json"), config.to_dict())
    # From scratch every row is redone, the step-0 rows too (a run killed before its first
    # checkpoint left them); on resume the rows up to the checkpoint's step stay.
    truncate_metrics(os.path.join(folder, "metrics.jsonl"), start_step if start_step else -1)
  if start_step:
    log(f"resuming from step {start_step} in {folder}")
  state = restored if restored is not None else state
  checkpoint.check_space(manager, state)  # a full disk is known before anything compiles
  return state, start_step


def run_loop(*, state, make_step, batches, mesh, start_step, n_iters, steps_per_call, log_freq,
             manager, writer, config_dict, checkpoint_due, evaluate=None, after_checkpoint=None,
             desc="train"):
  """Trains from ``start_step`` to exactly ``n_iters``; the loop that score models and
  classifiers share. ``make_step(r)`` is the jitted train step of ``r`` steps per call (``r > 1``
  or ``steps_per_call > 1``: ``lax.scan`` over a leading batch axis), ``batches`` yields one
  step's batch at a time. Calls run ``steps_per_call = k`` steps and end on multiples of ``k``;
  a shorter call reaches ``n_iters`` when ``k`` does not divide it (or the next multiple after a
  start off them), compiled once more. Every ``log_freq`` steps the mean of the step metrics
  since the last row is written (and a non-finite loss stops the run, keeping the last good
  checkpoint); ``evaluate(state, prev, step)`` runs after every call; a checkpoint is saved when
  ``checkpoint_due(step)`` and at the end, then ``after_checkpoint(state, step)`` runs. The
  writer and the checkpoint manager are closed (and waited for) on the way out."""
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
  _STOP.clear()
  try:
    while step < n_iters:
      if _STOP.is_set():
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
        save_checkpoint(manager, step, state, config_dict)
        if after_checkpoint is not None:
          after_checkpoint(state, step)
  finally:
    bar.close()
    manager.wait_until_finished()
    writer.close()
  return state


def train_and_evaluate(config, workdir: str):
  """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints); returns the final state."""
  workdir = workdir_lib.check_workdir(workdir)
  build.validate_config(config)
  sde, model, dataset = build.get_sde(config), build.get_model(config), build.get_dataset(config)
  t, e = config.training, config.eval
  mesh = parallel.make_mesh()
  check_batch(t.batch_size, mesh, "training.batch_size")
  check_batch(e.batch_size, mesh, "eval.batch_size")

  os.makedirs(workdir, exist_ok=True)
  with workdir_lib.lock(workdir):  # one trainer per workdir
    return _train(config, workdir, sde, model, dataset, mesh)


def _train(config, workdir, sde, model, dataset, mesh):
  t, e = config.training, config.eval
  is_main = parallel.is_main_process()
  config_dict = config.to_dict()
  manager = workdir_lib.checkpoints(workdir, config)
  optimizer = build.get_optimizer(config)
  state, start_step = start_or_resume(config, workdir, manager,
                                      build.init_state(config, model, optimizer, mesh), mesh)

  k = t.n_jitted_steps
  make_step = lambda r: train.make_train_step(
      build.get_loss_fn(config, sde, model, train_mode=True), optimizer,
      ema_rate=config.model.ema_rate, mesh=mesh, n_jitted_steps=r, scan=k > 1,
      loop=build.steps_loop(config),
      lr_schedule=build.get_lr_schedule(config))
  eval_step = train.make_eval_step(build.get_loss_fn(config, sde, model, train_mode=False), mesh)
  held_out = eval_batches(config, dataset, mesh) if e.num_batches else []
  scaler = get_data_scaler(config.data.centered)
  # Each process loads its rows of every global batch (all of them with one process).
  batches = map(scaler, dataset.batches(t.batch_size, config.seed, start_step,
                                        rows=parallel.local_rows(mesh, t.batch_size)))
  writer = MetricWriter(workdir, enabled=is_main)
  if start_step == 0 and held_out and hasattr(dataset, "marginal_score"):
    writer.write(0, {"eval_loss_exact_score": exact_score_floor(config, sde, dataset, mesh,
                                                                held_out)})
  snapshot_sampler = None
  if t.snapshot_sampling:
    n = min(64, e.num_samples)
    n = max(parallel.num_shards(mesh), n - n % parallel.num_shards(mesh))
    snapshot_sampler = build.get_sampling_fn(
        config, sde, (n,) + tuple(build.data_shape(config)),
        get_data_inverse_scaler(config.data.centered), sde.sampling_eps, mesh=mesh)

  def evaluate(state, prev, step):
    if e.enable_loss and held_out and any(s % t.eval_freq == 0 for s in range(prev + 1, step + 1)):
      writer.write(step, {"eval_loss": mean_loss(step_fn=eval_step, state=state, batches=held_out,
                                                 key=keys.stream(config.seed, "eval_loss"))})

  def after_checkpoint(state, step):
    if snapshot_sampler is not None and (step % t.snapshot_freq == 0 or step >= t.n_iters):
      snapshot_figure(config=config, workdir=workdir, sampling_fn=snapshot_sampler,
                      score_fn=score_fn_of(config, sde, model, state.ema_params), step=step,
                      dataset=dataset)

  state = run_loop(
      state=state, make_step=make_step, batches=batches, mesh=mesh, start_step=start_step,
      n_iters=t.n_iters, steps_per_call=k, log_freq=t.log_freq, manager=manager, writer=writer,
      config_dict=config_dict, evaluate=evaluate, after_checkpoint=after_checkpoint,
      checkpoint_due=lambda s: s % t.snapshot_freq_for_preemption == 0 or s % t.snapshot_freq == 0)
  if is_main:
    paths = figures.training_figures(config, workdir, parallel.to_host(state), sde, model, dataset)
    print("figures:\n  " + "\n  ".join(paths))
  return state

