"""The parts of an experiment besides the network and the sampler: each is a dataclass of
:mod:`score_sde_jax.experiment` that checks its own fields; here its config fields are read and
its errors given the fields' config paths."""

from __future__ import annotations

import dataclasses

from score_sde_jax import experiment as ex
from score_sde_jax.build.fields import ABSENT, ConfigError, as_tuple, config_paths, get
from score_sde_jax.build.network import get_classifier_model, get_model, get_sde


def _read(config, cls, paths: dict, *, exclude=(), **given):
  """``cls`` from the config fields ``paths`` (``{field: path}``; a field without one is
  ``<section>.<field>``), ``given`` values and the class's defaults for absent optional fields."""
  values = dict(given)
  for f in dataclasses.fields(cls):
    if f.name in values or f.name in exclude or f.name not in paths:
      continue
    value = get(config, paths[f.name], ABSENT)
    if value is ABSENT:
      if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        raise ConfigError(f"config.{paths[f.name]}: missing (required)")
      continue
    values[f.name] = as_tuple(value)
  with config_paths(paths, next(iter(paths.values())).split(".")[0]):
    return cls(**values)


def _paths(section: str, cls, **renamed) -> dict:
  return {f.name: renamed.get(f.name, f"{section}.{f.name}") for f in dataclasses.fields(cls)}


# Fields that must be in a run's config (others are the library's additions and default).
_REQUIRED_TRAINING = ("batch_size", "n_iters", "n_jitted_steps", "log_freq", "eval_freq",
                      "snapshot_freq", "snapshot_freq_for_preemption", "max_to_keep")


def get_score_model(config) -> ex.ScoreModel:
  """The SDE, the network and its parameterisation, checked together."""
  sde, network = get_sde(config), get_model(config)
  shape = data_shape_of(config, network)
  paths = {"continuous": "training.continuous", "scale_by_sigma": "model.scale_by_sigma",
           "embedding_type": "model.embedding_type"}
  with config_paths(paths, "model"):
    model = ex.ScoreModel(sde, network, shape, continuous=get(config, "training.continuous"),
                          scale_by_sigma=get(config, "model.scale_by_sigma"),
                          sde_name=get(config, "training.sde"),
                          network_name=get(config, "model.name"))
  if getattr(network, "needs_level_index", False) and model.continuous:
    raise ConfigError(f"config.training.continuous=True: the {get(config, 'model.name')} network "
                      f"is conditioned on the noise level's index (an embedding row per level); "
                      f"set training.continuous=False (the discrete objective on model.num_scales "
                      f"levels)")
  if model.is_image:
    multiple, rule = _size_multiple(network)
    if shape[0] % multiple:
      raise ConfigError(f"config.data.image_size={shape[0]!r}: must be a positive multiple of "
                        f"{rule} = {multiple}")
  return model


def _size_multiple(network) -> tuple[int, str]:
  """What an image network's size must be a multiple of, and why (for the message)."""
  if hasattr(network, "ch_mult"):   # the U-Nets halve len(ch_mult) - 1 times
    return 2**(len(network.ch_mult) - 1), "2^(len(model.ch_mult) - 1)"
  return network.size_multiple, f"the {type(network).__name__} network's pooling"


def data_shape_of(config, network) -> tuple:
  """One example's shape: ``(dim,)`` for vector networks, ``(H, W, C)`` for image ones."""
  if not network.takes_images:
    return (network.dim,)
  size = get(config, "data.image_size")
  if not (isinstance(size, int) and not isinstance(size, bool) and size > 0):
    multiple, rule = _size_multiple(network)
    raise ConfigError(f"config.data.image_size={size!r}: must be a positive multiple of "
                      f"{rule} = {multiple}")
  return (size, size, network.num_channels)


def get_optimizer(config, section: str = "optim") -> ex.Optimizer:
  return _read(config, ex.Optimizer, _paths(section, ex.Optimizer, total_steps="training.n_iters"))


def get_training(config) -> ex.Training:
  for name in _REQUIRED_TRAINING:
    get(config, f"training.{name}")
  objective = _read(config, ex.Objective, _paths("training", ex.Objective))
  return _read(config, ex.Training, _paths("training", ex.Training, ema_rate="model.ema_rate",
                                               ema_warmup="model.ema_warmup"),
               exclude=("objective",), objective=objective)


def get_evaluation(config) -> ex.Evaluation:
  return _read(config, ex.Evaluation, _paths("eval", ex.Evaluation))


def get_inpaint(config, shape) -> ex.Inpaint:
  paths = _paths("inpaint", ex.Inpaint)
  for path in paths.values():
    get(config, path)
  inpaint = _read(config, ex.Inpaint, paths)
  with config_paths(paths, "inpaint"):
    inpaint.check(shape)
  return inpaint


_CLASSIFIER_REQUIRED = ("batch_size", "n_iters", "lr", "warmup", "grad_clip", "weight_decay",
                        "ema_rate", "eps", "log_freq", "eval_freq", "snapshot_freq",
                        "max_to_keep", "scale", "samples_per_class", "classes")


def get_classifier(config, shape, n_jitted_steps: int) -> ex.Classifier:
  for name in _CLASSIFIER_REQUIRED:
    get(config, f"classifier.{name}")
  optimizer = _read(config, ex.Optimizer, {f: f"classifier.{f}" for f in
                                            ("lr", "warmup", "grad_clip", "weight_decay")})
  paths = {**_paths("classifier", ex.Classifier), "image_size": "data.image_size",
           "snapshot_freq": "classifier.snapshot_freq"}
  classifier = _read(config, ex.Classifier, paths, exclude=("network", "optimizer"),
                     network=get_classifier_model(config), optimizer=optimizer,
                     name=get(config, "classifier.name"))
  with config_paths(paths, "classifier"):
    classifier.check(shape, n_jitted_steps)
  return classifier
