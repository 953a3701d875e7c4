"""Host-side loops: training with logging, checkpoints and figures.

``train_and_evaluate(config, workdir)`` is what ``run.py --mode train`` calls.
A workdir holds ``checkpoints/``, ``config.json``, ``metrics.jsonl``,
``tensorboard/`` (event files) and ``figures/``. Started again with the same
command after being killed, training resumes from the last complete
checkpoint and reaches the same final state as an uninterrupted run: the
PRNG key is part of the checkpointed state and batch ``i`` is a pure function
of ``(seed, i)``.

Every process of a multi-process run executes these loops (one program,
JAX's multi-controller model): each loads its own rows of every global batch
and all take part in every compiled computation; only process 0 writes
metrics, figures, sample files and JSON results (orbax coordinates the
checkpoint writes itself).
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from score_sde_jax import (build, checkpoint, likelihood, losses, metrics, models, parallel,
                           sampling, train, viz)
from score_sde_jax.data import ImageArrays, get_data_inverse_scaler, get_data_scaler
from score_sde_jax.sampling.paths import ode_paths, reverse_sde_paths
from score_sde_jax.score import get_score_fn
from score_sde_jax.sde import simulate_forward

class TrainingDiverged(RuntimeError):
  """The loss or the parameters became NaN or infinite."""


def check_workdir(workdir: str) -> str:
  """The absolute workdir; its parent folder must exist (a typo should not create a tree)."""
  if not workdir:
    raise build.ConfigError("--workdir: required")
  workdir = os.path.abspath(workdir)
  parent = os.path.dirname(workdir)
  if not os.path.isdir(parent):
    raise build.ConfigError(f"--workdir={workdir!r}: parent folder {parent!r} does not exist")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise build.ConfigError(f"--workdir={workdir!r}: exists and is not a folder")
  return workdir


def _write_json_atomic(path, obj):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def _read_metrics(path):
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        break  # a line cut short by a kill
  return rows


def _truncate_metrics(path, last_step):
  """Drops rows logged after ``last_step`` (they belong to steps that will be redone)."""
  rows = [r for r in _read_metrics(path) if r.get("step", 0) <= last_step]
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  os.replace(tmp, path)


class MetricWriter:
  """Appends rows to ``metrics.jsonl`` and scalars to TensorBoard event files (tensorboardX)."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if enabled:
      from tensorboardX import SummaryWriter  # imported lazily: only the writing process needs it
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: dict):
    if not self.enabled:
      return
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    for k, v in scalars.items():
      self._tb.add_scalar(k, float(v), int(step))

  def close(self):
    if self._tb is not None:
      self._tb.close()


@jax.jit
def _all_finite(tree):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _check_batch(batch_size, mesh, field):
  """A global batch that does not split over the devices is a config error, before compiling."""
  try:
    parallel.check_batch_size(batch_size, mesh, field)
  except ValueError as e:
    raise build.ConfigError(str(e)) from None


def _log(*args):
  if parallel.is_main_process():
    print(*args, flush=True)


def _score_fn(config, sde, model, params):
  """The score function of ``params`` under the config's time labels and scaling."""
  return get_score_fn(sde, model, params, config.training.continuous,
                      scale_by_sigma=config.model.scale_by_sigma)


def setup(config, workdir: str | None = None):
  """Validates the config and builds the objects shared by every mode."""
  build.validate_config(config)
  sde = build.get_sde(config)
  model = build.get_model(config)
  dataset = build.get_dataset(config)
  return sde, model, dataset


def _init_state(config, model, optimizer, mesh):
  shape = build.data_shape(config)
  example = jnp.zeros((1,) + shape)
  labels = jnp.ones((1,))
  key = jax.random.PRNGKey(config.seed)
  init = jax.jit(lambda k: train.init_train_state(k, model, example, labels, optimizer),
                 out_shardings=parallel.replicated(mesh))
  return init(key)


def restore_state(config, workdir, state, manager=None):
  """Restores the newest checkpoint of ``workdir`` into ``state``'s structure, if any.

  Returns ``(state, step)``; ``step`` is 0 when there is no checkpoint.
  Refuses (``ConfigError``) a checkpoint written under an incompatible config.
  """
  ckpt_dir = os.path.join(workdir, "checkpoints")
  manager = manager or checkpoint.make_manager(ckpt_dir)
  step = manager.latest_step()
  if step is None:
    return state, 0
  saved = checkpoint.read_config(manager, step)
  build.check_compatible(saved, config.to_dict(), ckpt_dir)
  return checkpoint.restore(manager, step, checkpoint.abstract_like(state)), int(step)


def train_and_evaluate(config, workdir: str):
  """Trains ``config`` in ``workdir`` (resuming if it holds checkpoints); returns the final state."""
  workdir = check_workdir(workdir)
  sde, model, dataset = setup(config)
  t = config.training
  mesh = parallel.make_mesh()
  _check_batch(t.batch_size, mesh, "training.batch_size")
  _check_batch(config.eval.batch_size, mesh, "eval.batch_size")

  os.makedirs(workdir, exist_ok=True)
  is_main = parallel.is_main_process()
  config_dict = config.to_dict()
  manager = checkpoint.make_manager(os.path.join(workdir, "checkpoints"),
                                    max_to_keep=t.max_to_keep, keep_period=t.snapshot_freq)

  optimizer = build.get_optimizer(config)
  state = _init_state(config, model, optimizer, mesh)
  state, start_step = restore_state(config, workdir, state, manager)
  if is_main:
    _write_json_atomic(os.path.join(workdir, "config.json"), config_dict)
    _truncate_metrics(os.path.join(workdir, "metrics.jsonl"), start_step)
  if start_step:
    _log(f"resuming from step {start_step} in {workdir}")

  train_step = train.make_train_step(build.get_loss_fn(config, sde, model, train_mode=True),
                                     optimizer, ema_rate=config.model.ema_rate, mesh=mesh,
                                     n_jitted_steps=t.n_jitted_steps,
                                     lr_schedule=build.get_lr_schedule(config))
  eval_step = train.make_eval_step(build.get_loss_fn(config, sde, model, train_mode=False), mesh)
  k = t.n_jitted_steps
  scaler = get_data_scaler(config.data.centered)  # loader output -> model space
  # Each process loads its rows of every global batch (all of them with one process).
  batches = map(scaler, dataset.batches(t.batch_size, config.seed, start_step,
                                        steps_per_batch=k if k > 1 else 0,
                                        rows=parallel.local_rows(mesh, t.batch_size)))
  writer = MetricWriter(workdir, enabled=is_main)

  def evaluate(step_fn=eval_step):
    key = jax.random.PRNGKey(config.seed + 1)
    eval_batches = map(scaler, dataset.batches(
        config.eval.batch_size, config.seed, split="eval",
        rows=parallel.local_rows(mesh, config.eval.batch_size)))
    values = []
    for i in range(config.eval.num_batches):
      batch = parallel.shard_batch(next(eval_batches), mesh)
      values.append(step_fn(state, batch, jax.random.fold_in(key, i)))
    return float(np.mean(jax.device_get(values)))

  if start_step == 0 and hasattr(dataset, "marginal_score") and config.eval.num_batches:
    # The exact score's loss on the same eval batches and keys: the floor the eval loss approaches.
    exact_fn = lambda x, tt: dataset.marginal_score(sde, x, tt)
    exact_step = jax.jit(lambda _, batch, key: losses.denoising_score_matching(
        jax.random.split(key)[0], sde, exact_fn, batch, reduce_mean=t.reduce_mean,
        likelihood_weighting=t.likelihood_weighting, eps=t.eps),
        out_shardings=parallel.replicated(mesh))
    writer.write(0, {"eval_loss_exact_score": evaluate(exact_step)})

  snapshot_sampler = None
  if t.snapshot_sampling and config.model.name != "mlp":
    n_grid = min(64, config.eval.num_samples)
    n_grid = max(parallel.num_shards(mesh), n_grid - n_grid % parallel.num_shards(mesh))
    snapshot_sampler = sampling.get_sampling_fn(
        config, sde, (n_grid,) + build.data_shape(config),
        get_data_inverse_scaler(config.data.centered), build.sampling_eps(config), mesh=mesh)

  def snapshot_grid(step):
    """A grid of EMA samples at a snapshot, as the paper's ``snapshot_sampling``."""
    score_fn = _score_fn(config, sde, model, state.ema_params)
    x, _ = snapshot_sampler(jax.random.PRNGKey(config.seed + 9), score_fn)
    x = parallel.to_host(x)
    if is_main:
      viz.plot_image_grid(x, os.path.join(workdir, "samples", f"snapshot_{step}.png"),
                          title=f"step {step} (EMA)")

  def save(step):
    if not bool(_all_finite(state.params)):
      raise TrainingDiverged(f"parameters are not finite at step {step}; checkpoint not written, "
                             f"the last good one in {manager.directory} is kept")
    checkpoint.save(manager, step, state, config_dict)

  step = start_step
  bar = tqdm(total=t.n_iters, initial=start_step, unit="step", dynamic_ncols=True,
             disable=not is_main, desc="train")
  last_time, last_step = time.perf_counter(), start_step
  pending = []  # device metrics of the calls since the last log, fetched together
  try:
    while step < t.n_iters:
      batch = parallel.shard_batch(next(batches), mesh, batch_axis=1 if k > 1 else 0)
      state, metrics = train_step(state, batch)
      prev, step = step, step + k
      pending.append(metrics)
      bar.update(k)
      if step // t.log_freq > prev // t.log_freq or step >= t.n_iters:
        # One row per log: the mean of every step since the previous one.
        fetched = jax.device_get(pending)
        pending = []
        row = {name: float(np.mean([np.mean(m[name]) for m in fetched])) for name in fetched[0]}
        if k > 1:
          row["lr"] = float(fetched[-1]["lr"][-1])
        now = time.perf_counter()
        row["steps_per_sec"] = (step - last_step) / max(now - last_time, 1e-9)
        last_time, last_step = now, step
        if not np.all([np.all(np.isfinite(m["loss"])) for m in fetched]):
          raise TrainingDiverged(
              f"loss is not finite between steps {step - len(fetched) * k} and {step}; stopping. "
              f"The last good checkpoint (step {manager.latest_step()}) in {manager.directory} "
              f"is kept")
        writer.write(step, row)
        bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
      if config.eval.enable_loss and config.eval.num_batches and any(
          s % t.eval_freq == 0 for s in range(prev + 1, step + 1)):
        writer.write(step, {"eval_loss": evaluate()})
      if (step % t.snapshot_freq_for_preemption == 0 or step % t.snapshot_freq == 0
          or step >= t.n_iters):
        save(step)
        if snapshot_sampler is not None and (step % t.snapshot_freq == 0 or step >= t.n_iters):
          snapshot_grid(step)
  finally:
    bar.close()
    manager.wait_until_finished()
    writer.close()
  if is_main:
    paths = write_training_figures(config, workdir, parallel.to_host(state), sde, model, dataset)
    print("figures:\n  " + "\n  ".join(paths))
  return state


def write_training_figures(config, workdir, state, sde, model, dataset):
  """Loss curve, forward diffusion and (for Gaussian mixtures) learned vs exact score."""
  fig_dir = os.path.join(workdir, "figures")
  paths = []
  rows = _read_metrics(os.path.join(workdir, "metrics.jsonl"))
  tr = [r for r in rows if "loss" in r]
  ev = [r for r in rows if "eval_loss" in r]
  if tr:
    floor = [r["eval_loss_exact_score"] for r in rows if "eval_loss_exact_score" in r]
    paths.append(viz.plot_loss([r["step"] for r in tr], [r["loss"] for r in tr],
                               os.path.join(fig_dir, "loss.png"),
                               eval_steps=[r["step"] for r in ev],
                               eval_loss=[r["eval_loss"] for r in ev],
                               floor=floor[-1] if floor else None,
                               title=f"DSM loss ({config.data.dataset}, {config.training.sde})"))
  if config.model.name == "mlp" and config.data.dim >= 2:
    x0 = jnp.asarray(dataset.sample(np.random.default_rng(config.seed), 2000), jnp.float32)
    ts, xs = jax.jit(simulate_forward, static_argnums=(1, 3, 4), static_argnames="save_every")(
        jax.random.PRNGKey(config.seed), sde, x0, sde.T, 1000, save_every=10)
    paths.append(viz.plot_forward_diffusion(
        ts, xs, os.path.join(fig_dir, "forward_diffusion.png"),
        title=f"Forward {config.training.sde} diffusion of {config.data.dataset} data"))
  if hasattr(dataset, "marginal_score") and config.model.name == "mlp" and config.data.dim == 2:
    paths.append(score_field_figure(config, state, sde, model, dataset,
                                    os.path.join(fig_dir, "score_field.png")))
  return paths


def score_field_figure(config, state, sde, model, dataset, path, times=(0.02, 0.1, 0.3, 0.7)):
  lim = float(np.abs(dataset.means).max() + 3 * np.sqrt(dataset.covs.max()))
  g = np.linspace(-lim, lim, 21)
  grid = jnp.asarray(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2), jnp.float32)
  score_fn = jax.jit(_score_fn(config, sde, model, state.ema_params))
  learned, exact = [], []
  for t in times:
    tt = jnp.full((grid.shape[0],), t)
    learned.append(score_fn(grid, tt))
    exact.append(dataset.marginal_score(sde, grid, tt))
  data = dataset.sample(np.random.default_rng(0), 2000)
  return viz.plot_score_fields(grid, times, jax.device_get(learned), jax.device_get(exact), path,
                               data=data)


def _restore_for_inference(config, workdir):
  """Validated objects and the newest checkpoint's state of a trained workdir."""
  workdir = check_workdir(workdir)
  sde, model, dataset = setup(config)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  manager = checkpoint.make_manager(ckpt_dir) if os.path.isdir(ckpt_dir) else None
  if manager is None or manager.latest_step() is None:
    raise build.ConfigError(f"--workdir={workdir!r}: no checkpoint in {ckpt_dir}; "
                            f"train first with --mode train")
  mesh = parallel.make_mesh()
  state = _init_state(config, model, build.get_optimizer(config), mesh)
  state, step = restore_state(config, workdir, state, manager)
  return workdir, sde, model, dataset, state, step, mesh


def sample(config, workdir: str):
  """``--mode sample``: draws ``eval.num_samples`` samples with the EMA parameters.

  Writes ``samples/<sampler>_step<step>.npz``, sample-quality metrics against
  held-out data in ``eval/samples_<sampler>_step<step>.json`` (MMD, sliced
  Wasserstein, and the exact log-density of the samples for Gaussian
  mixtures), and figures ``figures/samples.png`` and ``figures/trajectories.png``.
  """
  workdir, sde, model, dataset, state, step, mesh = _restore_for_inference(config, workdir)
  e = config.eval
  _check_batch(e.batch_size, mesh, "eval.batch_size")
  is_main = parallel.is_main_process()
  score_fn = _score_fn(config, sde, model, state.ema_params)
  shape = (e.batch_size,) + build.data_shape(config)
  eps = build.sampling_eps(config)
  inverse_scaler = get_data_inverse_scaler(config.data.centered)
  sampling_fn = sampling.get_sampling_fn(config, sde, shape, inverse_scaler, eps, mesh=mesh)
  key = jax.random.PRNGKey(config.seed + 2)
  chunks, nfes = [], []
  n_batches = -(-e.num_samples // e.batch_size)
  start = time.perf_counter()
  for i in tqdm(range(n_batches), desc=f"sample ({build.sampling_tag(config)})", unit="batch",
                disable=not is_main):
    x, nfe = sampling_fn(jax.random.fold_in(key, i), score_fn)
    chunks.append(parallel.to_host(x))  # gathered from every process
    nfes.append(nfe)
  seconds = time.perf_counter() - start
  samples = np.concatenate(chunks)[:e.num_samples]
  tag = f"{build.sampling_tag(config)}_step{step}"
  result = {"step": step, "sampler": build.sampling_tag(config), "num_samples": int(len(samples)),
            "nfe_per_batch": float(np.mean(nfes)), "seconds": round(seconds, 2),
            "devices": parallel.num_shards(mesh)}
  if not is_main:  # every process holds the samples; process 0 writes them
    return samples, result
  os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
  np.savez(os.path.join(workdir, "samples", f"{tag}.npz"), samples=samples, nfe=np.asarray(nfes))
  if config.model.name != "mlp":
    samples = np.clip(samples, 0.0, 1.0)
    grid = viz.plot_image_grid(samples[:64], os.path.join(workdir, "figures", f"samples_{tag}.png"),
                               title=f"{result['sampler']}, step {step}")
    os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
    _write_json_atomic(os.path.join(workdir, "eval", f"samples_{tag}.json"), result)
    print(json.dumps(result))
    print(f"figures:\n  {grid}")
    return samples, result

  held_out = next(dataset.batches(e.num_samples, config.seed, split="test"))
  n_mmd = min(2000, e.num_samples)
  result.update({
            "mmd": metrics.mmd(samples[:n_mmd], held_out[:n_mmd]),
            "mmd_held_out_vs_train_data": metrics.mmd(
                next(dataset.batches(n_mmd, config.seed + 7, split="train")), held_out[:n_mmd]),
            "sliced_wasserstein": metrics.sliced_wasserstein(samples, held_out)})
  log_prob = getattr(dataset, "log_prob", None)
  if log_prob is not None:
    lp = np.asarray(log_prob(jnp.asarray(samples)))
    result["exact_log_prob_of_samples"] = float(np.mean(lp[np.isfinite(lp)]))
    result["exact_log_prob_of_held_out"] = float(np.mean(np.asarray(log_prob(jnp.asarray(held_out)))))
  os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
  _write_json_atomic(os.path.join(workdir, "eval", f"samples_{tag}.json"), result)
  print(json.dumps(result))

  if config.data.dim == 2:
    # Figures on process 0 alone: a score function of host parameters (no collectives).
    score_fn = _score_fn(config, sde, model, parallel.to_host(state.ema_params))
    fig_dir = os.path.join(workdir, "figures")
    lp_fn = (lambda xy: log_prob(jnp.asarray(xy, jnp.float32))) if log_prob is not None else None
    paths = [viz.plot_samples(samples, held_out, os.path.join(fig_dir, "samples.png"),
                              log_prob_fn=lp_fn,
                              title=f"{result['sampler']}, step {step}: MMD {result['mmd']:.4f}, "
                                    f"NFE {result['nfe_per_batch']:.0f}")]
    z = sde.prior_sampling(jax.random.PRNGKey(config.seed + 3), (60,) + build.data_shape(config))
    sde_ts, sde_xs = reverse_sde_paths(jax.random.PRNGKey(config.seed + 4), sde, score_fn, z,
                                       eps=eps)
    ode_ts, ode_xs = ode_paths(sde, score_fn, z, eps=eps)
    paths.append(viz.plot_trajectories(sde_ts, sde_xs, ode_ts, ode_xs,
                                       os.path.join(fig_dir, "trajectories.png"), data=held_out))
    print("figures:\n  " + "\n  ".join(paths))
  return samples, result


def _mean_se(values):
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def evaluate(config, workdir: str):
  """``--mode eval``: DSM loss and negative log-likelihood on the test split.

  Vector data: NLL in nats per example (the probability-flow ODE at
  ``eval.likelihood_eps``), with its standard error over examples and the NFE.
  Gaussian mixtures also get the data's exact entropy and the gap (NLL minus
  entropy: the KL divergence from data to model). Written to
  ``eval/eval_step<step>.json`` and printed; 2-D data also gets figures.
  """
  workdir, sde, model, dataset, state, step, mesh = _restore_for_inference(config, workdir)
  e = config.eval
  _check_batch(e.batch_size, mesh, "eval.batch_size")
  rows = parallel.local_rows(mesh, e.batch_size)  # this process's rows of every batch
  if isinstance(dataset, ImageArrays):
    return _evaluate_images(config, workdir, sde, model, dataset, state, step, mesh, rows)
  n_batches = -(-e.num_eval_examples // e.batch_size)
  test = next(dataset.batches(n_batches * e.batch_size, config.seed, split="test"))
  test = test.reshape((n_batches, e.batch_size) + test.shape[1:])
  result = {"step": step, "num_examples": int(e.num_eval_examples)}

  loss_fn = build.get_loss_fn(config, sde, model, train_mode=False)
  eval_step = train.make_eval_step(loss_fn, mesh)
  key = jax.random.PRNGKey(config.seed + 5)
  batch_losses = [float(eval_step(state, parallel.shard_batch(b[rows], mesh),
                                  jax.random.fold_in(key, i))) for i, b in enumerate(test)]
  result["dsm_loss"], result["dsm_loss_se"] = _mean_se(batch_losses)  # SE over batch means

  score_fn = _score_fn(config, sde, model, state.ema_params)
  if e.enable_bpd:
    logps, nfes = [], []
    for i, b in enumerate(tqdm(test, desc=f"likelihood ({e.divergence})", unit="batch",
                               disable=not parallel.is_main_process())):
      logp, _, nfe = likelihood.log_likelihood(
          jax.random.fold_in(key, 10_000 + i), sde, score_fn, parallel.shard_batch(b[rows], mesh),
          divergence=e.divergence, rtol=e.rtol, atol=e.atol, eps=e.likelihood_eps, mesh=mesh)
      logps.append(parallel.to_host(logp))
      nfes.append(parallel.to_host(nfe))
    logps = np.concatenate(logps)[:e.num_eval_examples]
    result["nll_nats"], result["nll_nats_se"] = _mean_se(-logps)
    result["nfe_mean"] = float(np.mean(np.concatenate(nfes)))
    result["divergence"] = e.divergence
    if hasattr(dataset, "log_prob"):
      exact = np.asarray(dataset.log_prob(jnp.asarray(test.reshape((-1,) + test.shape[2:]))))
      exact = exact[:e.num_eval_examples]
      result["data_entropy_nats_on_test"], _ = _mean_se(-exact)
      result["data_entropy_nats"], result["data_entropy_nats_se"] = dataset.entropy_mc(
          np.random.default_rng(config.seed + 6))
      # Paired difference on the same examples: the KL(data || model) estimate.
      result["gap_nats"], result["gap_nats_se"] = _mean_se(-logps + exact)
  if not parallel.is_main_process():
    return result
  os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
  _write_json_atomic(os.path.join(workdir, "eval", f"eval_step{step}.json"), result)
  print(json.dumps(result))
  if config.model.name == "mlp" and config.data.dim == 2:
    score_fn = _score_fn(config, sde, model, parallel.to_host(state.ema_params))
    paths = write_likelihood_figures(config, workdir, sde, score_fn, dataset,
                                     test.reshape((-1, 2)))
    print("figures:\n  " + "\n  ".join(paths))
  return result


def _evaluate_images(config, workdir, sde, model, dataset, state, step, mesh, rows):
  """Image data: DSM loss and bits/dim (dequantized, ``eval.bpd_repeats`` rounds) on held-out images."""
  e = config.eval
  scaler = get_data_scaler(config.data.centered)
  levels = dataset.test_levels[:e.num_eval_examples]
  n = len(levels)
  n_batches = -(-n // e.batch_size)
  # Pad the last batch by repeating images so every call has one shape (one compilation).
  padded = np.concatenate([levels, levels[np.arange(n_batches * e.batch_size - n) % n]])
  padded = padded.reshape((n_batches, e.batch_size) + levels.shape[1:])
  result = {"step": step, "num_examples": int(n)}
  loss_fn = build.get_loss_fn(config, sde, model, train_mode=False)
  eval_step = train.make_eval_step(loss_fn, mesh)
  key = jax.random.PRNGKey(config.seed + 5)
  batch_losses = [float(eval_step(state, parallel.shard_batch(scaler(dataset.to_unit(b[rows])), mesh),
                                  jax.random.fold_in(key, i))) for i, b in enumerate(padded)]
  result["dsm_loss"], result["dsm_loss_se"] = _mean_se(batch_losses)
  if e.enable_bpd:
    score_fn = _score_fn(config, sde, model, state.ema_params)
    bpds, nfes = [], []
    for i, b in enumerate(tqdm(padded, desc=f"bits/dim ({e.divergence})", unit="batch",
                               disable=not parallel.is_main_process())):
      bpd, nfe = likelihood.bits_per_dim(
          jax.random.fold_in(key, 10_000 + i), sde, score_fn, parallel.shard_batch(b[rows], mesh),
          num_levels=dataset.num_levels, scaler=scaler, n_repeats=e.get("bpd_repeats", 1),
          divergence=e.divergence, rtol=e.rtol, atol=e.atol, eps=e.likelihood_eps, mesh=mesh)
      bpds.append(parallel.to_host(bpd))
      nfes.append(parallel.to_host(nfe))
    bpds = np.concatenate(bpds)[:n]
    result["bits_per_dim"], result["bits_per_dim_se"] = _mean_se(bpds)
    result["nfe_mean"] = float(np.mean(np.concatenate(nfes)[:n]))
    result["divergence"] = e.divergence
    result["bpd_repeats"] = int(e.get("bpd_repeats", 1))
  if not parallel.is_main_process():
    return result
  os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
  _write_json_atomic(os.path.join(workdir, "eval", f"eval_step{step}.json"), result)
  print(json.dumps(result))
  return result


def write_likelihood_figures(config, workdir, sde, score_fn, dataset, data):
  """Model vs exact log-density on a grid, latent interpolations, encode-decode reconstructions."""
  e = config.eval
  fig_dir = os.path.join(workdir, "figures")
  kw = dict(rtol=e.rtol, atol=e.atol, eps=e.likelihood_eps)
  lim = float(np.quantile(np.abs(data), 0.999)) * 1.2
  g = np.linspace(-lim, lim, 64)
  grid = jnp.asarray(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2), jnp.float32)
  model_lp = np.concatenate([np.asarray(likelihood.log_likelihood(
      None, sde, score_fn, chunk, divergence="exact", **kw)[0])
      for chunk in jnp.split(grid, 8)])
  exact_lp = np.asarray(dataset.log_prob(grid)) if hasattr(dataset, "log_prob") else None
  paths = [viz.plot_log_density(g, model_lp.reshape(64, 64), os.path.join(fig_dir, "log_density.png"),
                                exact=None if exact_lp is None else exact_lp.reshape(64, 64))]
  rng = np.random.default_rng(config.seed)
  pairs = data[rng.choice(len(data), size=(6, 2), replace=False)]
  z = likelihood.encode(sde, score_fn, jnp.asarray(pairs.reshape(-1, 2)), **kw).reshape(6, 2, 2)
  alphas = np.linspace(0, 1, 9)
  latents = likelihood.interpolate(z[:, 0], z[:, 1], alphas).reshape(-1, 2)
  decoded = np.asarray(likelihood.decode(sde, score_fn, latents, **kw)).reshape(6, len(alphas), 2)
  paths.append(viz.plot_interpolations(decoded, alphas, data, os.path.join(fig_dir, "interpolation.png")))
  x = jnp.asarray(data[:200])
  recon = likelihood.decode(sde, score_fn, likelihood.encode(sde, score_fn, x, **kw), **kw)
  paths.append(viz.plot_reconstructions(np.asarray(x), np.asarray(recon), data,
                                        os.path.join(fig_dir, "reconstruction.png")))
  return paths


def info(config, workdir=None):
  """``--mode info``: the network and its parameter count, without allocating parameters.

  The last printed line is one JSON object (``params``, ``model``, ``image_size``, ...).
  """
  build.validate_model_config(config)
  model = build.get_model(config)
  shape = build.data_shape(config)
  example = jax.ShapeDtypeStruct((1,) + shape, jnp.float32)
  labels = jax.ShapeDtypeStruct((1,), jnp.float32)
  params = models.param_shapes(model, example, labels)
  n_params = models.param_count(params)
  print(f"model: {type(model).__name__} ({config.model.name}), input {shape}, "
        f"SDE {config.training.sde}, continuous={config.training.continuous}")
  for name, sub in params.items():
    print(f"  {name:<20s} {models.param_count(sub):>12,d}")
  print(f"  {'total':<20s} {n_params:>12,d}")
  summary = {"params": n_params, "model": config.model.name, "sde": config.training.sde,
             "image_size": config.data.get("image_size"), "data_shape": list(shape),
             "top_level_modules": len(params)}
  print(json.dumps(summary))
  return summary
