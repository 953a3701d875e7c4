"""NCSN++ and DDPM++ (Song et al. 2021): one configurable U-Net, NHWC.

A port of the paper's ``models/ncsnpp.py``. Modules are created in the same
order as the original's flat ``all_modules`` list and named
``all_modules_<i>``, so a released PyTorch checkpoint maps onto the parameter
tree by index and submodule name (see ``score_sde_jax.convert``).
The network receives the time label chosen by ``score.py`` (``sigma(t)`` for
the Fourier embedding, ``999 t`` for the positional one); dividing the output
by sigma (``scale_by_sigma``) is done in ``score.py``, not here.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from score_sde_jax import checks
from score_sde_jax.models import blocks as blocks_lib
from score_sde_jax.models import layers


OPTIONS = {
    "resblock_type": ("ddpm", "biggan"),
    "progressive": ("none", "output_skip", "residual"),
    "progressive_input": ("none", "input_skip", "residual"),
    "progressive_combine": ("sum", "cat"),
    "embedding_type": ("fourier", "positional"),
}
FIELDS = {
    "num_channels": checks.POSITIVE_INT, "nf": checks.POSITIVE_INT, "ch_mult": checks.INTS,
    "num_res_blocks": checks.POSITIVE_INT, "attn_resolutions": checks.INTS_OR_EMPTY,
    "dropout": checks.RATE, "resamp_with_conv": checks.BOOL, "conditional": checks.BOOL,
    "fir": checks.BOOL, "fir_kernel": checks.INTS, "skip_rescale": checks.BOOL,
    **{name: checks.one_of(options) for name, options in OPTIONS.items()},
    "fourier_scale": checks.POSITIVE, "init_scale": checks.NON_NEGATIVE, "centered": checks.BOOL,
    "activation": layers.ACTIVATION,
}


class NCSNpp(nn.Module):
  """NCSN++ (``resblock_type='biggan'``, Fourier embedding, FIR) or DDPM++ (positional, no FIR)."""

  takes_images = True   # input (B, H, W, C) images, else (B, D) vectors

  num_channels: int = 3                    # C of the data
  nf: int = 128                            # base width
  ch_mult: Sequence[int] = (1, 2, 2, 2)    # width multiplier per resolution
  num_res_blocks: int = 4
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.1
  resamp_with_conv: bool = True
  conditional: bool = True                 # time-conditional
  fir: bool = False                        # FIR up/down-sampling (StyleGAN2)
  fir_kernel: Sequence[int] = (1, 3, 3, 1)
  skip_rescale: bool = True                # residuals divided by sqrt(2)
  resblock_type: str = "biggan"            # biggan | ddpm
  progressive: str = "none"                # none | output_skip | residual
  progressive_input: str = "none"          # none | input_skip | residual
  progressive_combine: str = "sum"         # sum | cat
  embedding_type: str = "positional"       # positional (of 999 t) | fourier (of log sigma)
  fourier_scale: float = 16.0
  init_scale: float = 0.0
  centered: bool = True                    # inputs in [-1, 1]; False: [0, 1] mapped to 2x - 1 here
  activation: str = "swish"

  def __post_init__(self):
    checks.check_fields(self, FIELDS)
    super().__post_init__()

  @staticmethod
  def unused_fields(values: dict) -> set:
    """Fields this network does not read, given the values of the others."""
    unused = set()
    if values.get("embedding_type") != "fourier":
      unused.add("fourier_scale")
    if not values.get("fir", True):
      unused.add("fir_kernel")
    return unused

  @nn.compact
  def __call__(self, x, time_cond, train: bool = False):
    act = layers.get_act(self.activation)
    nf, num_resolutions = self.nf, len(self.ch_mult)
    fir_kernel = tuple(self.fir_kernel)
    counter = iter(range(10**6))

    def module(cls, *args, **kwargs):
      return cls(*args, name=f"all_modules_{next(counter)}", **kwargs)

    if self.resblock_type == "ddpm":
      ResnetBlock = functools.partial(blocks_lib.ResnetBlockDDPM, act=act, dropout=self.dropout,
                                      init_scale=self.init_scale, skip_rescale=self.skip_rescale)
    else:
      ResnetBlock = functools.partial(blocks_lib.ResnetBlockBigGAN, act=act, dropout=self.dropout,
                                      fir=self.fir, fir_kernel=fir_kernel,
                                      init_scale=self.init_scale, skip_rescale=self.skip_rescale)
    AttnBlock = functools.partial(layers.AttnBlock, init_scale=self.init_scale,
                                  skip_rescale=self.skip_rescale)

    # Time / noise-level embedding.
    if self.embedding_type == "fourier":
      temb = module(layers.GaussianFourierProjection, embedding_size=nf,
                    scale=self.fourier_scale)(jnp.log(time_cond))
    else:
      temb = layers.get_timestep_embedding(time_cond, nf)
    temb = blocks_lib.time_mlp(module, temb, nf, act) if self.conditional else None
    blocks = blocks_lib.UNetBlocks(module, ResnetBlock, AttnBlock, self.attn_resolutions, temb, train)

    if not self.centered:
      x = 2 * x - 1.0

    # Downsampling.
    input_pyramid = x if self.progressive_input != "none" else None
    hs = [module(layers.conv3x3, nf)(x)]
    for i_level in range(num_resolutions):
      blocks.down(hs, nf * self.ch_mult[i_level], self.num_res_blocks)
      if i_level != num_resolutions - 1:
        if self.resblock_type == "ddpm":
          h = module(layers.Downsample, with_conv=self.resamp_with_conv, fir=self.fir,
                     fir_kernel=fir_kernel)(hs[-1])
        else:
          h = module(ResnetBlock, down=True)(hs[-1], temb, train)
        if self.progressive_input == "input_skip":
          input_pyramid = layers.Downsample(fir=self.fir, fir_kernel=fir_kernel)(input_pyramid)
          h = module(layers.Combine, method=self.progressive_combine)(input_pyramid, h)
        elif self.progressive_input == "residual":
          input_pyramid = module(layers.Downsample, out_ch=h.shape[-1], with_conv=True,
                                 fir=self.fir, fir_kernel=fir_kernel)(input_pyramid)
          input_pyramid = ((input_pyramid + h) / np.sqrt(2.0) if self.skip_rescale
                           else input_pyramid + h)
          h = input_pyramid
        hs.append(h)

    h = blocks.middle(hs[-1])

    # Upsampling.
    pyramid = None
    for i_level in reversed(range(num_resolutions)):
      h = blocks.up(h, hs, nf * self.ch_mult[i_level], self.num_res_blocks)
      if self.progressive != "none":
        c = h.shape[-1]
        if i_level == num_resolutions - 1:
          pyramid = act(module(layers.group_norm, c)(h))
          if self.progressive == "output_skip":
            pyramid = module(layers.conv3x3, self.num_channels, init_scale=self.init_scale)(pyramid)
          else:
            pyramid = module(layers.conv3x3, c)(pyramid)
        elif self.progressive == "output_skip":
          pyramid = layers.Upsample(fir=self.fir, fir_kernel=fir_kernel)(pyramid)
          pyramid_h = act(module(layers.group_norm, c)(h))
          pyramid = pyramid + module(layers.conv3x3, self.num_channels,
                                     init_scale=self.init_scale)(pyramid_h)
        else:
          pyramid = module(layers.Upsample, out_ch=c, with_conv=True, fir=self.fir,
                           fir_kernel=fir_kernel)(pyramid)
          pyramid = (pyramid + h) / np.sqrt(2.0) if self.skip_rescale else pyramid + h
          h = pyramid
      if i_level != 0:
        if self.resblock_type == "ddpm":
          h = module(layers.Upsample, with_conv=self.resamp_with_conv, fir=self.fir,
                     fir_kernel=fir_kernel)(h)
        else:
          h = module(ResnetBlock, up=True)(h, temb, train)
    assert not hs

    if self.progressive == "output_skip":
      return pyramid
    h = act(module(layers.group_norm, h.shape[-1])(h))
    return module(layers.conv3x3, self.num_channels, init_scale=self.init_scale)(h)
