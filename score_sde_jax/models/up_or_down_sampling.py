"""FIR up/down-sampling of StyleGAN2 (``upfirdn2d``), NHWC, as used by NCSN++.

A port of the paper's ``up_or_down_sampling.py``: the filter is applied as a
true convolution (flipped kernel), depthwise, after zero-insertion
upsampling and padding, followed by strided downsampling.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_sde_jax.models import conv as conv_lib


def _resample_scope(fn):
  """Runs ``fn`` under ``jax.named_scope("resample")`` (names its ops in profiles; no effect on
  the computation)."""

  @functools.wraps(fn)
  def scoped(*args, **kwargs):
    with jax.named_scope("resample"):
      return fn(*args, **kwargs)

  return scoped


def setup_kernel(k) -> np.ndarray:
  """Separable 1-D taps -> normalised 2-D kernel (sums to 1)."""
  k = np.asarray(k, dtype=np.float32)
  if k.ndim == 1:
    k = np.outer(k, k)
  k /= np.sum(k)
  return k


def _rank_one(kernel: np.ndarray):
  """``(u, v)`` with ``kernel == outer(u, v)`` (to float32 round-off), or ``None``."""
  k = np.asarray(kernel, np.float64)
  left, sv, right = np.linalg.svd(k)
  if sv[0] == 0 or np.max(sv[1:], initial=0.0) > 1e-6 * sv[0]:
    return None
  return left[:, 0] * sv[0], right[0]


def _upfirdn1d(x, taps, axis: int, up: int, down: int, pad):
  """:func:`upfirdn2d` along one axis: a sum of strided slices times constant taps (elementwise
  work that XLA fuses into one loop), instead of a depthwise convolution."""
  p0, p1 = pad
  config = [(0, 0, 0)] * x.ndim
  config[axis] = (p0, p1 + up - 1, up - 1)
  x = jax.lax.pad(x, jnp.array(0, x.dtype), config)
  n_out = (x.shape[axis] - len(taps)) // down + 1
  out = None
  for j, tap in enumerate(taps[::-1]):   # a true convolution: the kernel flipped
    if tap == 0:
      continue
    term = jax.lax.slice_in_dim(x, j, j + (n_out - 1) * down + 1, stride=down, axis=axis)
    term = term * jnp.asarray(tap, x.dtype)
    out = term if out is None else out + term
  return out


@_resample_scope
def upfirdn2d(x, kernel, up: int = 1, down: int = 1, pad=(0, 0)):
  """Upsample by zero insertion, pad, convolve with ``kernel`` (2-D), downsample. ``x`` is NHWC.

  A separable (rank-one) kernel, as every FIR kernel built by :func:`setup_kernel` is, runs as one
  1-D pass along the height and one along the width. XLA:CPU ran the depthwise convolution of the
  general case slowly: a third of NCSN++'s forward time (README, "Speed of the paper's networks").
  """
  factors = _rank_one(kernel) if isinstance(kernel, np.ndarray) else None
  if factors is not None:
    u, v = factors
    x = _upfirdn1d(x, u, 1, up, down, pad)
    return _upfirdn1d(x, v, 2, up, down, pad)
  kernel = jnp.asarray(kernel, x.dtype)
  c = x.shape[-1]
  p0, p1 = pad
  # Zero insertion (up - 1 zeros after every sample, trailing ones included) and padding in one lax.pad.
  x = jax.lax.pad(x, jnp.array(0, x.dtype),
                  [(0, 0, 0), (p0, p1 + up - 1, up - 1), (p0, p1 + up - 1, up - 1), (0, 0, 0)])
  w = jnp.flip(kernel, (0, 1))[:, :, None, None] * jnp.ones((1, 1, 1, c), x.dtype)
  return jax.lax.conv_general_dilated(x, w, window_strides=(down, down), padding="VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=c,
                                      precision=jax.lax.Precision.HIGHEST)


def upsample_2d(x, k=(1, 3, 3, 1), factor: int = 2, gain: float = 1.0):
  """FIR upsampling by ``factor`` (no learned weights)."""
  k = setup_kernel(k) * (gain * factor**2)
  p = k.shape[0] - factor
  return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x, k=(1, 3, 3, 1), factor: int = 2, gain: float = 1.0):
  """FIR downsampling by ``factor`` (no learned weights)."""
  k = setup_kernel(k) * gain
  p = k.shape[0] - factor
  return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))


@_resample_scope
def naive_upsample_2d(x, factor: int = 2):
  """Nearest-neighbour upsampling."""
  return conv_lib.upsample(x, factor)


@_resample_scope
def naive_downsample_2d(x, factor: int = 2):
  """Average pooling."""
  n, h, w, c = x.shape
  return x.reshape(n, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def upsample_conv_2d(x, w, k=(1, 3, 3, 1), factor: int = 2, gain: float = 1.0):
  """Transposed convolution with ``w`` (HWIO) fused with FIR upsampling."""
  conv_h = w.shape[0]
  k = setup_kernel(k) * (gain * factor**2)
  p = (k.shape[0] - factor) - (conv_h - 1)
  # conv_transpose2d(x, flipped w) = correlation of the zero-dilated input with w, padded by k - 1.
  x = jax.lax.conv_general_dilated(x, w, window_strides=(1, 1),
                                   padding=[(conv_h - 1, conv_h - 1)] * 2,
                                   lhs_dilation=(factor, factor),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                   precision=jax.lax.Precision.HIGHEST)
  return upfirdn2d(x, k, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x, w, k=(1, 3, 3, 1), factor: int = 2, gain: float = 1.0):
  """FIR downsampling fused with a stride-``factor`` convolution with ``w`` (HWIO)."""
  conv_h = w.shape[0]
  k = setup_kernel(k) * gain
  p = (k.shape[0] - factor) + (conv_h - 1)
  x = upfirdn2d(x, k, pad=((p + 1) // 2, p // 2))
  return jax.lax.conv_general_dilated(x, w, window_strides=(factor, factor), padding="VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      precision=jax.lax.Precision.HIGHEST)


class Conv2d(nn.Module):
  """Convolution with optional FIR up- or down-sampling (the paper's ``up_or_down_sampling.Conv2d``)."""

  out_ch: int
  kernel: int = 3
  up: bool = False
  down: bool = False
  resample_kernel: tuple = (1, 3, 3, 1)
  use_bias: bool = True
  kernel_init: object = None

  @nn.compact
  def __call__(self, x):
    init = self.kernel_init or nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
    w = self.param("kernel", init, (self.kernel, self.kernel, x.shape[-1], self.out_ch))
    if self.up:
      x = upsample_conv_2d(x, w, k=self.resample_kernel)
    elif self.down:
      x = conv_downsample_2d(x, w, k=self.resample_kernel)
    else:
      x = jax.lax.conv_general_dilated(x, w, (1, 1), [(self.kernel // 2, self.kernel // 2)] * 2,
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      x = x + self.param("bias", nn.initializers.zeros, (self.out_ch,))
    return x
