"""``--mode fid_stats``: a data set's Inception statistics, written once, for the FID and KID that
``--mode eval`` reports (``eval.enable_sampling``).

The split is ``eval.fid_split`` (the paper's CIFAR-10 statistics are of the 50,000 training
images), its first ``eval.fid_num_images`` images (0: all), written to ``eval.fid_stats`` (or
``<workdir>/fid_stats/<data set>_<split>.npz``) with ``mu``, ``sigma`` (pytorch-fid's names) and
the features (KID needs them). Images are the data set's levels as floats in [0, 1], rounded to
8 bits by the network's input, as samples are.
"""

from __future__ import annotations

import json
import os
import re
import time

from score_sde_jax import parallel
from score_sde_jax.build.fields import ConfigError
from score_sde_jax.experiment import Experiment
from score_sde_jax.modes.loop import check_batch
from score_sde_jax.workdir import WorkdirError, check_workdir


def reference_path(exp: Experiment, workdir: str | None) -> str:
  """Where the reference statistics are: ``eval.fid_stats``, or
  ``<workdir>/fid_stats/<data set>_<split>[_<n>].npz``."""
  e = exp.eval
  if e.fid_stats:
    return os.path.abspath(os.path.expanduser(e.fid_stats))
  if not workdir:
    raise WorkdirError("--workdir or config.eval.fid_stats: required (where the statistics go)")
  name = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(exp.data.name.rstrip("/")) or "data")
  count = f"_{e.fid_num_images}" if e.fid_num_images else ""
  return os.path.join(check_workdir(workdir), "fid_stats", f"{name}_{e.fid_split}{count}.npz")


def split_images(exp: Experiment, dataset):
  """The integer images of ``eval.fid_split``, the first ``eval.fid_num_images`` (0: all)."""
  e = exp.eval
  if getattr(dataset, "kind", None) != "image":
    raise ConfigError(f"config.data.dataset={exp.data.name!r}: --mode fid_stats needs image "
                      f"data (FID and KID are measured on images)")
  levels = dataset.train_levels if e.fid_split == "train" else dataset.test_levels
  n = e.fid_num_images or len(levels)
  if n > len(levels):
    raise ConfigError(f"config.eval.fid_num_images={n}: the {e.fid_split} split of "
                      f"{exp.data.name!r} has {len(levels)} images")
  if n < 2:
    raise ConfigError(f"config.eval.fid_num_images={n}: a covariance needs at least 2 images "
                      f"(the {e.fid_split} split has {len(levels)})")
  return levels[:n]


def fid_stats(exp: Experiment, workdir: str | None = None, *, stop=None):
  """Writes the statistics of the split's images; returns (and prints as one JSON line) what it
  wrote: ``path``, ``dataset``, ``split``, ``num_images``, ``seconds``."""
  del stop
  from score_sde_jax import fid   # the Inception network, when this mode runs
  e = exp.eval
  path = reference_path(exp, workdir)
  folder = os.path.dirname(path)
  os.makedirs(folder, exist_ok=True)
  if not os.access(folder, os.W_OK):
    raise WorkdirError(f"config.eval.fid_stats={path!r}: cannot write in {folder!r}")
  mesh = parallel.make_mesh()
  check_batch(e.inception_batch_size, mesh, "eval.inception_batch_size")
  fid.check_weights()
  dataset = exp.data.load()
  levels = split_images(exp, dataset)
  start = time.perf_counter()
  features = fid.inception_features(dataset.to_unit(levels), batch_size=e.inception_batch_size,
                                    mesh=mesh, progress=f"Inception features ({e.fid_split})")
  seconds = time.perf_counter() - start
  result = {"path": path, "dataset": exp.data.name, "split": e.fid_split,
            "num_images": int(len(levels)), "seconds": round(seconds, 1)}
  if parallel.is_main_process():
    fid.save_statistics(path, features)
    print(json.dumps(result))
  return result
