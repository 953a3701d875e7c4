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

import jax
import numpy as np

from score_sde_jax import figures, keys, losses, parallel, train
from score_sde_jax import workdir as workdir_lib
from score_sde_jax.experiment import Experiment
from score_sde_jax.metric_writer import MetricWriter
from score_sde_jax.modes.loop import StopRequest, check_batch, run_loop, start_or_resume
from score_sde_jax.modes.results import figures_wanted, print_figures


def eval_batches(exp: Experiment, dataset, mesh):
  """The fixed evaluation batches (model space, this process's rows, sharded)."""
  e, scaler = exp.eval, exp.data.scaler
  batches = dataset.batches(e.batch_size, exp.seed, split="eval",
                            rows=parallel.local_rows(mesh, e.batch_size))
  return [parallel.shard_batch(scaler(next(batches)), mesh) for _ in range(e.num_batches)]


def mean_loss(*, step_fn, state, batches, key) -> float:
  """The mean of ``step_fn(state, batch, fold_in(key, i))`` over the batches."""
  values = [step_fn(state, batch, jax.random.fold_in(key, i)) for i, batch in enumerate(batches)]
  return float(np.mean(jax.device_get(values)))


def exact_score_floor(exp: Experiment, dataset, mesh, batches) -> float:
  """The exact score's loss on the evaluation batches and keys: the floor the eval loss approaches."""
  objective, sde = exp.training.objective, exp.sde
  exact = lambda x, tt: dataset.marginal_score(sde, x, tt)
  step_fn = jax.jit(lambda _, batch, key: losses.denoising_score_matching(
      jax.random.split(key)[0], sde, exact, batch, reduce_mean=objective.reduce_mean,
      likelihood_weighting=objective.likelihood_weighting,
      importance_sampling=objective.importance_sampling, eps=objective.eps),
      out_shardings=parallel.replicated(mesh))
  return mean_loss(step_fn=step_fn, state=None, batches=batches,
                   key=keys.stream(exp.seed, "eval_loss"))


def snapshot_figure(*, exp, workdir, sampling_fn, score_fn, step, dataset):
  """Samples of the EMA model at a snapshot, as the paper's ``snapshot_sampling``."""
  x, _ = sampling_fn(keys.stream(exp.seed, "snapshot"), score_fn)
  x = parallel.to_host(x)
  if parallel.is_main_process():
    figures.snapshot(dataset, x, os.path.join(workdir, "samples", f"snapshot_{step}.png"),
                     title=f"step {step} (EMA)")


def train_and_evaluate(exp: Experiment, workdir: str, *, stop: StopRequest | None = None):
  """Trains ``exp`` in ``workdir`` (resuming if it holds checkpoints); returns the final state."""
  workdir = workdir_lib.check_workdir(workdir)
  dataset = exp.data.load()
  mesh = parallel.make_mesh()
  check_batch(exp.training.batch_size, mesh, "training.batch_size")
  check_batch(exp.eval.batch_size, mesh, "eval.batch_size")
  os.makedirs(workdir, exist_ok=True)
  with workdir_lib.lock(workdir):  # one trainer per workdir
    return _train(exp, workdir, dataset, mesh, stop)


def resume(exp: Experiment, workdir, manager, state, mesh):
  """The newest checkpoint, which must agree with ``exp`` on the score model and the optimizer
  state's structure, and on the data unless ``training.resume_new_data``."""
  if exp.training.resume_new_data:
    select, hints = workdir_lib.score_model_view, None
  else:
    select = lambda v: {**workdir_lib.score_model_view(v), **v.data}
    hints = {path: "or --config.training.resume_new_data=True to continue on the new data"
             for path in ("data.dataset", "data.path")}
  return start_or_resume(exp, workdir, manager, state, mesh, select=select, hints=hints)


def _train(exp: Experiment, workdir, dataset, mesh, stop):
  t, e = exp.training, exp.eval
  is_main = parallel.is_main_process()
  record = dict(exp.record)
  manager = workdir_lib.checkpoints(workdir, max_to_keep=t.max_to_keep,
                                    keep_period=t.snapshot_freq)
  optimizer = exp.optimizer.make()
  state, start_step = resume(exp, workdir, manager, exp.init_state(mesh), mesh)

  k = t.n_jitted_steps
  make_step = lambda r: train.make_train_step(
      t.objective.loss_fn(exp.model, train_mode=True), optimizer, ema_rate=t.ema_rate,
      ema_warmup=t.ema_warmup, mesh=mesh, n_jitted_steps=r, scan=k > 1, loop=exp.steps_loop(),
      lr_schedule=exp.optimizer.lr_schedule())
  eval_step = train.make_eval_step(t.objective.loss_fn(exp.model, train_mode=False), mesh)
  held_out = eval_batches(exp, dataset, mesh) if e.num_batches else []
  scaler = exp.data.scaler
  # Each process loads its rows of every global batch (all of them with one process).
  batches = map(scaler, dataset.batches(t.batch_size, exp.seed, start_step,
                                        rows=parallel.local_rows(mesh, t.batch_size)))
  writer = MetricWriter(workdir, enabled=is_main)
  if start_step == 0 and held_out and dataset.marginal_score is not None:
    writer.write(0, {"eval_loss_exact_score": exact_score_floor(exp, dataset, mesh, held_out)})
  snapshot_sampler = None
  if t.snapshot_sampling:
    n = min(64, e.num_samples)
    n = max(parallel.num_shards(mesh), n - n % parallel.num_shards(mesh))
    snapshot_sampler = exp.sampling_fn(n, mesh)

  def evaluate(state, prev, step):
    if e.enable_loss and held_out and any(s % t.eval_freq == 0 for s in range(prev + 1, step + 1)):
      writer.write(step, {"eval_loss": mean_loss(step_fn=eval_step, state=state, batches=held_out,
                                                 key=keys.stream(exp.seed, "eval_loss"))})

  def after_checkpoint(state, step):
    if snapshot_sampler is not None and (step % t.snapshot_freq == 0 or step >= t.n_iters):
      snapshot_figure(exp=exp, workdir=workdir, sampling_fn=snapshot_sampler,
                      score_fn=exp.score_fn(state.ema_params), step=step, dataset=dataset)

  state = run_loop(
      state=state, make_step=make_step, batches=batches, mesh=mesh, start_step=start_step,
      n_iters=t.n_iters, steps_per_call=k, log_freq=t.log_freq, manager=manager, writer=writer,
      record=record, evaluate=evaluate, after_checkpoint=after_checkpoint,
      checkpoint_due=t.checkpoint_due, stop=stop)
  if is_main and figures_wanted(exp):
    print_figures(figures.training_figures(exp, workdir, parallel.to_host(state), dataset))
  return state
