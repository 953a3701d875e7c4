"""``--mode sample``: ``eval.num_samples`` samples of the EMA model, with metrics and figures.

Writes ``samples/<sampler>_step<step>.npz``, ``eval/samples_<sampler>_step<step>.json``
(for vector data also MMD and sliced Wasserstein distance to held-out data, and
the exact log-density of the samples where the data has one) and figures. The
samples are ``load_workdir(workdir, config).sample(keys.stream(seed, "sample"), n)``.
"""

from __future__ import annotations

import json
import os
import time

import jax.numpy as jnp
import numpy as np

from score_sde_jax import build, figures, keys, metrics, parallel
from score_sde_jax import workdir as workdir_lib
from score_sde_jax.modes.train import check_batch


def vector_metrics(config, dataset, samples, held_out) -> dict:
  """Distances of vector samples to held-out data, and their exact log-density where known."""
  n_mmd = min(2000, len(samples))
  reference = next(dataset.batches(n_mmd, keys.stream_seed(config.seed, "reference")))
  result = {"mmd": metrics.mmd(samples[:n_mmd], held_out[:n_mmd]),
            "mmd_held_out_vs_train_data": metrics.mmd(reference, held_out[:n_mmd]),
            "sliced_wasserstein": metrics.sliced_wasserstein(samples, held_out)}
  log_prob = getattr(dataset, "log_prob", None)
  if log_prob is not None:
    lp = np.asarray(log_prob(jnp.asarray(samples)))
    result["exact_log_prob_of_samples"] = float(np.mean(lp[np.isfinite(lp)]))
    result["exact_log_prob_of_held_out"] = float(np.mean(np.asarray(log_prob(jnp.asarray(held_out)))))
  return result


def sample(config, workdir: str):
  """Draws ``eval.num_samples`` samples with the EMA parameters; returns ``(samples, result)``."""
  build.validate_config(config)
  mesh = parallel.make_mesh()
  check_batch(config.eval.batch_size, mesh, "eval.batch_size")
  run = workdir_lib.load_workdir(workdir, config, mesh=mesh)
  dataset = build.get_dataset(config)
  e, tag = config.eval, build.sampling_tag(config)
  start = time.perf_counter()
  samples, nfes = run.sample_batches(keys.stream(config.seed, "sample"), e.num_samples)
  result = {"step": run.step, "sampler": tag, "num_samples": int(len(samples)),
            "nfe_per_batch": float(np.mean(nfes)), "seconds": round(time.perf_counter() - start, 2),
            "devices": parallel.num_shards(mesh)}
  if not parallel.is_main_process():  # every process holds the samples; process 0 writes them
    return samples, result
  held_out = None
  if not dataset.is_image:
    held_out = dataset.held_out(e.num_samples, config.seed)
    result.update(vector_metrics(config, dataset, samples, held_out))
  name = f"{tag}_step{run.step}"
  os.makedirs(os.path.join(run.workdir, "samples"), exist_ok=True)
  np.savez(os.path.join(run.workdir, "samples", f"{name}.npz"), samples=samples,
           nfe=np.asarray(nfes))
  workdir_lib.write_json(os.path.join(run.workdir, "eval", f"samples_{name}.json"), result)
  print(json.dumps(result))
  paths = figures.sample_figures(run, dataset, samples, held_out, result, name)
  if paths:
    print("figures:\n  " + "\n  ".join(paths))
  return samples, result
