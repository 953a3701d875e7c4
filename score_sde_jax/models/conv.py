"""The image networks' convolutions, written so that XLA:CPU also runs their gradients fast.

The values are those of ``lax.conv_general_dilated`` (and ``flax.linen.Conv``'s parameters);
only how the kernel's gradient is computed changes, and only where it was measured to be faster
(``benchmarks/conv_grad.py``; the README's "Speed of the paper's networks"):

- A 1x1 convolution is a matmul over channels. XLA:CPU computed its kernel gradient as a
  convolution with a window the size of the image, at 13-22 GFLOP/s; as the transpose of a matmul
  (a contraction over batch and positions) it runs at 57-97.
- A 3x3 stride-1 convolution keeps XLA's forward and input gradient, but on a CPU, for images of
  at least 32x32 and at least 64 output channels, its kernel gradient is a 1-D convolution along
  the width with the batch and the rows folded into the contracted features
  (:func:`kernel_grad_rows`). XLA's own kernel gradient contracts only the batch at each of the
  image-sized window's taps: 1.7-3.5x slower at those sizes. Below them the two were within
  0.76-1.2x of each other, and DDPM++ 32x32 nf 32 trained 3 % slower with the rows formulation
  everywhere, so XLA's is kept there; on other backends XLA's is always used.

Forward-mode differentiation (``jax.jvp``, used by the exact and Hutchinson divergences) is
unchanged: :func:`conv3x3` is a ``jax.custom_jvp`` whose rule is the exact linearisation, and
whose kernel term is written so that its *transpose*, which reverse mode computes, is the faster
formulation. JAX has no public ``custom_transpose``, so the kernel term is the transpose of
:func:`kernel_grad_rows` itself (``jax.linear_transpose``); transposing it again gives it back.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

DIMENSIONS = ("NHWC", "HWIO", "NHWC")
# Measured on XLA:CPU with benchmarks/conv_grad.py (see the module docstring).
ROWS_MIN_POSITIONS = 32 * 32
ROWS_MIN_OUT_CHANNELS = 64


def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1, padding=((0, 0), (0, 0))) -> jax.Array:
  """``lax.conv_general_dilated`` of NHWC ``x`` with an HWIO ``kernel``, ``padding`` as
  ``((top, bottom), (left, right))`` or XLA's "SAME" / "VALID"; 1x1 and 3x3 stride-1 'same'
  cases take the faster paths."""
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(x.shape[1:3], kernel.shape[:2], (stride, stride), padding)
  padding = tuple(tuple(int(p) for p in pair) for pair in padding)
  kh, kw = kernel.shape[:2]
  if x.ndim == 4 and stride == 1:
    if (kh, kw) == (1, 1) and padding == ((0, 0), (0, 0)):
      return lax.dot_general(x, kernel[0, 0], (((3,), (0,)), ((), ())))
    if (kh, kw) == (3, 3) and padding == ((1, 1), (1, 1)):
      return conv3x3(x, kernel)
  return _conv(x, kernel, stride, padding)


def _conv(x, kernel, stride=1, padding=((1, 1), (1, 1))):
  return lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                  dimension_numbers=DIMENSIONS)


@jax.custom_jvp
def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """3x3 stride-1 convolution with zero padding 1 (NHWC, HWIO), as ``lax.conv_general_dilated``."""
  return _conv(x, kernel)


@functools.partial(conv3x3.defjvp, symbolic_zeros=True)
def _conv3x3_jvp(primals, tangents):
  x, kernel = primals
  dx, dkernel = tangents
  out = _conv(x, kernel)
  terms = []
  if not isinstance(dx, SymbolicZero):
    terms.append(_conv(dx, kernel))
  if not isinstance(dkernel, SymbolicZero):
    terms.append(_conv_in_kernel(x, dkernel))
  return out, functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(out)


def rows_apply(x_shape, out_channels: int) -> bool:
  """Whether :func:`kernel_grad_rows` is used for this input shape and output channel count (on a
  CPU)."""
  return x_shape[1] * x_shape[2] >= ROWS_MIN_POSITIONS and out_channels >= ROWS_MIN_OUT_CHANNELS


def _conv_in_kernel(x, dkernel):
  """``conv3x3(x, dkernel)``, linear in ``dkernel``; its transpose is the kernel gradient."""
  if not rows_apply(x.shape, dkernel.shape[-1]):
    return _conv(x, dkernel)
  out = jax.ShapeDtypeStruct(x.shape[:3] + dkernel.shape[-1:], jnp.result_type(x, dkernel))
  by_rows = lambda d: jax.linear_transpose(lambda g: kernel_grad_rows(x, g), out)(d)[0]
  return lax.platform_dependent(dkernel, cpu=by_rows, default=lambda d: _conv(x, d))


def kernel_grad_rows(x: jax.Array, g: jax.Array) -> jax.Array:
  """The gradient ``sum_{n,h,w} x_pad[n, h+i, w+j, c] g[n, h, w, o]`` of a 3x3 'same'
  convolution's kernel, as one 1-D convolution along the width: batch ``(i, c)``, contracted
  features ``(n, h)`` and a window of the image's width. Returns ``(3, 3, C, O)``."""
  n, h, w, c = x.shape
  o = g.shape[-1]
  x_pad = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  # Stacking the three row offsets on the channels and merging (n, h) are free of transposes:
  # the dimension numbers name which axis is which ("CWN": features, width, batch).
  lhs = jnp.concatenate([x_pad[:, i:i + h] for i in range(3)], -1).reshape(n * h, w + 2, 3 * c)
  rhs = g.reshape(n * h, w, o)
  out = lax.conv_general_dilated(lhs, rhs, (1,), "VALID", dimension_numbers=("CWN", "IWO", "NWC"))
  return out.reshape(3, c, 3, o).transpose(0, 2, 1, 3)                    # (i, j, c, o)
