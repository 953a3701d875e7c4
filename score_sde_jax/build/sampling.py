"""The ``sampling`` section: the method (``sampling.method``), every sampler's options as its
registry entry declares them (:data:`score_sde_jax.sampling.SAMPLERS`), and ``noise_removal``."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

from score_sde_jax import checks, sampling
from score_sde_jax.build.compat import renamed_fields
from score_sde_jax.build.fields import (ABSENT, ConfigError, as_tuple, check_spec, choice,
                                        config_paths, get)
from score_sde_jax.experiment import Sampling


def option_paths(cls) -> dict:
  """``{field: config path}`` of a sampler's options."""
  prefix = "sampling." if cls.section is None else f"sampling.{cls.section}."
  return {f.name: prefix + cls.config_names.get(f.name, f.name) for f in dataclasses.fields(cls)}


def _options(config, method: str, *, required: bool):
  """A sampler's options from its fields; ``None`` when its section is absent and not
  ``required``. A field missing from a present section keeps its default unless required."""
  cls = sampling.SAMPLERS[method]
  paths = option_paths(cls)
  values = {arg: as_tuple(get(config, path, ABSENT)) for arg, path in paths.items()}
  if required:
    for arg, path in paths.items():
      if values[arg] is ABSENT:
        raise ConfigError(f"config.{path}: missing (required by sampling.method={method!r})")
  elif cls.section is not None and get(config, f"sampling.{cls.section}", ABSENT) is ABSENT:
    return None
  with config_paths(paths, f"sampling.method={method!r}"):
    return cls(**{arg: v for arg, v in values.items() if v is not ABSENT})


def check_sampler(options, sde, method: str) -> None:
  """The options against the SDE (the library's checks, their errors naming the field)."""
  with config_paths(option_paths(type(options)), f"sampling.method={method!r}"):
    options.check(sde)


def get_sampling(config, sde) -> Sampling:
  """The sampling part: the chosen method's options (checked against ``sde``) and those of every
  other method the config sets up."""
  for old, new in renamed_fields(config):
    if old.startswith("sampling."):
      raise ConfigError(f"config.{old}: renamed; it is now {' and '.join(new)} (each sampler's "
                        f"options live in its own section)")
  method = choice(config, "sampling.method", sampling.SAMPLERS)
  check_spec(config, {"sampling.noise_removal": checks.BOOL})
  samplers = {}
  for name in sampling.SAMPLERS:
    options = _options(config, name, required=name == method)
    if options is not None:
      samplers[name] = options
  check_sampler(samplers[method], sde, method)
  return Sampling(method, MappingProxyType(samplers), get(config, "sampling.noise_removal"))


def get_sampling_fn(config, sde, shape, inverse_scaler, eps=None, mesh=None):
  """``sampling_fn(key, score_fn) -> SampleResult`` from the config's ``sampling`` section, as the
  paper's ``get_sampling_fn``: samples in data space (``inverse_scaler``), split over ``mesh``;
  ``eps`` (default: the SDE's ``sampling_eps``) is the smallest time."""
  return get_sampling(config, sde).sampling_fn(sde, shape, inverse_scaler, mesh, eps=eps)
