"""The DDPM U-Net (Ho et al. 2020), NHWC: a port of the paper's ``models/ddpm.py``.

Modules are named ``all_modules_<i>`` in the order of the original's flat module
list, so released checkpoints map by index (see ``score_sde_jax.convert``).
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn

from score_sde_jax import checks
from score_sde_jax.models import blocks as blocks_lib
from score_sde_jax.models import layers


class DDPM(nn.Module):
  """U-Net with DDPM residual blocks (GroupNorm of 32 groups), attention and conv resampling."""

  takes_images = True   # input (B, H, W, C) images, else (B, D) vectors

  num_channels: int = 3
  nf: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  resamp_with_conv: bool = True
  conditional: bool = True
  centered: bool = True
  activation: str = "swish"

  def __post_init__(self):
    checks.check_fields(self, {
        "num_channels": checks.POSITIVE_INT, "nf": checks.POSITIVE_INT, "ch_mult": checks.INTS,
        "num_res_blocks": checks.POSITIVE_INT, "attn_resolutions": checks.INTS_OR_EMPTY,
        "dropout": checks.RATE, "resamp_with_conv": checks.BOOL, "conditional": checks.BOOL,
        "centered": checks.BOOL, "activation": layers.ACTIVATION})
    if any(self.nf * m % 32 for m in self.ch_mult):
      raise ValueError(f"nf={self.nf}: the DDPM U-Net normalises with 32 groups, so nf times every "
                       f"ch_mult {tuple(self.ch_mult)} must be a multiple of 32")
    super().__post_init__()

  @staticmethod
  def unused_fields(values: dict) -> set:
    return set()

  @nn.compact
  def __call__(self, x, time_cond, train: bool = False):
    act = layers.get_act(self.activation)
    nf, num_resolutions = self.nf, len(self.ch_mult)
    counter = iter(range(10**6))

    def module(cls, *args, **kwargs):
      return cls(*args, name=f"all_modules_{next(counter)}", **kwargs)

    ResnetBlock = functools.partial(blocks_lib.ResnetBlockDDPM, act=act, dropout=self.dropout,
                                    num_groups=32, skip_rescale=False)
    AttnBlock = functools.partial(layers.AttnBlock, num_groups=32, skip_rescale=False)

    temb = None
    if self.conditional:
      temb = blocks_lib.time_mlp(module, layers.get_timestep_embedding(time_cond, nf), nf, act)
    blocks = blocks_lib.UNetBlocks(module, ResnetBlock, AttnBlock, self.attn_resolutions, temb, train)
    h = x if self.centered else 2 * x - 1.0

    hs = [module(layers.conv3x3, nf)(h)]
    for i_level in range(num_resolutions):
      blocks.down(hs, nf * self.ch_mult[i_level], self.num_res_blocks)
      if i_level != num_resolutions - 1:
        hs.append(module(layers.Downsample, with_conv=self.resamp_with_conv)(hs[-1]))

    h = blocks.middle(hs[-1])
    for i_level in reversed(range(num_resolutions)):
      h = blocks.up(h, hs, nf * self.ch_mult[i_level], self.num_res_blocks)
      if i_level != 0:
        h = module(layers.Upsample, with_conv=self.resamp_with_conv)(h)
    assert not hs

    h = act(module(layers.group_norm, h.shape[-1], 32)(h))
    return module(layers.conv3x3, self.num_channels, init_scale=0.0)(h)
