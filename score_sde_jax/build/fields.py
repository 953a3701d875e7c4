"""Reading a config's fields, and turning a library check's error into one naming the field.

The library's functions and dataclasses check their own arguments and raise
``ValueError('arg=value: ...')`` (``score_sde_jax.checks``); :func:`config_paths` turns that
into :class:`ConfigError` ``('config.<path>=value: ...')``, so a rule is written once.
"""

from __future__ import annotations

import contextlib
import math
import re

from score_sde_jax import checks
from score_sde_jax.experiment import ConfigError


MISSING = object()  # no default: a missing field is an error
ABSENT = object()   # a default meaning "not in the config"


def get(config, path, default=MISSING):
  """The value at ``path`` (``"training.batch_size"``) of a ConfigDict or a nested dict."""
  node = config
  for part in path.split("."):
    if not hasattr(node, "keys") or part not in node:
      if default is not MISSING:
        return default
      raise ConfigError(f"config.{path}: missing (required)")
    node = node[part]
  return node


def has(config, path) -> bool:
  return get(config, path, ABSENT) is not ABSENT


def as_tuple(value):
  return tuple(value) if isinstance(value, list) else value


_ARG = re.compile(r"^(\w+)=")


@contextlib.contextmanager
def config_paths(paths: dict, section: str):
  """Turns a library ``ValueError('arg=value: ...')`` into ``ConfigError('config.<path>=value:
  ...')`` for the args in ``paths``; other messages are prefixed with ``config.<section>: ``."""
  try:
    yield
  except ConfigError:
    raise
  except ValueError as e:
    message = str(e)
    match = _ARG.match(message)
    if match and match.group(1) in paths:
      raise ConfigError(f"config.{paths[match.group(1)]}{message[len(match.group(1)):]}") from None
    raise ConfigError(f"config.{section}: {message}") from None


def check_spec(config, spec) -> None:
  """Each ``{path: rule}`` of ``spec`` (``checks`` rules) against the config's value."""
  for path, rule in spec.items():
    with config_paths({"value": path}, path):
      checks.check_value("value", get(config, path), rule)


def choice(config, path, registry):
  """The value at ``path``, which must be a key of ``registry``."""
  value = get(config, path)
  if not (isinstance(value, str) and value in registry):
    raise ConfigError(f"config.{path}={value!r}: expected one of {sorted(registry)}")
  return value


# Fields whose value may be infinite (EDM's S_tmax: no upper end of the churn range).
INFINITE_ALLOWED = frozenset({"sampling.edm.s_tmax"})


def check_finite(value, path: str = "") -> None:
  """No NaN anywhere in the config, and no infinity outside :data:`INFINITE_ALLOWED`: a NaN
  passes every comparison-based check (``grad_clip=nan`` turned clipping off silently)."""
  if isinstance(value, dict):
    for k, v in value.items():
      check_finite(v, f"{path}.{k}" if path else k)
  elif isinstance(value, (list, tuple)):
    for i, v in enumerate(value):
      check_finite(v, f"{path}[{i}]")
  elif isinstance(value, float) and not math.isfinite(value):
    if math.isnan(value) or path.split("[")[0] not in INFINITE_ALLOWED:
      raise ConfigError(f"config.{path}={value}: expected a finite number")
