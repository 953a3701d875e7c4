"""NCSN (Song & Ermon 2019) and NCSNv2 (Song & Ermon 2020): dilated RefineNets, NHWC.

Ports of the paper's ``models/ncsnv2.py`` (``ncsn``, ``ncsnv2_64``, ``ncsnv2_128``,
``ncsnv2_256``), whose layers come from ermongroup's PyTorch code (``ermongroup/ncsn``
``models/cond_refinenet_dilated.py``; ``ermongroup/ncsnv2`` ``models/ncsnv2.py``, ``layers.py``,
``normalization.py``). Where the two differ, this follows ermongroup's, whose released
checkpoints users load (``score_sde_jax.convert``):

- bilinear resizing in the multi-scale fusion aligns corners (``F.interpolate(...,
  align_corners=True)``); the paper's JAX port used ``jax.image.resize`` (half-pixel centres).
- instance norm++ normalises the channel means by their *unbiased* variance (``torch.var``); the
  JAX port used the biased one.
- NCSN's noise-conditional residual block with ``resample='down'`` normalises with the level's
  embedding (the JAX port called ``self.normalization(h, y)``, which builds a module instead of
  applying one, so its NCSN could not run).

Submodules carry the PyTorch attribute names (``res2_0/conv2/conv``, ``refine3/msf/convs_1``,
``refine1/adapt_convs_0/1_2_conv``, ...), so a state dict maps onto the parameter tree by name.
NCSN is noise-conditional through its normalisations (an embedding row per noise level: the
label is NCSN's level index); NCSNv2 ignores its label, and its output is divided by the
level's sigma in ``score.py`` (``model.scale_by_sigma``), as its ``output / used_sigmas``.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_sde_jax import checks
from score_sde_jax.models import layers

NORMALIZATIONS = ("InstanceNorm++",)
INTERPOLATIONS = ("bilinear", "nearest_neighbor")
EPS = 1e-5  # PyTorch's InstanceNorm2d eps, and the one of instance norm++'s channel statistics

FIELDS = {
    "num_channels": checks.POSITIVE_INT, "nf": checks.POSITIVE_INT,
    "normalization": checks.one_of(NORMALIZATIONS),
    "interpolation": checks.one_of(INTERPOLATIONS), "activation": layers.ACTIVATION,
    "centered": checks.BOOL,
}


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

  def _norm(self, name):
    if self.num_classes is None:
      return InstanceNorm2dPlus(name=name)
    return ConditionalInstanceNorm2dPlus(self.num_classes, name=name)

  @nn.compact
  def __call__(self, x, y=None):
    norm = (lambda name, h: self._norm(name)(h)) if self.num_classes is None else (
        lambda name, h: self._norm(name)(h, y))
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


# --- Networks ------------------------------------------------------------------------------------

# ``(name, width multiplier, down, dilation)`` per stage of two residual blocks, and the refine
# blocks' ``(name, width multiplier)`` from the coarsest stage up (ermongroup's attribute names).
_LAYOUTS = {
    64: ((("res1", 1, False, 1), ("res2", 2, True, 1), ("res3", 2, True, 2), ("res4", 2, True, 4)),
         (("refine1", 2), ("refine2", 2), ("refine3", 1), ("refine4", 1))),
    128: ((("res1", 1, False, 1), ("res2", 2, True, 1), ("res3", 2, True, 1), ("res4", 4, True, 2),
           ("res5", 4, True, 4)),
          (("refine1", 4), ("refine2", 2), ("refine3", 2), ("refine4", 1), ("refine5", 1))),
    256: ((("res1", 1, False, 1), ("res2", 2, True, 1), ("res3", 2, True, 1), ("res31", 2, True, 1),
           ("res4", 4, True, 2), ("res5", 4, True, 4)),
          (("refine1", 4), ("refine2", 2), ("refine31", 2), ("refine3", 2), ("refine4", 1),
           ("refine5", 1))),
}


def _refinenet(module, x, y, layout, num_classes):
  """The dilated RefineNet shared by NCSN and NCSNv2 (``module``: the calling network)."""
  act = layers.get_act(module.activation)
  nf = module.nf
  stages, refines = _LAYOUTS[layout]
  norm = (functools.partial(InstanceNorm2dPlus) if num_classes is None
          else functools.partial(ConditionalInstanceNorm2dPlus, num_classes))
  h = x if module.centered else 2.0 * x - 1.0
  h = conv(h, nf, name="begin_conv")
  features = []
  for name, mult, down, dilation in stages:
    block = functools.partial(ResidualBlock, nf * mult, act, dilation=dilation,
                              num_classes=num_classes)
    h = block(resample="down" if down else None, name=f"{name}_0")(h, y)
    h = block(name=f"{name}_1")(h, y)
    features.append(h)
  ref = None
  for i, (name, mult) in enumerate(refines):
    skip = features[-1 - i]
    inputs = [skip] if ref is None else [skip, ref]
    ref = RefineBlock(nf * mult, skip.shape[1:3], act, module.interpolation, start=ref is None,
                      end=i == len(refines) - 1, num_classes=num_classes, name=name)(inputs, y)
  h = norm(name="normalizer")(*((ref,) if num_classes is None else (ref, y)))
  return conv(act(h), x.shape[-1], name="end_conv")


class _RefineNetFields(nn.Module):
  takes_images = True
  layout = 64          # the stage layout (_LAYOUTS)

  num_channels: int = 3                 # C of the data
  nf: int = 128                         # ngf
  normalization: str = "InstanceNorm++"
  interpolation: str = "bilinear"       # bilinear (corners aligned, as ermongroup's) | nearest_neighbor
  activation: str = "elu"
  centered: bool = False                # inputs in [-1, 1]; False: [0, 1] mapped to 2 x - 1 here

  def __post_init__(self):
    checks.check_fields(self, FIELDS)
    super().__post_init__()

  @staticmethod
  def unused_fields(values: dict) -> set:
    return set()

  @property
  def size_multiple(self) -> int:
    """Image sizes must be multiples of this: 2 per mean-pooling stage (the dilated ones keep
    the size)."""
    return 2 ** sum(down and dilation == 1 for _, _, down, dilation in _LAYOUTS[self.layout][0])


class NCSN(_RefineNetFields):
  """NCSN's noise-conditional RefineNet (``CondRefineNetDilated``): the label is NCSN's noise
  level index ``0 .. num_scales - 1`` (0 = ``sigma_max``), selecting each normalisation's row."""

  num_scales: int = 10                  # rows of every conditional normalisation's embedding

  def __post_init__(self):
    checks.check_fields(self, {"num_scales": checks.POSITIVE_INT})
    super().__post_init__()

  # Its label must be the discrete chain's index (``training.continuous=False``; build checks).
  needs_level_index = True

  @nn.compact
  def __call__(self, x, labels, train: bool = False):
    del train
    return _refinenet(self, x, jnp.asarray(labels).astype(jnp.int32), 64, self.num_scales)


class NCSNv2(_RefineNetFields):
  """NCSNv2's unconditional RefineNet (``ncsnv2_64``: CIFAR-10, CelebA 64). The label is not
  used; the output is divided by the level's sigma in ``score.py`` (``scale_by_sigma``)."""

  @nn.compact
  def __call__(self, x, labels, train: bool = False):
    del labels, train
    return _refinenet(self, x, None, self.layout, None)


class NCSNv2_128(NCSNv2):  # noqa: N801 (the original's name)
  """NCSNv2 for 96-128 px (ermongroup's ``NCSNv2Deeper``: LSUN church, bedroom, tower)."""

  layout = 128


class NCSNv2_256(NCSNv2):  # noqa: N801
  """NCSNv2 for 256 px (ermongroup's ``NCSNv2Deepest``: FFHQ)."""

  layout = 256
