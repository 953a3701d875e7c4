"""``--mode eval``: DSM loss and likelihood of the EMA model on held-out data.

One path for vector data and images; only the likelihood's unit differs:
negative log-likelihood in nats per example for continuous data (with the data's exact
entropy and the gap, an estimate of KL(data || model), where the data has an
exact density), bits/dim with uniform dequantization for data of discrete levels (images).
Written to ``eval/eval_step<step>.json`` and printed. Figures: 2-D data gets the log-density,
interpolation and reconstruction; images get the semantic interpolation grid and the
encode-decode reconstructions (their error is in the JSON).
"""

from __future__ import annotations

import jax
import numpy as np
from tqdm.auto import tqdm

from score_sde_jax import figures, keys, parallel, train
from score_sde_jax import workdir as workdir_lib
from score_sde_jax.experiment import Experiment
from score_sde_jax.modes.loop import check_batch
from score_sde_jax.modes.results import figures_wanted, print_figures, write_result
from score_sde_jax.sampling import progress as sampling_progress


def mean_se(values):
  """Mean and its standard error."""
  values = np.asarray(values, np.float64)
  se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
  return float(values.mean()), se


def padded_batches(held_out, batch_size):
  """``(n_batches, batch_size, ...)``: the last batch padded by repeating examples (one shape,
  one compilation); results beyond the real examples are dropped."""
  n = len(held_out)
  n_batches = -(-n // batch_size)
  padded = np.concatenate([held_out, held_out[np.arange(n_batches * batch_size - n) % n]])
  return padded.reshape((n_batches, batch_size) + held_out.shape[1:])


def _negative_log_likelihoods(run, dataset, batches, rows):
  """Per example: bits/dim of data in discrete levels, or the NLL in nats; and the NFE."""
  e, seed = run.experiment.eval, run.experiment.seed
  values, nfes = [], []
  for i, b in enumerate(tqdm(batches, desc=f"likelihood ({e.divergence})", unit="batch",
                             disable=not parallel.is_main_process())):
    # Inside each batch, diffrax's bar: the share of [eps, T] its slowest example has covered.
    with sampling_progress.stage(f"likelihood batch {i + 1}/{len(batches)}"):
      value, nfe = _batch_likelihood(run, dataset, b[rows], jax.random.fold_in(
          keys.stream(seed, "likelihood"), i))
    values.append(parallel.to_host(value))
    nfes.append(parallel.to_host(nfe))
  return np.concatenate(values), np.concatenate(nfes)


def _batch_likelihood(run, dataset, batch, key):
  e = run.experiment.eval
  if dataset.num_levels is not None:
    return run.bits_per_dim(key, parallel.shard_batch(batch, run.mesh),
                            num_levels=dataset.num_levels, n_repeats=e.bpd_repeats)
  logp, _, nfe = run.log_likelihood(key, parallel.shard_batch(batch, run.mesh))
  return -logp, nfe


def evaluate(exp: Experiment, workdir: str, *, stop=None):
  """Loss and likelihood on ``eval.num_eval_examples`` held-out examples; returns the result."""
  del stop
  mesh = parallel.make_mesh()
  e = exp.eval
  check_batch(e.batch_size, mesh, "eval.batch_size")
  run = workdir_lib.load_workdir(workdir, exp, mesh=mesh)
  dataset = exp.data.load()
  held_out = dataset.held_out(e.num_eval_examples, exp.seed)
  n = len(held_out)
  batches = padded_batches(held_out, e.batch_size)
  rows = parallel.local_rows(mesh, e.batch_size)  # this process's rows of every batch
  eval_step = train.make_eval_step(exp.training.objective.loss_fn(exp.model, train_mode=False),
                                   mesh)
  key = keys.stream(exp.seed, "eval")
  losses = [float(eval_step(run.state, parallel.shard_batch(run.scaler(dataset.to_unit(b[rows])),
                                                           mesh), jax.random.fold_in(key, i)))
            for i, b in enumerate(batches)]
  result = {"step": run.step, "num_examples": int(n)}
  result["dsm_loss"], result["dsm_loss_se"] = mean_se(losses)  # SE over batch means
  if e.enable_bpd:
    values, nfes = _negative_log_likelihoods(run, dataset, batches, rows)
    values = values[:n]
    result["nfe_mean"] = float(np.mean(nfes[:n]))
    result["divergence"] = e.divergence
    if dataset.num_levels is not None:
      result["bits_per_dim"], result["bits_per_dim_se"] = mean_se(values)
      result["bpd_repeats"] = int(e.bpd_repeats)
    else:
      result["nll_nats"], result["nll_nats_se"] = mean_se(values)
      if dataset.log_prob is not None:
        exact = np.asarray(dataset.log_prob(held_out))
        result["data_entropy_nats_on_test"], _ = mean_se(-exact)
        result["data_entropy_nats"], result["data_entropy_nats_se"] = dataset.entropy_mc(
            keys.numpy_stream(exp.seed, "entropy"))
        # Paired difference on the same examples: the KL(data || model) estimate.
        result["gap_nats"], result["gap_nats_se"] = mean_se(values + exact)
  if not parallel.is_main_process():
    return result
  paths, wanted = [], figures_wanted(exp)
  if wanted and dataset.kind == "image":  # host copies of the parameters: process 0 alone
    paths, stats = figures.image_flow_figures(run, dataset, held_out)
    result.update(stats)
  write_result(run.workdir, f"eval_step{run.step}", result)
  if wanted:
    print_figures(paths + figures.likelihood_figures(run, dataset, held_out))
  return result
