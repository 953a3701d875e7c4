"""Dropout with JAX's own random bits, computed in one pass that XLA:CPU fuses.

``jax.random.bernoulli`` with a Threefry key (JAX's default) hashes one counter per element with
Threefry-2x32. On a CPU, JAX lowers that hash as a five-step ``fori_loop`` (it compiles faster),
and XLA:CPU runs each step as its own pass over uint32 arrays the size of the activations: the
mask of a 16x32x32x64 activation took 4.7 ms, 22x one elementwise pass over it, and the DDPM++
32x32 nf 32 train step spent about 5 % of its ops' time drawing dropout masks.

:func:`bernoulli` computes the same bits with the hash's 20 rounds written out, which XLA fuses
with the comparison and the masking into one pass (0.74 ms for that mask); DDPM++ train steps ran
6-10 % faster and compiled 10 % faster (README, "Speed of the paper's networks"). :class:`Dropout`
is ``flax.linen.Dropout`` drawing its mask this way, so its masks are bit-identical to flax's for
the same key, and training runs are unchanged. Keys of another implementation,
``jax_threefry_partitionable`` off or float64 probabilities take ``jax.random.bernoulli`` itself.

Written by hand because JAX has no public unrolled Threefry: its unrolled lowering is the one it
registers for GPUs, and re-registering it for the CPU would change every program of the process.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = np.uint32(0x1BD11BDA)


def _fits_counter(shape) -> bool:
  """Whether every element's row-major index fits the counter's low word (uint32)."""
  return np.prod(shape, dtype=np.float64) < 2.0 ** 32


def threefry2x32(k1: jax.Array, k2: jax.Array, x1: jax.Array, x2: jax.Array):
  """Threefry-2x32 with 20 rounds (Salmon et al., 2011) of the counter pair ``(x1, x2)`` under
  the key ``(k1, k2)``, all uint32: the hash of JAX's ``threefry2x32`` primitive, unrolled."""
  ks = (k1, k2, k1 ^ k2 ^ _KEY_PARITY)
  x1, x2 = x1 + ks[0], x2 + ks[1]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      x1 = x1 + x2
      x2 = x1 ^ ((x2 << np.uint32(r)) | (x2 >> np.uint32(32 - r)))
    x1 = x1 + ks[(i + 1) % 3]
    x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x1, x2


def _fast_path(key, p, shape) -> bool:
  """Whether :func:`bernoulli` reproduces ``jax.random.bernoulli(key, p, shape)`` here."""
  if (jnp.result_type(p) != jnp.float32 or not jax.config.jax_threefry_partitionable
      or not _fits_counter(shape)):
    return False
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    return str(jax.random.key_impl(key)) == "threefry2x32" and key.shape == ()
  return (key.dtype == jnp.uint32 and key.shape == (2,)
          and jax.config.jax_default_prng_impl == "threefry2x32")


def random_bits(key: jax.Array, shape) -> jax.Array:
  """``jax.random.bits(key, shape)`` (uint32) of a Threefry key with partitionable counters:
  element ``i`` (row-major) hashes the counter pair ``(i >> 32, i & 0xffffffff)``."""
  shape = tuple(int(d) for d in shape)
  if not _fits_counter(shape):
    raise ValueError(f"shape={shape}: at most 2**32 - 1 elements (the counter's low word)")
  data = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  data = data.astype(jnp.uint32)
  counter = jnp.zeros(shape, jnp.uint32)
  for axis in range(len(shape)):
    stride = np.uint32(np.prod(shape[axis + 1:], dtype=np.int64))
    counter = counter + lax.broadcasted_iota(jnp.uint32, shape, axis) * stride
  bits1, bits2 = threefry2x32(data[0], data[1], jnp.zeros(shape, jnp.uint32), counter)
  return bits1 ^ bits2


def bernoulli(key: jax.Array, p: float, shape) -> jax.Array:
  """``jax.random.bernoulli(key, p, shape)``, bit for bit; a fused pass for Threefry keys (see
  the module docstring)."""
  shape = tuple(int(d) for d in shape)
  if not _fast_path(key, p, shape):
    return jax.random.bernoulli(key, p, shape)
  # jax.random.uniform's float32 from 32 random bits: 23 of them as the mantissa of [1, 2).
  mantissa = random_bits(key, shape) >> np.uint32(32 - 23)
  floats = lax.bitcast_convert_type(mantissa | np.float32(1.0).view(np.uint32), jnp.float32)
  return jnp.maximum(np.float32(0.0), floats - np.float32(1.0)) < jnp.asarray(p, jnp.float32)


class Dropout(nn.Dropout):
  """``flax.linen.Dropout`` whose mask comes from :func:`bernoulli`: the same masks for the same
  key, drawn in one fused pass on XLA:CPU."""

  @nn.compact
  def __call__(self, inputs, deterministic: bool | None = None, rng: jax.Array | None = None):
    deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
    if self.rate == 0.0 or deterministic:
      return inputs
    if self.rate == 1.0:
      return jnp.zeros_like(inputs)
    keep_prob = 1.0 - self.rate
    if rng is None:
      rng = self.make_rng(self.rng_collection)
    shape = list(inputs.shape)
    for dim in self.broadcast_dims:
      shape[dim] = 1
    mask = jnp.broadcast_to(bernoulli(rng, keep_prob, tuple(shape)), inputs.shape)
    return lax.select(mask, inputs / keep_prob, jnp.zeros_like(inputs))
