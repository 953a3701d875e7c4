"""The SDE, the score network and the classifier network of a config: each constructor reads
exactly its own fields (its dataclass fields, under the config names below) and checks them."""

from __future__ import annotations

import dataclasses

from score_sde_jax import models
from score_sde_jax.build.fields import ABSENT, ConfigError, as_tuple, choice, config_paths, get
from score_sde_jax.sde import SDES


def sde_paths(cls) -> dict:
  """Constructor argument -> config path: ``N`` is ``model.num_scales``, the rest ``model.<arg>``."""
  return {f.name: "model.num_scales" if f.name == "N" else f"model.{f.name}"
          for f in dataclasses.fields(cls) if f.name != "T"}


def get_sde(config):
  """The forward SDE named by ``training.sde``, built from the fields it has (``model.beta_min``, ...)."""
  cls = SDES[choice(config, "training.sde", SDES)]
  paths = sde_paths(cls)
  with config_paths(paths, "model"):
    return cls(**{arg: get(config, path) for arg, path in paths.items()})


# Network fields that live outside ``model.<field>`` (one config name per idea).
_MODEL_FIELD_PATHS = {"dim": "data.dim", "num_channels": "data.num_channels",
                      "centered": "data.centered", "activation": "model.nonlinearity"}


def _model_paths(cls) -> dict:
  return {f.name: _MODEL_FIELD_PATHS.get(f.name, f"model.{f.name}")
          for f in dataclasses.fields(cls) if f.name not in ("parent", "name")}


def model_args(config):
  """``(class, {arg: config path}, {arg: value})`` of the network; a field the network does not
  read under the others' values (``fourier_scale`` without a Fourier embedding) may be absent."""
  cls = models.MODELS[choice(config, "model.name", models.MODELS)]
  paths = _model_paths(cls)
  values = {arg: as_tuple(get(config, path, ABSENT)) for arg, path in paths.items()}
  values = {arg: v for arg, v in values.items() if v is not ABSENT}
  unused = cls.unused_fields(values)
  for arg, path in paths.items():
    if arg not in values and arg not in unused:
      raise ConfigError(f"config.{path}: missing (required by the {cls.__name__} network)")
  return cls, paths, values


def get_model(config):
  """The score network named by ``model.name``, from exactly the fields it reads."""
  cls, paths, values = model_args(config)
  with config_paths(paths, "model"):
    return cls(**values)


def is_vector_model(config) -> bool:
  """Whether the network takes vectors ``(dim,)`` (rather than images ``(H, W, C)``)."""
  return not models.MODELS[choice(config, "model.name", models.MODELS)].takes_images


def data_shape(config) -> tuple:
  """Shape of one example: ``(dim,)`` for vector data, ``(H, W, C)`` for images."""
  if is_vector_model(config):
    return (get(config, "data.dim"),)
  size = get(config, "data.image_size")
  return (size, size, get(config, "data.num_channels"))


def classifier_args(config):
  """``(class, {arg: config path}, {arg: value})`` of the classifier network: the fields of
  ``config.classifier`` that the network named by ``classifier.name`` has (others keep their
  defaults)."""
  cls = models.CLASSIFIERS[choice(config, "classifier.name", models.CLASSIFIERS)]
  paths = {f.name: f"classifier.{f.name}" for f in dataclasses.fields(cls)
           if f.name not in ("parent", "name")}
  values = {arg: as_tuple(get(config, path, ABSENT)) for arg, path in paths.items()}
  values = {arg: v for arg, v in values.items() if v is not ABSENT}
  if "num_classes" not in values:
    raise ConfigError("config.classifier.num_classes: missing (required)")
  return cls, paths, values


def get_classifier_model(config):
  """The noise-conditional classifier network of ``config.classifier``."""
  cls, paths, values = classifier_args(config)
  with config_paths(paths, "classifier"):
    return cls(**values)
