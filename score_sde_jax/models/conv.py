"""The image networks' convolutions, written so that XLA:CPU also runs their gradients fast.

The values are those of ``lax.conv_general_dilated`` (and ``flax.linen.Conv``'s parameters), to
float32 round-off; only how they or the kernel's gradient are computed changes, and only where it
was measured to be faster (``benchmarks/conv_grad.py``; the README's "Speed of the paper's
networks"):

- A 1x1 convolution is a matmul over channels (:func:`conv1x1`). XLA:CPU computed its kernel
  gradient as a convolution with a window the size of the image, at 13-22 GFLOP/s; as a
  contraction over batch and positions it runs at 57-97. That contraction is written per image
  and then summed over the batch (:func:`kernel_grad_1x1`): contracting batch and positions at
  once, XLA:CPU copied the cotangent into a transposed layout first, and in the DDPM++ 32x32 nf 32
  train step those copies (with the elementwise work fused into them) took 5 % of the ops' time;
  the step is 3 % faster without them.
- A 3x3 stride-1 convolution keeps XLA's forward and input gradient. Its kernel gradient is
  XLA's too, unless XLA:CPU runs the convolutions through YNNPACK (its default in jaxlib 0.10;
  ``score_sde_jax`` turns that off, ``compilation.XLA_CPU_FLAGS``, but a process that started JAX
  before importing it keeps it: :func:`cpu_convolutions_by_ynnpack`). YNNPACK computes the kernel
  gradient as a convolution whose window is the whole image, contracting only the batch at each
  tap, at a quarter of the forward's speed. In that case, on a CPU, for images of at least 32x32
  and at least 64 output channels, the kernel gradient is a 1-D convolution along the width with
  the batch and the rows folded into the contracted features (:func:`kernel_grad_rows`): 1.7-3.5x
  faster than YNNPACK's at those sizes, within 0.76-1.2x below them. XLA's own (Eigen)
  convolution was faster than both at every size measured but 1x128x128x128 (equal).
- A 3x3 convolution of a 2x nearest-upsampled image (the upsampling blocks of DDPM and of
  DDPM++ / NCSN++ without FIR) is computed on the image before upsampling
  (:func:`upsample_conv3x3`): each output phase (row and column parity) is a 2x2 convolution of
  it, 16/36 of the multiply-adds, and the kernel gradient contracts it with the cotangent summed
  over 2x2 blocks, 1/4 of them. On XLA:CPU forward, input gradient and kernel gradient ran
  1.0-2.5x faster than upsampling and convolving (``benchmarks/conv_grad.py``, upsample lines).
  On other backends (not measured) it upsamples and convolves.

Forward-mode differentiation (``jax.jvp``, used by the exact and Hutchinson divergences) is
unchanged: :func:`conv3x3`, :func:`conv1x1` and the CPU path of :func:`upsample_conv3x3` are
``jax.custom_jvp``s whose rule is the exact linearisation, and whose kernel term is written so
that its *transpose*, which reverse mode computes, is the faster formulation. JAX has no public
``custom_transpose``, so the kernel term is the transpose of the kernel gradient itself
(``jax.linear_transpose``); transposing it again gives it back.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

DIMENSIONS = ("NHWC", "HWIO", "NHWC")
# Measured on XLA:CPU with YNNPACK's convolutions, benchmarks/conv_grad.py (module docstring).
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
      return conv1x1(x, kernel[0, 0])
    if (kh, kw) == (3, 3) and padding == ((1, 1), (1, 1)):
      return conv3x3(x, kernel)
  return _conv(x, kernel, stride, padding)


def _conv(x, kernel, stride=1, padding=((1, 1), (1, 1))):
  return lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                  dimension_numbers=DIMENSIONS)


def _matmul(x, kernel):
  return lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def _bilinear_jvp(apply, kernel_term, primals, tangents):
  """The jvp of ``apply(x, kernel)``, bilinear: ``apply(dx, kernel) + kernel_term(x, dkernel)``,
  either term left out when its tangent is a symbolic zero."""
  x, kernel = primals
  dx, dkernel = tangents
  out = apply(x, kernel)
  terms = []
  if not isinstance(dx, SymbolicZero):
    terms.append(apply(dx, kernel))
  if not isinstance(dkernel, SymbolicZero):
    terms.append(kernel_term(x, dkernel))
  return out, functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(out)


def _transposed(kernel_grad, x, dkernel, scale: int = 1):
  """The linear map ``dkernel -> (x conv dkernel)`` written as the transpose of ``g ->
  kernel_grad(x, g)``, so that reverse mode runs ``kernel_grad`` itself; ``scale``: the output's
  height and width over ``x``'s."""
  n, h, w, _ = x.shape
  out = jax.ShapeDtypeStruct((n, h * scale, w * scale, dkernel.shape[-1]),
                             jnp.result_type(x, dkernel))
  return jax.linear_transpose(lambda g: kernel_grad(x, g), out)(dkernel)[0]


@jax.custom_jvp
def conv1x1(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """1x1 convolution of NHWC ``x`` with a ``(C, O)`` ``kernel``: a matmul over the channels."""
  return _matmul(x, kernel)


def kernel_grad_1x1(x: jax.Array, g: jax.Array) -> jax.Array:
  """``sum_{n,h,w} x[n, h, w, c] g[n, h, w, o]``: a contraction over the positions for each image,
  then a sum over the batch (no transposed copy of ``g``; see the module docstring). ``(C, O)``."""
  n = x.shape[0]
  per_image = lax.dot_general(x.reshape(n, -1, x.shape[-1]), g.reshape(n, -1, g.shape[-1]),
                              (((1,), (1,)), ((0,), (0,))))
  return per_image.sum(0)


conv1x1.defjvp(functools.partial(_bilinear_jvp, _matmul,
                                 functools.partial(_transposed, kernel_grad_1x1)),
               symbolic_zeros=True)


@jax.custom_jvp
def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """3x3 stride-1 convolution with zero padding 1 (NHWC, HWIO), as ``lax.conv_general_dilated``."""
  return _conv(x, kernel)


@functools.cache
def cpu_convolutions_by_ynnpack() -> bool:
  """Whether XLA:CPU compiles this process's convolutions (of 32 channels or more) to YNNPACK, as
  jaxlib 0.10 does unless ``XLA_FLAGS`` turns it off; asked once, by compiling one."""
  f = lambda x, k: _conv(x, k)
  shapes = (jax.ShapeDtypeStruct((1, 8, 8, 32), jnp.float32),
            jax.ShapeDtypeStruct((3, 3, 32, 32), jnp.float32))
  with jax.default_device(jax.devices("cpu")[0]):
    return "__ynn_fusion" in jax.jit(f).lower(*shapes).compile().as_text()


def rows_apply(x_shape, out_channels: int) -> bool:
  """Whether :func:`kernel_grad_rows` is used for this input shape and output channel count (on a
  CPU whose convolutions are YNNPACK's)."""
  return (x_shape[1] * x_shape[2] >= ROWS_MIN_POSITIONS and out_channels >= ROWS_MIN_OUT_CHANNELS
          and cpu_convolutions_by_ynnpack())


def _conv_in_kernel(x, dkernel):
  """``conv3x3(x, dkernel)``, linear in ``dkernel``; its transpose is the kernel gradient."""
  if not rows_apply(x.shape, dkernel.shape[-1]):
    return _conv(x, dkernel)
  return lax.platform_dependent(dkernel, cpu=functools.partial(_transposed, kernel_grad_rows, x),
                                default=lambda d: _conv(x, d))


conv3x3.defjvp(functools.partial(_bilinear_jvp, _conv, _conv_in_kernel), symbolic_zeros=True)


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


# --- A 3x3 convolution of a 2x nearest-upsampled image ------------------------------------------
# Each output pixel of conv3x3(upsample(x)) reads a 2x2 patch of x, with the kernel's taps summed
# by the phase (row and column parity) of the output pixel: row phase 0 reads rows Y-1 and Y of x
# with taps K[0] and K[1] + K[2], phase 1 rows Y and Y+1 with K[0] + K[1] and K[2]. So the four
# phases are one 2x2 convolution of x (4 x out channels), 16/36 of the multiply-adds, and the
# kernel gradient is a contraction of x with the cotangent summed over 2x2 blocks, 1/4 of them.
def upsample(x: jax.Array, factor: int = 2) -> jax.Array:
  """Nearest-neighbour upsampling of NHWC ``x``."""
  n, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, factor, w, factor, c))
  return x.reshape(n, h * factor, w * factor, c)


def upsample_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """``conv3x3(upsample(x, 2), kernel)`` (NHWC, HWIO; zero padding 1 of the upsampled image).

  On a CPU it is computed without forming the upsampled image (:func:`_subpixel_conv`): 16/36 of
  the forward's and the input gradient's multiply-adds and 1/4 of the kernel gradient's; other
  backends (not measured) upsample and convolve."""
  return lax.platform_dependent(x, kernel, cpu=_subpixel_conv,
                                default=lambda x, k: conv3x3(upsample(x), k))


def _phase_kernel(kernel):
  """``(3, 3, C, O) -> (2, 2, C, 4 O)``: the 2x2 kernel of each output phase, phases ``(a, b)``
  outer in the output channels (sums of the kernel's taps; a dot with 0/1 matrices ran up to 3x
  slower than the 256-channel convolution itself)."""
  c, o = kernel.shape[2:]

  def phases(t):   # 3 taps on axis 0 -> (phase, 2x2 window row) on axes 0, 1
    return jnp.stack([jnp.stack([t[0], t[1] + t[2]]), jnp.stack([t[0] + t[1], t[2]])])

  both = phases(jnp.moveaxis(phases(kernel), 2, 0))          # (b, s, a, r, C, O)
  return both.transpose(3, 1, 4, 2, 0, 5).reshape(2, 2, c, 4 * o)


def _subpixel_apply(x, kernel):
  n, h, w, _ = x.shape
  o = kernel.shape[-1]
  # Window position P covers rows P-1 and P of x: phase 0 of output row Y is at P = Y, phase 1 at
  # P = Y + 1.
  y = _conv(x, _phase_kernel(kernel)).reshape(n, h + 1, w + 1, 2, 2, o)
  rows = [jnp.stack([y[:, a:a + h, b:b + w, a, b] for b in range(2)], 3) for a in range(2)]
  return jnp.stack(rows, 2).reshape(n, 2 * h, 2 * w, o)        # (n, h, a, w, b, o)


def kernel_grad_upsample(x: jax.Array, g: jax.Array) -> jax.Array:
  """The kernel gradient of :func:`upsample_conv3x3`: ``sum_{n,Y,X} x[n, Y, X, c] G[n, Y, X, i, j,
  o]``, where ``G[.., i, j, .]`` sums the cotangent ``g`` over the 2x2 block of output pixels
  that tap ``(i, j)`` reads from ``x[Y, X]``. Returns ``(3, 3, C, O)``."""
  n, h, w, c = x.shape
  o = g.shape[-1]
  g_pad = jnp.pad(g, ((0, 0), (1, 1), (1, 1), (0, 0)))
  blocks = lax.reduce_window(g_pad, np.zeros((), g.dtype), lax.add, (1, 2, 2, 1), (1, 1, 1, 1),
                             "VALID")                      # 2x2 sums at every offset
  # Tap i reads x[Y] from output rows 2Y+1-i and 2Y+2-i: the block starting at padded row 2Y+2-i.
  taps = jnp.stack([blocks[:, 2 - i:2 - i + 2 * h:2, 2 - j:2 - j + 2 * w:2]
                    for i in range(3) for j in range(3)], 3)
  # One contraction over batch and positions: per image (as kernel_grad_1x1) ran 1.7-10x slower.
  out = lax.dot_general(x.reshape(-1, c), taps.reshape(-1, 9 * o), (((0,), (0,)), ((), ())))
  return out.reshape(c, 3, 3, o).transpose(1, 2, 0, 3)


@jax.custom_jvp
def _subpixel_conv(x, kernel):
  return _subpixel_apply(x, kernel)


_subpixel_conv.defjvp(functools.partial(_bilinear_jvp, _subpixel_apply,
                                        functools.partial(_transposed, kernel_grad_upsample,
                                                          scale=2)),
                      symbolic_zeros=True)
