"""Argument checks shared by the library's functions, networks, samplers and options: one clear
error each (``ValueError('name=value: ...')``), before tracing.

A leaf module: it imports nothing of the package, so every layer may use it, and each rule is
written once (``build`` maps the argument's name onto its config field). Numpy integers and floats
are accepted wherever Python ones are.
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


def check_points(name: str, x) -> jax.Array:
  """A non-empty float batch ``(batch, ...)`` with finite values (checked when ``x`` is concrete:
  under a trace the values are not known): points of model space for the flow's solves."""
  x = check_batch(name, x)
  if x.shape[0] == 0 or x.size == 0:
    raise ValueError(f"{name}: shape {x.shape}, an empty batch")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name}: dtype {x.dtype}; expected floating-point points of model space "
                     f"(integer images: scale them with the data's scaler first, or use "
                     f"bits_per_dim, which dequantizes them)")
  if not isinstance(x, jax.core.Tracer):
    bad = int(x.size - jnp.count_nonzero(jnp.isfinite(x)))
    if bad:
      raise ValueError(f"{name}: {bad} of {x.size} values are NaN or infinite")
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
  """A PRNG key where something is random: a typed key (``jax.random.key``) or a raw one
  (``jax.random.PRNGKey``: uint32 key data). ``None``, a number (``pc_sample(0, ...)``) or an
  array of another kind is refused in one line that says what was given and what needs a key,
  instead of JAX's "invalid PRNG key data" from deep inside a compiled program."""
  if key is None:
    raise ValueError(f"key=None: {what} is random; pass a PRNG key, e.g. jax.random.PRNGKey(0)")
  dtype, shape = getattr(key, "dtype", None), getattr(key, "shape", None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    return key
  if dtype == jnp.uint32 and shape and shape[-1] in (2, 4):   # threefry / rbg key data
    return key
  if dtype is None or not shape:
    got = (f"{type(key).__name__} {key}" if isinstance(key, numbers.Number) else
           f"a {dtype} scalar" if dtype is not None else type(key).__name__)
    seed = int(key) if isinstance(key, numbers.Integral) and not isinstance(key, bool) else 0
  else:
    got, seed = f"an array of {dtype} with shape {tuple(shape)}", 0
  raise TypeError(f"key: expected a PRNG key (jax.random.key or PRNGKey), got {got}; {what} is "
                  f"random: pass e.g. jax.random.PRNGKey({seed})")


# --- Field rules: ``(predicate, what is allowed)`` pairs for dataclass fields ----------------------

def _int(v):
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _real(v):
  return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


POSITIVE_INT = (lambda v: _int(v) and v > 0, "a positive integer")
NON_NEGATIVE_INT = (lambda v: _int(v) and v >= 0, "an integer >= 0")
# JAX's PRNGKey keeps 32 bits of a seed: 2^32 would silently be seed 0.
SEED = (lambda v: _int(v) and 0 <= v < 2**32, "an integer in [0, 2^32) (JAX keeps 32 bits of a "
        "seed, so larger ones would repeat smaller ones)")
OPTIONAL_NON_NEGATIVE_INT = (lambda v: v is None or (_int(v) and v >= 0), "None or an integer >= 0")
STRING = (lambda v: isinstance(v, str), "a string")
FINITE = (_real, "a finite number")
POSITIVE = (lambda v: _real(v) and v > 0, "a finite positive number")
NON_NEGATIVE = (lambda v: _real(v) and v >= 0, "a finite number >= 0")
RATE = (lambda v: _real(v) and 0 <= v < 1, "a number in [0, 1)")
TIME = (lambda v: _real(v) and 0 < v < 1, "a number in (0, 1)")
BOOL = (lambda v: isinstance(v, bool), "True or False")
INTS = (lambda v: isinstance(v, (tuple, list)) and len(v) > 0 and all(_int(r) and r > 0 for r in v),
        "a non-empty sequence of positive integers")
INTS_OR_EMPTY = (lambda v: isinstance(v, (tuple, list)) and all(_int(r) and r > 0 for r in v),
                 "a sequence of positive integers (may be empty)")


def one_of(options):
  return (lambda v: isinstance(v, str) and v in options, f"one of {sorted(options)}")


def at_least(minimum: int):
  return (lambda v: _int(v) and v >= minimum, f"an integer >= {minimum}")


def check_value(name: str, value, rule):
  """``value`` if its rule allows it, else ``ValueError('name=value: expected ...')``."""
  ok, allowed = rule
  if not ok(value):
    raise ValueError(f"{name}={value!r}: expected {allowed}")
  return value


def check_fields(obj, rules) -> None:
  """:func:`check_value` of every field of ``obj`` (a dataclass: a network, a sampler's options)
  named in ``rules``, in order."""
  for field, rule in rules.items():
    check_value(field, getattr(obj, field), rule)
