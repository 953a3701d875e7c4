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

The layers are in :mod:`score_sde_jax.models.refinenet_blocks`. Submodules carry the PyTorch
attribute names (``res2_0/conv2/conv``, ``refine3/msf/convs_1``,
``refine1/adapt_convs_0/1_2_conv``, ...), so a state dict maps onto the parameter tree by name.
NCSN is noise-conditional through its normalisations (an embedding row per noise level: the
label is NCSN's level index); NCSNv2 ignores its label, and its output is divided by the
level's sigma in ``score.py`` (``model.scale_by_sigma``), as its ``output / used_sigmas``.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from score_sde_jax import checks
from score_sde_jax.models import layers
from score_sde_jax.models.refinenet_blocks import (ConditionalInstanceNorm2dPlus,
                                                  InstanceNorm2dPlus, RefineBlock, ResidualBlock,
                                                  conv)

NORMALIZATIONS = ("InstanceNorm++",)
INTERPOLATIONS = ("bilinear", "nearest_neighbor")

FIELDS = {
    "num_channels": checks.POSITIVE_INT, "nf": checks.POSITIVE_INT,
    "normalization": checks.one_of(NORMALIZATIONS),
    "interpolation": checks.one_of(INTERPOLATIONS), "activation": layers.ACTIVATION,
    "centered": checks.BOOL,
}


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
  interpolation: str = "bilinear"       # bilinear (corners aligned) | nearest_neighbor
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
