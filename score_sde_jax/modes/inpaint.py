"""``--mode inpaint``: held-out examples completed by the EMA model (inpainting / imputation, or
colorization), the paper's projection PC sampler with the config's ``sampling`` settings.

Writes ``samples/<task>_<mask>_step<step>.npz`` (``samples`` ``(n, k, ...)``, ``truth``,
``mask``, ``nfe``), ``eval/<task>_<mask>_step<step>.json`` (the error of the generated part
against the truth, and of the known part, which is 0) and a figure: for images one row per
example (the input with the unknown part grey, ``k`` completions, the truth); for 2-D data the
completions beside the truth.
"""

from __future__ import annotations

import os
import time

import jax.numpy as jnp
import numpy as np

from score_sde_jax import controllable, keys, viz
from score_sde_jax import workdir as workdir_lib
from score_sde_jax.experiment import Experiment
from score_sde_jax.modes.results import figures_wanted, print_figures, write_result
from score_sde_jax.sampling import progress as sampling_progress


def make_mask(name: str, example_shape: tuple, n: int, seed: int) -> np.ndarray:
  """``(n,) + example_shape`` of 0 (generate) / 1 (known)."""
  if name == "random":
    rng = np.random.default_rng(keys.stream_seed(seed, "inpaint_mask"))
    shape = (n,) + example_shape[:-1] + (1,) if len(example_shape) == 3 else (n,) + example_shape
    mask = (rng.random(shape) < 0.5).astype(np.float32)
    return np.broadcast_to(mask, (n,) + example_shape).copy()
  mask = np.ones(example_shape, np.float32)
  if len(example_shape) == 1:                    # vectors: the second half generated
    mask[(example_shape[0] + 1) // 2:] = 0.0
  elif name == "half":                           # images: the right half generated
    mask[:, example_shape[1] // 2:] = 0.0
  else:                                          # center: the central square, half the side
    h, w = example_shape[:2]
    mask[h // 4:h - h // 4, w // 4:w - w // 4] = 0.0
  return np.broadcast_to(mask, (n,) + example_shape).copy()


def inpaint(exp: Experiment, workdir: str, *, stop=None):
  """Completes ``inpaint.num_examples`` held-out examples ``inpaint.samples_per_example`` times."""
  del stop
  run = workdir_lib.load_workdir(workdir, exp)
  return complete(run, exp.data.load())


def _complete(c, run, data, mask, k, pc):
  key = keys.stream(run.experiment.seed, "inpaint")
  if c.task == "colorize":
    gray = np.repeat(data.mean(-1, keepdims=True), 3, axis=-1)
    return controllable.colorize(key, run.sde, run.score_fn, jnp.asarray(gray), **pc)
  return controllable.inpaint(key, run.sde, run.score_fn, jnp.asarray(data),
                              np.repeat(mask, k, axis=0), **pc)


def complete(run, dataset):
  """``--mode inpaint`` on a loaded :class:`~score_sde_jax.workdir.TrainedRun` (its experiment's
  ``inpaint`` settings and PC sampler); returns ``(samples (n, k, ...), result)``."""
  exp = run.experiment
  c, s = exp.part("inpaint"), exp.part("sampling")
  pc_options = s.samplers.get("pc") or s.with_options("pc").sampler
  n, k = c.num_examples, c.samples_per_example
  truth = np.asarray(dataset.held_out_data(n, exp.seed), np.float32)
  n = len(truth)
  shape = run.data_shape
  if c.task == "colorize":   # in the decoupled colour space: the luminance channel is known
    mask = np.broadcast_to(np.asarray([1.0, 0.0, 0.0], np.float32), truth.shape).copy()
  else:
    mask = make_mask(c.mask, shape, n, exp.seed)
  data = np.asarray(run.scaler(jnp.asarray(np.repeat(truth, k, axis=0))))
  pc = dict(predictor=pc_options.predictor, corrector=pc_options.corrector, snr=pc_options.snr,
            n_steps=pc_options.n_steps, denoise=s.denoise, refine_steps=c.refine_steps,
            refine_snr=c.refine_snr)
  start = time.perf_counter()
  with sampling_progress.stage(f"{c.task}: {n} examples x {k} samples"):
    x, nfe = _complete(c, run, data, mask, k, pc)
  samples = np.asarray(run.inverse_scaler(x)).reshape((n, k) + shape)
  seconds = time.perf_counter() - start
  samples = dataset.clip(samples)
  if c.task == "colorize":
    # Generated: the colour (the samples' deviation from their grey); known: the grey.
    colour = lambda v: v - v.mean(-1, keepdims=True)
    err_free = colour(samples) - colour(truth)[:, None]
    err_known = samples.mean(-1) - truth.mean(-1)[:, None]
  else:
    free = np.broadcast_to(mask[:, None] == 0, samples.shape)
    diff = samples - truth[:, None]
    err_free, err_known = diff[free], diff[~free]
  tag = f"{c.task}_{c.mask if c.task == 'inpaint' else 'luminance'}_step{run.step}"
  result = {"step": run.step, "task": c.task, "mask": c.mask if c.task == "inpaint" else None,
            "num_examples": n, "samples_per_example": k, "refine_steps": c.refine_steps, "nfe": nfe,
            "seconds": round(seconds, 2),
            "rmse_generated": float(np.sqrt(np.mean(np.square(err_free)))),
            "max_abs_error_known": float(np.max(np.abs(err_known))) if np.size(err_known) else 0.0}
  write_result(run.workdir, tag, result,
               arrays=dict(samples=samples, truth=truth, mask=mask, nfe=np.asarray(nfe)))
  if figures_wanted(exp):
    print_figures([_figure(run, dataset, c, truth, mask, samples, tag)])
  return samples, result


def _figure(run, dataset, c, truth, mask, samples, tag):
  path = os.path.join(run.workdir, "figures", f"{tag}.png")
  n, k = samples.shape[:2]
  if dataset.kind == "image":
    if c.task == "colorize":
      shown = np.repeat(truth.mean(-1, keepdims=True), 3, axis=-1)
    else:
      shown = np.where(mask == 1, truth, 0.5)
    rows = np.concatenate([shown[:, None], samples, truth[:, None]], axis=1)
    title = (f"{c.task} ({c.mask if c.task == 'inpaint' else 'grey input'}), step {run.step}: "
             f"input | {k} samples | truth")
    return viz.plot_image_grid(rows.reshape((-1,) + samples.shape[2:]), path, nrow=k + 2,
                               title=title, col_labels=["input"] + [f"sample {j + 1}" for j in
                                                                    range(k)] + ["truth"])
  if samples.shape[-1] != 2:
    return None
  return viz.plot_samples(samples.reshape(-1, 2), truth, path,
                          title=f"imputed ({c.mask}), step {run.step}: samples vs held-out truth")
