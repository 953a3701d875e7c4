"""``--mode eval``: DSM loss, likelihood and (image data) sample quality of the EMA model.

One path for vector data and images; only the likelihood's unit differs:
negative log-likelihood in nats per example for continuous data (with the data's exact
entropy and the gap, an estimate of KL(data || model), where the data has an
exact density), bits/dim with uniform dequantization for data of discrete levels (images).
With ``eval.enable_sampling`` (image data), FID and KID of ``eval.num_samples`` samples of the
config's sampler (the samples of ``--mode sample``) against the statistics ``--mode fid_stats``
wrote. Written to ``eval/eval_step<step>.json`` and printed. Figures: 2-D data gets the
log-density, interpolation and reconstruction; images get the semantic interpolation grid and
the encode-decode reconstructions (their error is in the JSON).

Checkpoints: the newest, or with ``eval.begin_ckpt`` / ``end_ckpt`` those numbered
``step // training.snapshot_freq`` in that range, as the original numbers them. A killed
evaluation resumes: a range skips the checkpoints whose results are written with the same
settings, and the FID samples already drawn (with their features, in
``eval/fid_step<step>.partial/``) are not drawn again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil

import jax
import numpy as np
from tqdm.auto import tqdm

from score_sde_jax import figures, keys, metrics, parallel, train
from score_sde_jax import workdir as workdir_lib
from score_sde_jax.experiment import Experiment
from score_sde_jax.modes import fid_stats as fid_stats_mode
from score_sde_jax.modes.fid_stats import reference_path
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


def _bounds(run, dataset, batches, rows):
  """Per example: ScoreFlow's bound in bits/dim (discrete levels, the same dequantization as
  the likelihood) or in nats."""
  e, seed = run.experiment.eval, run.experiment.seed
  values = []
  for i, b in enumerate(tqdm(batches, desc=f"likelihood bound ({e.bound_num_times} times)",
                             unit="batch", disable=not parallel.is_main_process())):
    key = jax.random.fold_in(keys.stream(seed, "likelihood_bound"), i)
    batch = parallel.shard_batch(b[rows], run.mesh)
    if dataset.num_levels is not None:
      value = run.bits_per_dim_bound(key, batch, num_levels=dataset.num_levels,
                                     n_repeats=e.bpd_repeats).bpd
    else:
      value = run.nll_bound(key, batch).nll
    values.append(parallel.to_host(value))
  return np.concatenate(values)


def checkpoint_steps(exp: Experiment, workdir: str) -> list:
  """``[None]`` (the newest checkpoint) without ``eval.begin_ckpt`` / ``end_ckpt``; with them, the
  saved steps numbered ``step // training.snapshot_freq`` in that range: multiples of
  ``snapshot_freq``, and the newest step (the end of training, which the original numbers the
  same way). Numbers of the range without a checkpoint cost one warning line; none at all is
  one :class:`~score_sde_jax.workdir.WorkdirError`."""
  span = exp.eval.checkpoint_range
  if span is None:
    return [None]
  begin, end = span
  workdir = workdir_lib.check_workdir(workdir)
  folder = os.path.join(workdir, "checkpoints")
  steps = sorted(workdir_lib.checkpoints(workdir).all_steps()) if os.path.isdir(folder) else []
  if not steps:
    raise workdir_lib.WorkdirError(f"workdir={workdir!r}: no checkpoint in {folder}; train first "
                                   f"(run.py --mode train)")
  f = exp.training.snapshot_freq
  chosen = [s for s in steps if begin <= s // f <= end and (s % f == 0 or s == steps[-1])]
  if not chosen:
    raise workdir_lib.WorkdirError(
        f"config.eval.begin_ckpt={begin}, end_ckpt={end}: no checkpoint numbered step // "
        f"training.snapshot_freq ({f}) in that range in {folder} (steps {begin * f}.."
        f"{end * f + f - 1}); it holds steps {steps}")
  missing = sorted(set(range(begin, end + 1)) - {s // f for s in chosen})
  if missing:
    workdir_lib.warn(f"checkpoints {_ranges(missing)} of eval.begin_ckpt={begin}..end_ckpt={end} "
                     f"(step // {f}) are not in {folder}; evaluating steps {chosen}")
  return chosen


def _ranges(numbers) -> str:
  """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
  parts, start = [], None
  for a, b in zip(numbers, numbers[1:] + [None]):
    start = a if start is None else start
    if b != a + 1:
      parts.append(f"{start}" if start == a else f"{start}-{a}")
      start = None
  return ", ".join(parts)


def settings(exp: Experiment) -> dict:
  """What an evaluation's numbers depend on besides the checkpoint: the eval section (but the
  checkpoint range and figures), the sampler and the seed, as JSON values. A result or FID
  samples written with other settings are not reused."""
  e = {k: v for k, v in dataclasses.asdict(exp.eval).items()
       if k not in ("begin_ckpt", "end_ckpt", "figures")}
  return json.loads(json.dumps({"eval": e, "sampling": exp.record.get("sampling"),
                                "seed": exp.seed}, sort_keys=True, default=str))


def settings_hash(wanted: dict) -> str:
  """A short digest of :func:`settings`, kept in each result."""
  return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]


def _finished(workdir: str, step: int, wanted: dict) -> dict | None:
  """The result written before for ``step`` with the same settings (process 0 decides)."""
  result = None
  if parallel.is_main_process():
    try:
      with open(os.path.join(workdir, "eval", f"eval_step{step}.json")) as f:
        result = json.load(f)
    except (OSError, ValueError):
      result = None
    if result is not None and result.get("settings_hash") != settings_hash(wanted):
      result = None
  return result if _agree(result is not None) else None


def _agree(flag: bool) -> bool:
  """Process 0's ``flag``, on every process (each must run the same compiled calls)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


class Reference:
  """The reference statistics of FID and KID (the file ``--mode fid_stats`` writes, or one of
  pytorch-fid's or TF-GAN's), read once."""

  def __init__(self, exp: Experiment, workdir: str):
    from score_sde_jax import fid
    self.path = reference_path(exp, workdir)
    self.mu, self.sigma = fid.load_statistics(self.path)
    self.features = fid.load_features(self.path)
    self.num_examples = None if self.features is None else len(self.features)
    if self.features is None:
      workdir_lib.warn(f"{self.path} holds mu and sigma alone (pytorch-fid's file): FID is "
                       f"reported, KID (which needs the features) is not")


def _read_partial(folder: str, wanted: dict) -> dict:
  """``{batch: (samples, features, nfe)}`` drawn before with the same settings (process 0)."""
  done = {}
  if not parallel.is_main_process():
    return done
  try:
    with open(os.path.join(folder, "settings.json")) as f:
      same = json.load(f) == wanted
  except (OSError, ValueError):
    same = False
  if not same:
    shutil.rmtree(folder, ignore_errors=True)
    return done
  for name in sorted(os.listdir(folder)):
    if name.startswith("batch_") and name.endswith(".npz"):
      try:
        with np.load(os.path.join(folder, name)) as z:
          done[int(name[6:-4])] = (z["samples"], z["features"], int(z["nfe"]))
      except Exception:  # noqa: BLE001 -- a batch cut short by a kill is drawn again
        pass
  return done


_write_atomic_npz = workdir_lib.save_npz


def sample_quality(run, reference: Reference, wanted: dict) -> dict:
  """FID and KID of ``eval.num_samples`` samples of the run's sampler (the samples of
  ``--mode sample``: key stream ``sample``, batches of ``eval.batch_size``); the 8-bit samples go
  to ``samples/fid_step<step>.npz``. Batches already drawn by a killed run with the same
  settings are read back, not drawn again."""
  from score_sde_jax import fid
  exp, mesh = run.experiment, run.mesh
  e = exp.eval
  n = e.num_samples
  folder = os.path.join(run.workdir, "eval", f"fid_step{run.step}.partial")
  done = _read_partial(folder, wanted)
  num_batches = -(-n // run.sample_batch_size(n))
  done_mask = np.zeros(num_batches, bool)
  done_mask[[i for i in done if i < num_batches]] = True
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    done_mask = np.asarray(multihost_utils.broadcast_one_to_all(done_mask))
  if parallel.is_main_process():
    os.makedirs(folder, exist_ok=True)
    workdir_lib.write_json(os.path.join(folder, "settings.json"), wanted)
    if done:
      print(f"step {run.step}: {int(done_mask.sum())} of {num_batches} sample batches read back "
            f"from {folder}", flush=True)
  parts = {i: v for i, v in done.items() if i < num_batches and done_mask[i]}
  for i, x, nfe in run.iter_sample_batches(keys.stream(exp.seed, "sample"), n,
                                           progress=f"FID samples (step {run.step})",
                                           skip=set(np.flatnonzero(done_mask).tolist())):
    images = fid.to_uint8(x)
    features = fid.inception_features(images.astype(np.float32) / 255.0,
                                      batch_size=e.inception_batch_size, mesh=mesh)
    parts[i] = (images, features, int(nfe))
    if parallel.is_main_process():
      _write_atomic_npz(os.path.join(folder, f"batch_{i}.npz"), samples=images,
                        features=features, nfe=np.int64(nfe))
  if not parallel.is_main_process():
    return {}   # process 0 alone holds the batches read back, and reports
  samples = np.concatenate([parts[i][0] for i in range(num_batches)])
  features = np.concatenate([parts[i][1] for i in range(num_batches)])
  nfes = [parts[i][2] for i in range(num_batches)]
  result = {"fid": metrics.frechet_distance_from_stats(*fid.statistics(features), reference.mu,
                                                        reference.sigma),
            "fid_num_samples": int(n), "fid_reference": reference.path,
            "sample_nfe": int(max(nfes))}
  if reference.features is not None:
    result["kid"], result["kid_se"] = metrics.kid(features, reference.features,
                                                  subset_size=e.kid_subset_size)
    result["fid_reference_num_examples"] = reference.num_examples
  os.makedirs(os.path.join(run.workdir, "samples"), exist_ok=True)
  _write_atomic_npz(os.path.join(run.workdir, "samples", f"fid_step{run.step}.npz"),
                    samples=samples)
  shutil.rmtree(folder, ignore_errors=True)
  return result


def evaluate(exp: Experiment, workdir: str, *, stop=None):
  """Loss, likelihood and (``eval.enable_sampling``) FID / KID of the newest checkpoint, or of
  each checkpoint of ``eval.begin_ckpt`` .. ``end_ckpt``; returns the result (a list of them for
  a range)."""
  del stop
  mesh = parallel.make_mesh()
  e = exp.eval
  check_batch(e.batch_size, mesh, "eval.batch_size")
  steps = checkpoint_steps(exp, workdir)
  reference = None
  if e.enable_sampling:
    from score_sde_jax import fid
    check_batch(e.inception_batch_size, mesh, "eval.inception_batch_size")
    fid.check_weights()   # missing weights: one line, before anything is sampled
    path = reference_path(exp, workdir)
    if not e.fid_stats and not _agree(os.path.exists(path)):
      # The workdir's own statistics, written on first use (eval.fid_stats that names no file
      # is an error instead: that file was meant).
      if parallel.is_main_process():
        print(f"{path}: no statistics of the {e.fid_split} split yet; writing them first (as "
              f"--mode fid_stats does)", flush=True)
      fid_stats_mode.fid_stats(exp, workdir)
      parallel.sync("fid_stats_written")
    # Process 0 alone reads the statistics (its disk may be the only one holding them) and
    # reports; a file it cannot read stops every process before sampling.
    error = None
    if parallel.is_main_process():
      try:
        reference = Reference(exp, workdir)
      except fid.StatisticsError as err:
        error = err
    if not _agree(error is None):
      raise error or fid.StatisticsError(f"{path}: process 0 could not read it (its error says why)")
  wanted = settings(exp)
  dataset = exp.data.load()
  results = []
  for step in steps:
    if step is not None:
      previous = _finished(workdir, step, wanted)
      if previous is not None:
        print(f"step {step}: evaluated before with these settings "
              f"({os.path.join(workdir, 'eval', f'eval_step{step}.json')}); skipped", flush=True)
        results.append(previous)
        continue
    run = workdir_lib.load_workdir(workdir, exp, mesh=mesh, step=step)
    results.append(_evaluate_checkpoint(run, dataset, reference, wanted, e.enable_sampling))
  return results if exp.eval.checkpoint_range is not None else results[0]


def _evaluate_checkpoint(run, dataset, reference, wanted, sample: bool):
  exp, mesh = run.experiment, run.mesh
  e = exp.eval
  held_out = dataset.held_out(e.num_eval_examples, exp.seed)
  n = len(held_out)
  batches = padded_batches(held_out, e.batch_size)
  rows = parallel.local_rows(mesh, e.batch_size)  # this process's rows of every batch
  result = {"step": run.step, "num_examples": int(n)}
  if e.enable_loss:
    eval_step = train.make_eval_step(
        exp.training.objective.loss_fn(exp.model, train_mode=False), mesh)
    key = keys.stream(exp.seed, "eval")
    losses = [float(eval_step(run.state, parallel.shard_batch(
        run.scaler(dataset.to_unit(b[rows])), mesh), jax.random.fold_in(key, i)))
              for i, b in enumerate(batches)]
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
  if e.enable_bpd and e.bound_num_times > 0:
    bounds = _bounds(run, dataset, batches, rows)[:n]
    unit = "bits_per_dim" if dataset.num_levels is not None else "nll_nats"
    result[f"bound_{unit}"], result[f"bound_{unit}_se"] = mean_se(bounds)
    result["bound_num_times"] = int(e.bound_num_times)
    result["bound_importance_sampling"] = bool(e.bound_importance_sampling)
    if dataset.num_levels is None and dataset.log_prob is not None:
      result["bound_gap_nats"], result["bound_gap_nats_se"] = mean_se(
          bounds + np.asarray(dataset.log_prob(held_out)))
  if sample:   # every process samples (the calls are collective); process 0 holds `reference`
    result.update(sample_quality(run, reference, wanted))
  result["settings_hash"] = settings_hash(wanted)
  if not parallel.is_main_process():
    return result
  paths, want_figures = [], figures_wanted(exp)
  if want_figures and dataset.kind == "image":  # host copies of the parameters: process 0 alone
    paths, stats = figures.image_flow_figures(run, dataset, held_out)
    result.update(stats)
  write_result(run.workdir, f"eval_step{run.step}", result)
  if want_figures:
    print_figures(paths + figures.likelihood_figures(run, dataset, held_out))
  return result
