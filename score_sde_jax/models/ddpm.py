"""The DDPM U-Net (Ho et al. 2020), NHWC: a port of the paper's ``models/ddpm.py``.

Modules are named ``all_modules_<i>`` in the order of the original's flat module
list, so released checkpoints map by index (see ``score_sde_jax.convert``).
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from score_sde_jax.models import layers


class DDPM(nn.Module):
  """U-Net with DDPM residual blocks (GroupNorm of 32 groups), attention and conv resampling."""

  num_channels: int = 3
  image_size: int = 32
  nf: int = 128
  ch_mult: Sequence[int] = (1, 2, 2, 2)
  num_res_blocks: int = 2
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  resamp_with_conv: bool = True
  conditional: bool = True
  centered: bool = True
  activation: str = "swish"

  @nn.compact
  def __call__(self, x, time_cond, train: bool = False):
    act = layers.get_act(self.activation)
    nf, num_resolutions = self.nf, len(self.ch_mult)
    counter = iter(range(10**6))

    def module(cls, *args, **kwargs):
      return cls(*args, name=f"all_modules_{next(counter)}", **kwargs)

    ResnetBlock = functools.partial(layers.ResnetBlockDDPM, act=act, dropout=self.dropout,
                                    num_groups=32, skip_rescale=False)
    AttnBlock = functools.partial(layers.AttnBlock, num_groups=32, skip_rescale=False)

    if self.conditional:
      temb = layers.get_timestep_embedding(time_cond, nf)
      temb = module(nn.Dense, nf * 4, kernel_init=layers.default_init())(temb)
      temb = module(nn.Dense, nf * 4, kernel_init=layers.default_init())(act(temb))
    else:
      temb = None
    h = x if self.centered else 2 * x - 1.0

    hs = [module(layers.conv3x3, nf)(h)]
    for i_level in range(num_resolutions):
      for _ in range(self.num_res_blocks):
        h = module(ResnetBlock, out_ch=nf * self.ch_mult[i_level])(hs[-1], temb, train)
        if h.shape[1] in self.attn_resolutions:
          h = module(AttnBlock)(h)
        hs.append(h)
      if i_level != num_resolutions - 1:
        hs.append(module(layers.Downsample, with_conv=self.resamp_with_conv)(hs[-1]))

    h = hs[-1]
    h = module(ResnetBlock)(h, temb, train)
    h = module(AttnBlock)(h)
    h = module(ResnetBlock)(h, temb, train)

    for i_level in reversed(range(num_resolutions)):
      for _ in range(self.num_res_blocks + 1):
        h = module(ResnetBlock, out_ch=nf * self.ch_mult[i_level])(
            jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
      if h.shape[1] in self.attn_resolutions:
        h = module(AttnBlock)(h)
      if i_level != 0:
        h = module(layers.Upsample, with_conv=self.resamp_with_conv)(h)
    assert not hs

    h = act(module(layers.group_norm, h.shape[-1], 32)(h))
    return module(layers.conv3x3, self.num_channels, init_scale=0.0)(h)
