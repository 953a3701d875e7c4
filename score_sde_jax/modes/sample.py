"""``--mode sample``: ``eval.num_samples`` samples of the EMA model, with metrics and figures.

Writes ``samples/<sampler>_step<step>.npz``, ``eval/samples_<sampler>_step<step>.json``
(for vector data also MMD and sliced Wasserstein distance to held-out data, and
the exact log-density of the samples where the data has one) and figures. The
samples are ``load_workdir(workdir, experiment).sample(keys.stream(seed, "sample"), n)``.
"""

from __future__ import annotations

import sys
import time

import jax.numpy as jnp
import numpy as np

from score_sde_jax import figures, keys, metrics, parallel
from score_sde_jax import workdir as workdir_lib
from score_sde_jax.experiment import Experiment
from score_sde_jax.modes.loop import check_batch
from score_sde_jax.modes.results import figures_wanted, print_figures, write_result


def vector_metrics(seed: int, dataset, samples, held_out) -> dict:
  """Distances of vector samples to held-out data, and their exact log-density where known."""
  n_mmd = min(2000, len(samples))
  reference = next(dataset.batches(n_mmd, keys.stream_seed(seed, "reference")))
  result = {"mmd": metrics.mmd(samples[:n_mmd], held_out[:n_mmd]),
            "mmd_held_out_vs_train_data": metrics.mmd(reference, held_out[:n_mmd]),
            "sliced_wasserstein": metrics.sliced_wasserstein(samples, held_out)}
  if dataset.log_prob is not None:
    lp = np.asarray(dataset.log_prob(jnp.asarray(samples)))
    result["exact_log_prob_of_samples"] = float(np.mean(lp[np.isfinite(lp)]))
    result["exact_log_prob_of_held_out"] = float(np.mean(np.asarray(
        dataset.log_prob(jnp.asarray(held_out)))))
  return result


# Above this share of sample values outside the data's range, sample mode says so.
OUTSIDE_WARNING = 0.05


def range_check(dataset, samples, held_out=None, warn=None) -> dict:
  """The share of sample values outside the data's range widened by a tenth of its width on each
  side, with that range: images ``[-0.1, 1.1]``; points the held-out data's range per
  coordinate, widened the same way. The margin keeps a trained model's overshoot out (half of
  the digits' many exact-0 background pixels come out slightly below 0: 23% of the values of a
  good 1500-step model lie outside [0, 1], within -0.07..1.12). Samples of an untrained network
  (or of an EMA that still holds its initial weights) fall far outside, whatever a distance in
  some feature space says; above :data:`OUTSIDE_WARNING` one warning line goes to ``warn``
  (default stderr)."""
  if dataset.kind == "image":
    low, high, where = -0.1, 1.1, "[-0.1, 1.1] (the data's [0, 1] widened by 10% on each side)"
  else:
    lo, hi = held_out.min(axis=0), held_out.max(axis=0)
    low, high = lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo)
    where = "the held-out data's range (widened by 10% on each side)"
  share = metrics.share_outside(samples, low, high)
  if share > OUTSIDE_WARNING:
    print(f"warning: {100 * share:.0f}% of the sample values lie outside {where} (range "
          f"{float(np.nanmin(samples)):.3g}..{float(np.nanmax(samples)):.3g}): the network, or "
          f"its EMA, is far from trained", file=warn or sys.stderr)
  return {"share_outside_data_range": share,
          "data_range": [np.asarray(low).tolist(), np.asarray(high).tolist()]}


def sample(exp: Experiment, workdir: str, *, stop=None):
  """Draws ``eval.num_samples`` samples with the EMA parameters; returns ``(samples, result)``."""
  del stop
  mesh = parallel.make_mesh()
  check_batch(exp.eval.batch_size, mesh, "eval.batch_size")
  run = workdir_lib.load_workdir(workdir, exp, mesh=mesh)
  dataset = exp.data.load()
  e, tag = exp.eval, exp.sampling.tag
  start = time.perf_counter()
  samples, nfes = run.sample_batches(keys.stream(exp.seed, "sample"), e.num_samples,
                                     progress=f"sample ({tag})")
  result = {"step": run.step, "sampler": tag, "num_samples": int(len(samples)),
            "nfe_per_batch": float(np.mean(nfes)), "seconds": round(time.perf_counter() - start, 2),
            "devices": parallel.num_shards(mesh)}
  if not parallel.is_main_process():  # every process holds the samples; process 0 writes them
    return samples, result
  held_out = None
  if dataset.kind == "points":
    held_out = dataset.held_out(e.num_samples, exp.seed)
    result.update(vector_metrics(exp.seed, dataset, samples, held_out))
  result.update(range_check(dataset, samples, held_out))
  name = f"{tag}_step{run.step}"
  write_result(run.workdir, f"samples_{name}", result, npz_name=name,
               arrays=dict(samples=samples, nfe=np.asarray(nfes)))
  if figures_wanted(exp):
    print_figures(figures.sample_figures(run, dataset, samples, held_out, result, name))
  return samples, result
