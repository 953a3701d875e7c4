"""``--mode eval``: DSM loss and likelihood of the EMA model on held-out data.

One path for vector data and images; only the likelihood's unit differs:
negative log-likelihood in nats per example for vectors (with the data's exact
entropy and the gap, an estimate of KL(data || model), where the data has an
exact density), bits/dim with uniform dequantization for images. Written to
``eval/eval_step<step>.json`` and printed. Figures: 2-D data gets the log-density,
interpolation and reconstruction; images get the semantic interpolation grid and the
encode-decode reconstructions (their error is in the JSON).
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from tqdm.auto import tqdm

from score_sde_jax import build, figures, keys, parallel, train
from score_sde_jax import workdir as workdir_lib
from score_sde_jax.modes.train import check_batch


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
  """Per example: bits/dim of integer images, or the NLL in nats of vectors; and the NFE."""
  e, seed = run.config.eval, run.config.seed
  values, nfes = [], []
  for i, b in enumerate(tqdm(batches, desc=f"likelihood ({e.divergence})", unit="batch",
                             disable=not parallel.is_main_process())):
    key = jax.random.fold_in(keys.stream(seed, "likelihood"), i)
    if dataset.is_image:
      value, nfe = run.bits_per_dim(key, parallel.shard_batch(b[rows], run.mesh),
                                    num_levels=dataset.num_levels,
                                    n_repeats=e.get("bpd_repeats", 1))
    else:
      logp, _, nfe = run.log_likelihood(key, parallel.shard_batch(b[rows], run.mesh))
      value = -logp
    values.append(parallel.to_host(value))
    nfes.append(parallel.to_host(nfe))
  return np.concatenate(values), np.concatenate(nfes)


def evaluate(config, workdir: str):
  """Loss and likelihood on ``eval.num_eval_examples`` held-out examples; returns the result."""
  build.validate_config(config)
  mesh = parallel.make_mesh()
  e = config.eval
  check_batch(e.batch_size, mesh, "eval.batch_size")
  run = workdir_lib.load_workdir(workdir, config, mesh=mesh)
  dataset = build.get_dataset(config)
  held_out = dataset.held_out(e.num_eval_examples, config.seed)
  n = len(held_out)
  batches = padded_batches(held_out, e.batch_size)
  rows = parallel.local_rows(mesh, e.batch_size)  # this process's rows of every batch
  eval_step = train.make_eval_step(build.get_loss_fn(config, run.sde, run.model, train_mode=False),
                                   mesh)
  key = keys.stream(config.seed, "eval")
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
    if dataset.is_image:
      result["bits_per_dim"], result["bits_per_dim_se"] = mean_se(values)
      result["bpd_repeats"] = int(e.get("bpd_repeats", 1))
    else:
      result["nll_nats"], result["nll_nats_se"] = mean_se(values)
      if hasattr(dataset, "log_prob"):
        exact = np.asarray(dataset.log_prob(held_out))
        result["data_entropy_nats_on_test"], _ = mean_se(-exact)
        result["data_entropy_nats"], result["data_entropy_nats_se"] = dataset.entropy_mc(
            keys.numpy_stream(config.seed, "entropy"))
        # Paired difference on the same examples: the KL(data || model) estimate.
        result["gap_nats"], result["gap_nats_se"] = mean_se(values + exact)
  if not parallel.is_main_process():
    return result
  paths = []
  if dataset.is_image:  # host copies of the parameters: process 0 alone, no collectives
    paths, stats = figures.image_flow_figures(run, dataset, held_out)
    result.update(stats)
  workdir_lib.write_json(os.path.join(run.workdir, "eval", f"eval_step{run.step}.json"), result)
  print(json.dumps(result))
  paths += figures.likelihood_figures(run, dataset, held_out)
  if paths:
    print("figures:\n  " + "\n  ".join(paths))
  return result
