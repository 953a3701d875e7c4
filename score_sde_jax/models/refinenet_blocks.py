"""The layers of NCSN's and NCSNv2's RefineNets (:mod:`score_sde_jax.models.refinenet`), NHWC:
PyTorch-initialised convolutions (dilated too), instance norm++ (unconditional and
noise-conditional), corner-aligned bilinear resizing and RefineNet's blocks, each under
ermongroup's attribute names so that a state dict maps onto the parameter tree by name."""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_sde_jax.models import layers

EPS = 1e-5  # PyTorch's InstanceNorm2d eps, and the one of instance norm++'s channel statistics


def _pytorch_init(fan_in: int):
  """PyTorch's default ``Conv2d`` initialisation (the paper's ``ncsn_conv3x3``): uniform in
  ``+-1 / sqrt(fan_in)``, for the kernel and the bias alike."""
  bound = 1.0 / np.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class DilatedConv(nn.Module):
  """A dilated ``k x k`` convolution with PyTorch's ``padding = dilation * (k - 1) / 2``."""

  features: int
  kernel_size: int
  dilation: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    k, d = self.kernel_size, self.dilation
    init = _pytorch_init(k * k * x.shape[-1])
    kernel = self.param("kernel", init, (k, k, x.shape[-1], self.features), jnp.float32)
    dtype = jnp.result_type(x, kernel)
    pad = (d * (k - 1) // 2,) * 2
    y = jax.lax.conv_general_dilated(x.astype(dtype), kernel.astype(dtype), (1, 1), (pad, pad),
                                     rhs_dilation=(d, d),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      y = y + self.param("bias", init, (self.features,), jnp.float32).astype(dtype)
    return y


def conv(x, features: int, *, kernel_size: int = 3, dilation: int = 1, use_bias: bool = True,
         name: str | None = None):
  """PyTorch's ``nn.Conv2d(in, features, kernel_size, padding=dilation * (k - 1) // 2,
  dilation=dilation, bias=use_bias)`` on NHWC ``x``: parameters ``kernel`` (HWIO) and ``bias``."""
  k = kernel_size
  if dilation == 1:   # the library's Conv: the same parameters, faster gradients on a CPU
    init = _pytorch_init(k * k * x.shape[-1])
    pad = ((k - 1) // 2,) * 2
    return layers.Conv(features, (k, k), padding=(pad, pad), use_bias=use_bias, kernel_init=init,
                       bias_init=init, name=name)(x)
  return DilatedConv(features, k, dilation, use_bias, name=name)(x)


# --- Normalisations ------------------------------------------------------------------------------

def _ones_plus_noise(key, shape, dtype=jnp.float32):
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)   # PyTorch's normal_(1, 0.02)


def _instance_norm_plus(x):
  """``(instance-normalised x, normalised channel means)`` of instance norm++: the channel means
  standardised across channels with the unbiased variance (``torch.var``)."""
  means = jnp.mean(x, axis=(1, 2))
  m = jnp.mean(means, axis=-1, keepdims=True)
  v = jnp.var(means, axis=-1, keepdims=True, ddof=1)
  means_plus = (means - m) / jnp.sqrt(v + EPS)
  h = (x - means[:, None, None, :]) / jnp.sqrt(jnp.var(x, axis=(1, 2), keepdims=True) + EPS)
  return h, means_plus[:, None, None, :]


class InstanceNorm2dPlus(nn.Module):
  """Instance norm++ (NCSNv2's unconditional one): ``gamma (h + alpha means) + beta``."""

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    h, means = _instance_norm_plus(x)
    alpha = self.param("alpha", _ones_plus_noise, (c,))
    gamma = self.param("gamma", _ones_plus_noise, (c,))
    beta = self.param("beta", nn.initializers.zeros, (c,))
    return gamma * (h + means * alpha) + beta


class ConditionalInstanceNorm2dPlus(nn.Module):
  """NCSN's noise-conditional instance norm++: ``gamma, alpha, beta`` are the label's row of an
  embedding (``embed``, ``(num_classes, 3 C)``; gamma and alpha start at N(1, 0.02), beta at 0)."""

  num_classes: int

  @nn.compact
  def __call__(self, x, y):
    c = x.shape[-1]

    def init(key, shape, dtype=jnp.float32):
      return jnp.concatenate([_ones_plus_noise(key, (shape[0], 2 * c), dtype),
                              jnp.zeros((shape[0], c), dtype)], axis=-1)

    embed = nn.Embed(self.num_classes, 3 * c, embedding_init=init, name="embed")
    gamma, alpha, beta = jnp.split(embed(y), 3, axis=-1)
    h, means = _instance_norm_plus(x)
    h = h + means * alpha[:, None, None, :]
    return gamma[:, None, None, :] * h + beta[:, None, None, :]


# --- Resizing ------------------------------------------------------------------------------------

def _align_corners_matrix(n_out: int, n_in: int) -> np.ndarray:
  """Linear interpolation from ``n_in`` to ``n_out`` samples with the end points aligned
  (``F.interpolate(..., mode='bilinear', align_corners=True)`` along one axis)."""
  m = np.zeros((n_out, n_in), np.float32)
  if n_out == 1 or n_in == 1:
    m[:, 0] = 1.0
    return m
  src = np.arange(n_out) * (n_in - 1) / (n_out - 1)
  lo = np.minimum(np.floor(src).astype(int), n_in - 1)
  hi = np.minimum(lo + 1, n_in - 1)
  w = (src - lo).astype(np.float32)
  np.add.at(m, (np.arange(n_out), lo), 1 - w)
  np.add.at(m, (np.arange(n_out), hi), w)
  return m


def resize(x, shape: Sequence[int], interpolation: str):
  """``x`` (NHWC) resized to ``shape`` (H, W): bilinear with aligned corners, as ermongroup's
  ``F.interpolate``, or nearest neighbour."""
  h, w = int(shape[0]), int(shape[1])
  if (h, w) == tuple(x.shape[1:3]):
    return x
  if interpolation == "nearest_neighbor":
    return jax.image.resize(x, (x.shape[0], h, w, x.shape[-1]), "nearest")
  rows = jnp.asarray(_align_corners_matrix(h, x.shape[1]), x.dtype)
  cols = jnp.asarray(_align_corners_matrix(w, x.shape[2]), x.dtype)
  return jnp.einsum("ph,qw,nhwc->npqc", rows, cols, x)


# --- Blocks (ermongroup's names) -----------------------------------------------------------------

class ConvMeanPool(nn.Module):
  """A convolution, then 2 x 2 mean pooling (its parameters under ``conv``)."""

  features: int
  kernel_size: int = 3

  @nn.compact
  def __call__(self, x):
    h = conv(x, self.features, kernel_size=self.kernel_size, name="conv")
    return (h[:, ::2, ::2] + h[:, 1::2, ::2] + h[:, ::2, 1::2] + h[:, 1::2, 1::2]) / 4.0


class ResidualBlock(nn.Module):
  """NCSNv2's ``ResidualBlock`` / NCSN's ``ConditionalResidualBlock`` (with ``num_classes``):
  norm, act, conv, norm, act, conv, plus a shortcut; ``resample='down'`` halves the size unless
  the block is dilated (then it only widens, as the original)."""

  features: int
  act: Callable
  resample: str | None = None
  dilation: int = 1
  num_classes: int | None = None   # None: unconditional (NCSNv2)

  def _norm(self, name, h, y):
    """Instance norm++, conditioned on the level index ``y`` when the block is (NCSN's)."""
    if self.num_classes is None:
      return InstanceNorm2dPlus(name=name)(h)
    return ConditionalInstanceNorm2dPlus(self.num_classes, name=name)(h, y)

  @nn.compact
  def __call__(self, x, y=None):
    norm = functools.partial(self._norm, y=y)
    c_in, d = x.shape[-1], self.dilation
    h = self.act(norm("normalize1", x))
    if self.resample == "down":
      h = conv(h, c_in, dilation=d, name="conv1")
      h = self.act(norm("normalize2", h))
      if d > 1:
        h = conv(h, self.features, dilation=d, name="conv2")
        shortcut = conv(x, self.features, dilation=d, name="shortcut")
      else:
        h = ConvMeanPool(self.features, name="conv2")(h)
        shortcut = ConvMeanPool(self.features, kernel_size=1, name="shortcut")(x)
    else:
      h = conv(h, self.features, dilation=d, name="conv1")
      h = self.act(norm("normalize2", h))
      h = conv(h, self.features, dilation=d, name="conv2")
      if self.features == c_in:
        shortcut = x
      else:
        shortcut = conv(x, self.features, kernel_size=3 if d > 1 else 1, dilation=d,
                        name="shortcut")
    return h + shortcut


class RCUBlock(nn.Module):
  """Residual conv units: ``n_blocks`` of ``n_stages`` x (norm, act, conv 3x3 without bias)."""

  features: int
  n_blocks: int
  act: Callable
  num_classes: int | None = None
  n_stages: int = 2

  @nn.compact
  def __call__(self, x, y=None):
    for i in range(1, self.n_blocks + 1):
      residual = x
      for j in range(1, self.n_stages + 1):
        if self.num_classes is not None:
          x = ConditionalInstanceNorm2dPlus(self.num_classes, name=f"{i}_{j}_norm")(x, y)
        x = conv(self.act(x), self.features, use_bias=False, name=f"{i}_{j}_conv")
      x = x + residual
    return x


class MSFBlock(nn.Module):
  """Multi-resolution fusion: each input (normalised, for NCSN) through a 3x3 conv, resized to
  ``shape`` and summed."""

  features: int
  shape: Sequence[int]
  interpolation: str
  num_classes: int | None = None

  @nn.compact
  def __call__(self, xs, y=None):
    total = 0.0
    for i, x in enumerate(xs):
      if self.num_classes is not None:
        x = ConditionalInstanceNorm2dPlus(self.num_classes, name=f"norms_{i}")(x, y)
      total = total + resize(conv(x, self.features, name=f"convs_{i}"), self.shape,
                             self.interpolation)
    return total


class CRPBlock(nn.Module):
  """Chained residual pooling: act, then ``n_stages`` x (pool 5x5, conv 3x3 without bias), each
  added to the running sum. NCSNv2 max-pools; NCSN normalises then average-pools (borders
  divided by 25, as PyTorch's ``AvgPool2d`` counting the padding)."""

  features: int
  act: Callable
  num_classes: int | None = None
  n_stages: int = 2

  @nn.compact
  def __call__(self, x, y=None):
    x = self.act(x)
    path = x
    pad = ((2, 2), (2, 2))
    for i in range(self.n_stages):
      if self.num_classes is None:
        path = nn.max_pool(path, (5, 5), strides=(1, 1), padding=pad)
      else:
        path = ConditionalInstanceNorm2dPlus(self.num_classes, name=f"norms_{i}")(path, y)
        path = nn.avg_pool(path, (5, 5), strides=(1, 1), padding=pad, count_include_pad=True)
      path = conv(path, self.features, use_bias=False, name=f"convs_{i}")
      x = path + x
    return x


class RefineBlock(nn.Module):
  """RefineNet's block: RCUs on each input (``adapt_convs_<i>``), fusion (``msf``) unless it is
  the first, chained residual pooling (``crp``) and output RCUs (three in the last block)."""

  features: int
  shape: Sequence[int]
  act: Callable
  interpolation: str
  start: bool = False
  end: bool = False
  num_classes: int | None = None

  @nn.compact
  def __call__(self, xs, y=None):
    hs = [RCUBlock(x.shape[-1], 2, self.act, self.num_classes, name=f"adapt_convs_{i}")(x, y)
          for i, x in enumerate(xs)]
    if self.start:
      h = hs[0]
    else:
      h = MSFBlock(self.features, self.shape, self.interpolation, self.num_classes,
                   name="msf")(hs, y)
    h = CRPBlock(self.features, self.act, self.num_classes, name="crp")(h, y)
    return RCUBlock(self.features, 3 if self.end else 1, self.act, self.num_classes,
                    name="output_convs")(h, y)
