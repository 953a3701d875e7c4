"""The data set a config names (``data.dataset``), as a :class:`~score_sde_jax.experiment.Data`
whose ``load()`` reads it: toy distributions with exact densities, or images read from what the
user gives (``data.path``) or a package ships (digits; Fashion-MNIST from Debian's
dataset-fashion-mnist); nothing is downloaded."""

from __future__ import annotations

import functools

import jax.numpy as jnp

from score_sde_jax import data as data_lib
from score_sde_jax.build.fields import ConfigError, get
from score_sde_jax.data import cifar10, idx, images
from score_sde_jax.experiment import Data


def _gmm(d):
  ring = data_lib.GaussianMixture.ring(d["n_modes"], d["radius"], d["mode_std"])
  if d["dim"] == 2:
    return ring
  # Higher dimensions: the ring in the first two coordinates, zero elsewhere.
  means = jnp.zeros((d["n_modes"], d["dim"])).at[:, :2].set(ring.means)
  return data_lib.GaussianMixture(ring.weights, means, [d["mode_std"]] * d["n_modes"])


TOY_DATASETS = {
    "gmm": _gmm,
    "swissroll": lambda d: data_lib.SwissRoll(noise=d["noise"]),
    "moons": lambda d: data_lib.TwoMoons(noise=d["noise"]),
    "checkerboard": lambda d: data_lib.Checkerboard(),
    "rings": lambda d: data_lib.ConcentricRings(noise=d["noise"]),
}


def _image_options(d):
  return dict(random_flip=d.get("random_flip", False),
              uniform_dequantization=d.get("uniform_dequantization", False))


def _path(d):
  if not d.get("path"):
    raise ConfigError(f"config.data.path={d.get('path')!r}: data set {d['dataset']!r} is read "
                      f"from a path you give (nothing is downloaded)")
  return d["path"]


def _from_path(name):
  """A data set read from ``data.path`` (a folder of images, or an npz) with ``name``'s preprocessing."""
  return lambda d: images.from_path(
      _path(d), image_size=d["image_size"], num_channels=d["num_channels"],
      preprocess=images.PREPROCESS[name], eval_path=d.get("eval_path", ""),
      npz_key=d.get("npz_key") or None, eval_fraction=d.get("eval_fraction", 0.1),
      **_image_options(d))


IMAGE_DATASETS = {  # names are case-insensitive ("CIFAR10", "CelebAHQ")
    "digits": lambda d: images.digits(eval_fraction=d.get("eval_fraction", 0.1),
                                      **_image_options(d)),
    "cifar10": lambda d: cifar10.cifar10(_path(d), **_image_options(d)),
    # MNIST-format folders (idx files): Fashion-MNIST defaults to Debian's package folder.
    "fashion_mnist": lambda d: idx.fashion_mnist(d.get("path", ""), image_size=d["image_size"],
                                                 **_image_options(d)),
    "mnist": lambda d: idx.mnist_like(_path(d), image_size=d["image_size"], name="mnist",
                                      **_image_options(d)),
    **{name: _from_path(name) for name in images.PREPROCESS},
    "npz": lambda d: data_lib.ImageArrays.from_npz(
        _path(d), image_size=d["image_size"], num_channels=d["num_channels"],
        key=d.get("npz_key") or None, num_levels=d.get("num_levels", 256),
        eval_fraction=d.get("eval_fraction", 0.1), **_image_options(d)),
}


def dataset_key(config) -> str:
  """The data set's registry key (names are case-insensitive)."""
  name = get(config, "data.dataset")
  key = name.lower() if isinstance(name, str) else name
  if key not in TOY_DATASETS and key not in IMAGE_DATASETS:
    raise ConfigError(f"config.data.dataset={name!r}: expected one of "
                      f"{sorted(TOY_DATASETS) + sorted(IMAGE_DATASETS)}")
  return key


def _load(key: str, d: dict, shape: tuple):
  if key in TOY_DATASETS:
    return TOY_DATASETS[key](d)
  try:
    dataset = IMAGE_DATASETS[key](d)
  except data_lib.DataError as e:
    raise data_lib.DataError(f"config.data.dataset={d['dataset']!r}: {e}") from None
  if dataset.example_shape != shape:
    raise ConfigError(f"config.data.image_size={d.get('image_size')}, data.num_channels="
                      f"{d.get('num_channels')}: data set {d['dataset']!r} has images of shape "
                      f"{dataset.example_shape}")
  return dataset


def get_data(config, shape: tuple) -> Data:
  """The data set of ``config`` (read when loaded) for examples of ``shape``."""
  key = dataset_key(config)
  d = {k: v for k, v in config["data"].items()}   # a plain copy: the config stays here
  return Data(name=d["dataset"], shape=tuple(shape), centered=get(config, "data.centered"),
              source=functools.partial(_load, key, d, tuple(shape)))
