"""Argument checks shared by the samplers and the likelihood: one clear error each, before tracing.

Numpy integers and floats are accepted wherever Python ones are.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp


def check_int(name: str, value, minimum: int = 1) -> int:
  """An integer ``>= minimum`` (numpy integers too) as a Python int."""
  if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum):
    raise ValueError(f"{name}={value!r}: expected an integer >= {minimum}")
  return int(value)


def check_number(name: str, value, *, positive: bool = True) -> float:
  """A finite real number (numpy scalars too) as a Python float."""
  ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
  if not ok or (positive and value <= 0):
    raise ValueError(f"{name}={value!r}: must be a finite {'positive ' if positive else ''}number")
  return float(value)


def check_shape(shape) -> tuple:
  """A sample shape ``(batch, ...)`` of positive integers, as a tuple of Python ints."""
  if not (isinstance(shape, (tuple, list)) and len(shape) >= 2 and all(
      isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in shape)):
    raise ValueError(f"shape={shape!r}: expected a tuple (batch, ...) of positive integers, "
                     f"e.g. (64, 2) or (16, 32, 32, 3)")
  return tuple(int(d) for d in shape)


def check_batch(name: str, x) -> jax.Array:
  """An array of shape ``(batch, ...)``."""
  x = jnp.asarray(x)
  if x.ndim < 2:
    raise ValueError(f"{name}: shape {x.shape}, expected (batch, ...) with at least 2 axes")
  return x


def check_eps(eps, sde) -> float:
  """The smallest time, in ``(0, T)``; ``None`` means the SDE's ``sampling_eps``."""
  if eps is None:
    return float(sde.sampling_eps)
  eps = check_number("eps", eps)
  if not eps < sde.T:
    raise ValueError(f"eps={eps!r}: must be in (0, T={sde.T})")
  return eps


def check_key(key, what: str):
  """A PRNG key where something is random; ``None`` is refused with what needs it."""
  if key is None:
    raise ValueError(f"key=None: {what} is random; pass a PRNG key, e.g. jax.random.PRNGKey(0)")
  return key
