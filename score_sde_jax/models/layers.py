"""Shared layers: time / noise-level embeddings, and the image blocks of DDPM / NCSN++."""

from __future__ import annotations

import functools
import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_sde_jax import checks
from score_sde_jax.models import conv as conv_lib
from score_sde_jax.models import dropout as dropout_lib
from score_sde_jax.models import up_or_down_sampling as fir_lib


def get_timestep_embedding(timesteps: jax.Array, embedding_dim: int,
                           max_positions: int = 10000) -> jax.Array:
  """Sinusoidal embedding of DDPM (Ho et al. 2020), ``(B,) -> (B, embedding_dim)``."""
  if timesteps.ndim != 1:
    raise ValueError(f"timesteps: shape {timesteps.shape}, expected (B,)")
  half_dim = embedding_dim // 2
  scale = math.log(max_positions) / (half_dim - 1)
  freqs = jnp.exp(jnp.arange(half_dim, dtype=jnp.float32) * -scale)
  emb = timesteps.astype(jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.sin(emb), jnp.cos(emb)], axis=1)
  if embedding_dim % 2 == 1:
    emb = jnp.pad(emb, [[0, 0], [0, 1]])
  return emb


class GaussianFourierProjection(nn.Module):
  """Random Fourier features ``[sin(2 pi W x), cos(2 pi W x)]`` (Tancik et al. 2020).

  ``W`` is drawn once from ``N(0, scale^2)`` and never trained: it is a
  parameter (as in the paper's code, so checkpoints carry it) behind a
  ``stop_gradient``.
  """

  embedding_size: int = 256
  scale: float = 1.0

  @nn.compact
  def __call__(self, x):
    W = self.param("W", jax.nn.initializers.normal(stddev=self.scale), (self.embedding_size,))
    W = jax.lax.stop_gradient(W)
    x_proj = x[:, None] * W[None, :] * 2 * jnp.pi
    return jnp.concatenate([jnp.sin(x_proj), jnp.cos(x_proj)], axis=-1)


# flax.linen.Dropout with masks drawn in one fused pass on XLA:CPU (same masks; models.dropout).
Dropout = dropout_lib.Dropout

ACTIVATIONS = {
    "swish": nn.swish,
    "silu": nn.silu,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "elu": nn.elu,
    "softplus": nn.softplus,
    "tanh": jnp.tanh,
}


def get_act(name: str):
  """Activation function by name; an unknown name lists the known ones."""
  try:
    return ACTIVATIONS[name]
  except (KeyError, TypeError):
    raise ValueError(f"activation={name!r}: unknown; known: {sorted(ACTIVATIONS)}") from None


# Networks refuse bad field values when they are constructed (``checks.check_fields``).
ACTIVATION = checks.one_of(ACTIVATIONS)


# --- Image layers of DDPM / NCSN++ (NHWC ports of the paper's layers.py and layerspp.py) ------
# Submodule names are those of the paper's PyTorch modules (GroupNorm_0, Conv_0, Dense_0, NIN_0,
# ...), so a released checkpoint maps onto the parameter tree by name.

def default_init(scale: float = 1.0):
  """The paper's initialiser: variance scaling, fan_avg, uniform (scale 0 becomes 1e-10)."""
  return nn.initializers.variance_scaling(1e-10 if scale == 0 else scale, "fan_avg", "uniform")


class Conv(nn.Module):
  """``flax.linen.Conv``'s parameters and values (``kernel`` HWIO, ``bias``; NHWC input), with
  the faster gradients of :func:`score_sde_jax.models.conv.conv2d`.

  ``upsample=True`` convolves the 2x nearest-upsampled input (3x3, stride 1, padding 1 only)
  without forming it (:func:`score_sde_jax.models.conv.upsample_conv3x3`); the parameters are
  the same."""

  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: tuple = ((0, 0), (0, 0))
  use_bias: bool = True
  kernel_init: Callable = default_init()
  bias_init: Callable = nn.initializers.zeros
  upsample: bool = False

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init,
                        tuple(self.kernel_size) + (x.shape[-1], self.features), jnp.float32)
    dtype = jnp.result_type(x, kernel)   # flax's promotion
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    if self.upsample:
      if (tuple(self.kernel_size), self.strides, tuple(map(tuple, self.padding))) != (
          (3, 3), 1, ((1, 1), (1, 1))):
        raise ValueError(f"upsample=True: needs kernel_size (3, 3), strides 1 and padding "
                         f"((1, 1), (1, 1)); got {self.kernel_size}, {self.strides}, {self.padding}")
      y = conv_lib.upsample_conv3x3(x, kernel)
    else:
      y = conv_lib.conv2d(x, kernel, self.strides, self.padding)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,), jnp.float32).astype(dtype)
    return y


def conv3x3(out_ch, *, stride=1, init_scale=1.0, padding=1, use_bias=True, upsample=False,
            name=None):
  pad = padding if isinstance(padding, (tuple, list)) else ((padding, padding), (padding, padding))
  return Conv(out_ch, (3, 3), strides=stride, padding=pad, use_bias=use_bias,
              kernel_init=default_init(init_scale), upsample=upsample, name=name)


def conv1x1(out_ch, *, init_scale=1.0, use_bias=True, name=None):
  return Conv(out_ch, (1, 1), use_bias=use_bias, kernel_init=default_init(init_scale), name=name)


class GroupNorm(nn.Module):
  """Group normalisation of ``(B, ..., C)`` features over the positions and the channels of each
  group, with per-channel ``scale`` and ``bias`` (the parameters of ``flax.linen.GroupNorm`` and
  of PyTorch's ``weight`` / ``bias``) and the exact two-pass variance ``mean((x - mean)^2)``.

  Written here rather than with ``flax.linen.GroupNorm`` for speed, with the same statistics:
  the sums run over the positions first, per channel (contiguous in NHWC, so XLA vectorises
  along them), and only the ``(B, C)`` sums are grouped. Flax reduces the ``(B, H, W, G, C/G)``
  view over three axes at once, which XLA:CPU runs 2-4x slower, forward and backward
  (README, "Speed of the paper's networks"); the outputs agree to float32 round-off.
  """

  num_groups: int = 32
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    if c % self.num_groups:
      raise ValueError(f"num_groups={self.num_groups}: must divide the {c} channels")
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    b, g = x.shape[0], c // self.num_groups
    flat = x.reshape(b, -1, c)
    count = flat.shape[1] * g

    def per_channel(sums):   # (B, C) sums over positions -> (B, 1, C) means of each channel's group
      means = sums.reshape(b, self.num_groups, g).sum(-1, keepdims=True) / count
      return jnp.broadcast_to(means, (b, self.num_groups, g)).reshape(b, 1, c)

    centered = flat - per_channel(flat.sum(axis=1))
    var = per_channel(jnp.square(centered).sum(axis=1))
    return (centered * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias).reshape(x.shape)


def group_norm(channels, num_groups=None, name=None):
  """GroupNorm with eps 1e-6; NCSN++ uses ``min(C // 4, 32)`` groups, DDPM 32."""
  groups = min(channels // 4, 32) if num_groups is None else num_groups
  return GroupNorm(num_groups=groups, epsilon=1e-6, name=name)


class NIN(nn.Module):
  """Per-pixel linear map over channels: parameters ``W`` (in, out) and ``b``."""

  num_units: int
  init_scale: float = 0.1

  @nn.compact
  def __call__(self, x):
    in_dim = x.shape[-1]
    W = self.param("W", default_init(self.init_scale), (in_dim, self.num_units))
    b = self.param("b", nn.initializers.zeros, (self.num_units,))
    return jnp.einsum("...c,cu->...u", x, W) + b


class AttnBlock(nn.Module):
  """Self-attention over pixels (DDPM's ``AttnBlock``; ``AttnBlockpp`` with ``skip_rescale``)."""

  num_groups: int | None = None   # None: min(C // 4, 32) (NCSN++); DDPM uses 32
  skip_rescale: bool = False
  init_scale: float = 0.0

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    hn = group_norm(c, self.num_groups, name="GroupNorm_0")(x)
    q = NIN(c, name="NIN_0")(hn)
    k = NIN(c, name="NIN_1")(hn)
    v = NIN(c, name="NIN_2")(hn)
    with jax.named_scope("attention"):   # names the ops in profiles
      weights = jnp.einsum("bhwc,bijc->bhwij", q, k) * (int(c) ** (-0.5))
      weights = jax.nn.softmax(weights.reshape(b, h, w, h * w), axis=-1).reshape(b, h, w, h, w)
      attended = jnp.einsum("bhwij,bijc->bhwc", weights, v)
    out = NIN(c, init_scale=self.init_scale, name="NIN_3")(attended)
    return (x + out) / np.sqrt(2.0) if self.skip_rescale else x + out


class Resample(nn.Module):
  """2x up- or downsampling.

  Up: nearest (+ 3x3 conv), or FIR (+ fused transposed conv). Down: average
  pool or stride-2 conv (padded bottom / right), or FIR (+ fused conv).
  """

  up: bool
  out_ch: int | None = None
  with_conv: bool = False
  fir: bool = False
  fir_kernel: tuple = (1, 3, 3, 1)

  @nn.compact
  def __call__(self, x):
    out_ch = self.out_ch or x.shape[-1]
    if self.fir:
      if not self.with_conv:
        resample = fir_lib.upsample_2d if self.up else fir_lib.downsample_2d
        return resample(x, self.fir_kernel, factor=2)
      return fir_lib.Conv2d(out_ch, 3, up=self.up, down=not self.up,
                            resample_kernel=self.fir_kernel, kernel_init=default_init(),
                            name="Conv2d_0")(x)
    if self.up:
      if self.with_conv:
        return conv3x3(out_ch, upsample=True, name="Conv_0")(x)
      return fir_lib.naive_upsample_2d(x, 2)
    if self.with_conv:
      return conv3x3(out_ch, stride=2, padding=((0, 1), (0, 1)), name="Conv_0")(x)
    return fir_lib.naive_downsample_2d(x, 2)


Upsample = functools.partial(Resample, up=True)
Downsample = functools.partial(Resample, up=False)


class Combine(nn.Module):
  """Combines a pyramid input with a feature map: 1x1 conv, then ``cat`` or ``sum``."""

  method: str = "cat"

  @nn.compact
  def __call__(self, x, y):
    h = conv1x1(y.shape[-1], name="Conv_0")(x)
    if self.method == "cat":
      return jnp.concatenate([h, y], axis=-1)
    if self.method == "sum":
      return h + y
    raise ValueError(f"progressive_combine={self.method!r}: expected 'cat' or 'sum'")
