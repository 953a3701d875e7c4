"""``--mode train_classifier``: a noise-conditional classifier ``p_t(y | x_t)`` for
class-conditional sampling, trained as score models are (the shared loop of ``--mode train``:
logging, divergence stop, checkpoints, resume to the same final state).

The config's ``classifier`` section names the network and its training; its data, SDE and data
scaling are the run's. The classifier lives in ``classifier.workdir`` (default
``<workdir>/classifier``): ``checkpoints/``, ``config.json``, ``metrics.jsonl`` (training loss
and accuracy, and the EMA model's held-out ``eval_loss`` / ``eval_accuracy`` every
``classifier.eval_freq`` steps), and at the end ``eval/classifier_step<step>.json`` and
``figures/classifier_accuracy_step<step>.png``: held-out accuracy against diffusion time, beside
the exact Bayes classifier where the data has one (the Gaussian mixture).
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from score_sde_jax import classifier, keys, parallel, train, viz
from score_sde_jax import workdir as workdir_lib
from score_sde_jax.build import ConfigError
from score_sde_jax.experiment import Experiment
from score_sde_jax.metric_writer import MetricWriter
from score_sde_jax.modes.loop import StopRequest, check_batch, run_loop, start_or_resume
from score_sde_jax.modes.results import figures_wanted


def check_labels(exp: Experiment, dataset) -> None:
  """The data set has class labels, as many classes as the classifier (before compiling)."""
  k = dataset.num_classes
  if k is None:
    raise ConfigError(f"config.data.dataset={exp.data.name!r}: has no class labels to train a "
                      f"classifier on (digits, cifar10, npz files with a 'labels' array and gmm "
                      f"have them)")
  if k != exp.classifier.num_classes:
    raise ConfigError(f"config.classifier.num_classes={exp.classifier.num_classes}: the data set "
                      f"{exp.data.name!r} has {k} classes")


class HeldOut:
  """The classifier's held-out evaluation: ``eval.batch_size`` labelled held-out examples, each
  at ``repeats`` fixed draws of ``(t, z)`` (from the ``classifier_eval`` stream), in model space."""

  def __init__(self, exp: Experiment, dataset, mesh, repeats: int = 1):
    n, c, sde = exp.eval.batch_size, exp.classifier, exp.sde
    x, y = next(dataset.batches(n, exp.seed, split="eval", labels=True))
    x = np.asarray(exp.data.scaler(jax.numpy.asarray(x)))
    key_t, key_z = jax.random.split(keys.stream(exp.seed, "classifier_eval"))
    shape = (repeats, n)
    self.t = np.asarray(jax.random.uniform(key_t, shape, minval=c.eps, maxval=sde.T))
    self.z = np.asarray(jax.random.normal(key_z, shape + x.shape[1:]))
    self.x, self.y = np.broadcast_to(x, shape + x.shape[1:]), np.broadcast_to(y, shape)
    self.sde, self.mesh, self.rows = sde, mesh, parallel.local_rows(mesh, n)
    self._losses = jax.jit(
        lambda fn, x, y, t, z: classifier.classifier_losses(sde, fn, x, y, t, z))

  def evaluate(self, classifier_fn):
    """``(loss (R, n), correct (R, n))`` of ``classifier_fn`` on every repeat."""
    out = []
    for r in range(self.t.shape[0]):
      batch = parallel.shard_batch(tuple(a[r, self.rows] for a in (self.x, self.y, self.t, self.z)),
                                   self.mesh)
      out.append(parallel.to_host(self._losses(classifier_fn, *batch)))
    return tuple(np.stack(v) for v in zip(*out))


def accuracy_by_time(t, correct, bins: int = 10):
  """``(bin centres, accuracy per bin)`` over ``[0, 1]``."""
  edges = np.linspace(0.0, 1.0, bins + 1)
  idx = np.clip(np.digitize(np.ravel(t), edges) - 1, 0, bins - 1)
  correct = np.ravel(correct).astype(np.float64)
  acc = np.array([correct[idx == b].mean() if np.any(idx == b) else np.nan for b in range(bins)])
  return (edges[:-1] + edges[1:]) / 2, acc


def train_classifier(exp: Experiment, workdir: str, *, stop: StopRequest | None = None):
  """Trains ``exp.classifier`` (resuming from its newest checkpoint); returns the state."""
  workdir = workdir_lib.check_workdir(workdir)
  dataset = exp.data.load()
  check_labels(exp, dataset)
  c, e = exp.classifier, exp.eval
  mesh = parallel.make_mesh()
  check_batch(c.batch_size, mesh, "classifier.batch_size")
  check_batch(e.batch_size, mesh, "eval.batch_size")
  directory = c.directory(workdir)
  os.makedirs(workdir, exist_ok=True)
  directory = workdir_lib.check_workdir(directory)
  os.makedirs(directory, exist_ok=True)
  with workdir_lib.lock(directory):  # one trainer per classifier folder
    return _train_classifier(exp, directory, dataset, mesh, stop)


def _train_classifier(exp: Experiment, directory, dataset, mesh, stop):
  c, sde, model = exp.classifier, exp.sde, exp.classifier.network
  is_main = parallel.is_main_process()
  manager = workdir_lib.checkpoints(directory, max_to_keep=c.max_to_keep)
  optimizer = c.optimizer.make()
  seed = keys.stream_seed(exp.seed, "classifier")  # its batches differ from the score model's
  state, start_step = start_or_resume(
      exp, directory, manager,
      c.init_state(keys.stream(exp.seed, "classifier"), exp.data.shape, optimizer, mesh), mesh,
      select=workdir_lib.classifier_view)

  loss_fn = classifier.get_classifier_loss_fn(sde, model, eps=c.eps, with_accuracy=True)
  k = exp.training.n_jitted_steps
  make_step = lambda r: train.make_train_step(
      loss_fn, optimizer, ema_rate=c.ema_rate, ema_warmup=c.ema_warmup, mesh=mesh, n_jitted_steps=r, scan=k > 1,
      loop=exp.steps_loop(), has_aux=True, lr_schedule=c.optimizer.lr_schedule())
  scaler = exp.data.scaler
  batches = ((scaler(x), y) for x, y in dataset.batches(
      c.batch_size, seed, start_step, rows=parallel.local_rows(mesh, c.batch_size), labels=True))
  held_out = HeldOut(exp, dataset, mesh)
  writer = MetricWriter(directory, enabled=is_main)
  exact = dataset.marginal_log_posterior
  exact_fn = jax.tree_util.Partial(lambda x, t: exact(sde, x, t)) if exact else None
  if start_step == 0 and exact_fn is not None:
    loss, correct = held_out.evaluate(exact_fn)
    writer.write(0, {"eval_loss_exact": float(loss.mean()),
                     "eval_accuracy_exact": float(correct.mean())})

  def evaluate(state, prev, step):
    if any(s % c.eval_freq == 0 for s in range(prev + 1, step + 1)) or step >= c.n_iters:
      loss, correct = held_out.evaluate(classifier.get_classifier_fn(sde, model, state.ema_params))
      writer.write(step, {"eval_loss": float(loss.mean()), "eval_accuracy": float(correct.mean())})

  state = run_loop(state=state, make_step=make_step, batches=batches, mesh=mesh,
                   start_step=start_step, n_iters=c.n_iters, steps_per_call=k,
                   log_freq=c.log_freq, manager=manager, writer=writer, record=dict(exp.record),
                   evaluate=evaluate, checkpoint_due=lambda s: s % c.snapshot_freq == 0,
                   desc="classifier", stop=stop)
  report(exp, directory, state, dataset, mesh, exact_fn)
  return state


def report(exp: Experiment, directory, state, dataset, mesh, exact_fn=None) -> dict:
  """Held-out accuracy against ``t`` (about 4000 draws) of the EMA classifier (and the exact
  one): ``eval/classifier_step<step>.json`` and a figure."""
  sde, c = exp.sde, exp.classifier
  step = int(parallel.to_host(state.step))
  repeats = max(1, -(-4000 // exp.eval.batch_size))
  held_out = HeldOut(exp, dataset, mesh, repeats=repeats)
  fn = classifier.get_classifier_fn(sde, c.network, state.ema_params)
  loss, correct = held_out.evaluate(fn)
  centres, acc = accuracy_by_time(held_out.t, correct)
  result = {"step": step, "num_evaluations": int(correct.size), "loss": float(loss.mean()),
            "accuracy": float(correct.mean()), "t_bin_centres": centres.round(3).tolist(),
            "accuracy_by_t": acc.round(4).tolist()}
  curves = {"classifier (EMA)": acc}
  if exact_fn is not None:
    loss_x, correct_x = held_out.evaluate(exact_fn)
    result.update(loss_exact=float(loss_x.mean()), accuracy_exact=float(correct_x.mean()),
                  accuracy_exact_by_t=accuracy_by_time(held_out.t, correct_x)[1].round(4).tolist())
    curves["exact posterior"] = np.asarray(result["accuracy_exact_by_t"])
  if parallel.is_main_process():
    workdir_lib.write_json(os.path.join(directory, "eval", f"classifier_step{step}.json"), result)
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, list)}))
    if not figures_wanted(exp):
      return result
    path = viz.plot_accuracy_vs_time(
        centres, curves, os.path.join(directory, "figures", f"classifier_accuracy_step{step}.png"),
        chance=1.0 / c.num_classes,
        title=f"{c.name}, {exp.model.sde_name}, step {step}: held-out accuracy")
    print(f"figures:\n  {path}")
  return result
