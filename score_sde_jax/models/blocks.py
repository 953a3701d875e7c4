"""The residual blocks and the U-Net walk that DDPM and NCSN++ / DDPM++ share (ports of the paper's
``ResnetBlockDDPM``, ``ResnetBlockDDPMpp``, ``ResnetBlockBigGANpp`` and its module order)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from score_sde_jax.models import up_or_down_sampling as fir_lib
from score_sde_jax.models.layers import NIN, Dropout, conv1x1, conv3x3, default_init, group_norm


def _add_temb(h, temb, act, out_ch):
  if temb is None:
    return h
  return h + nn.Dense(out_ch, kernel_init=default_init(), name="Dense_0")(act(temb))[:, None, None, :]


class ResnetBlockDDPM(nn.Module):
  """DDPM residual block (``ResnetBlockDDPM``, and ``ResnetBlockDDPMpp`` with NCSN++'s options)."""

  act: object
  out_ch: int | None = None
  dropout: float = 0.1
  num_groups: int | None = None   # None: min(C // 4, 32); DDPM uses 32
  conv_shortcut: bool = False
  skip_rescale: bool = False
  init_scale: float = 0.0

  @nn.compact
  def __call__(self, x, temb=None, train=False):
    in_ch = x.shape[-1]
    out_ch = self.out_ch or in_ch
    h = self.act(group_norm(in_ch, self.num_groups, name="GroupNorm_0")(x))
    h = conv3x3(out_ch, name="Conv_0")(h)
    h = _add_temb(h, temb, self.act, out_ch)
    h = self.act(group_norm(out_ch, self.num_groups, name="GroupNorm_1")(h))
    h = Dropout(self.dropout, deterministic=not train)(h)
    h = conv3x3(out_ch, init_scale=self.init_scale, name="Conv_1")(h)
    if in_ch != out_ch:
      x = (conv3x3(out_ch, name="Conv_2")(x) if self.conv_shortcut
           else NIN(out_ch, name="NIN_0")(x))
    return (x + h) / np.sqrt(2.0) if self.skip_rescale else x + h


class ResnetBlockBigGAN(nn.Module):
  """BigGAN-style residual block of NCSN++, resampling inside the block (``ResnetBlockBigGANpp``)."""

  act: object
  out_ch: int | None = None
  up: bool = False
  down: bool = False
  dropout: float = 0.1
  fir: bool = False
  fir_kernel: tuple = (1, 3, 3, 1)
  skip_rescale: bool = True
  init_scale: float = 0.0

  @nn.compact
  def __call__(self, x, temb=None, train=False):
    in_ch = x.shape[-1]
    out_ch = self.out_ch or in_ch
    h = self.act(group_norm(in_ch, name="GroupNorm_0")(x))
    # Nearest upsampling is done inside Conv_0 and after the 1x1 Conv_2 (both commute with it):
    # the same values with 4/9 of Conv_0's work and a quarter of Conv_2's.
    nearest_up = self.up and not self.fir
    if self.up:
      if self.fir:
        h, x = (fir_lib.upsample_2d(v, self.fir_kernel, factor=2) for v in (h, x))
    elif self.down:
      if self.fir:
        h, x = (fir_lib.downsample_2d(v, self.fir_kernel, factor=2) for v in (h, x))
      else:
        h, x = (fir_lib.naive_downsample_2d(v, 2) for v in (h, x))
    h = conv3x3(out_ch, upsample=nearest_up, name="Conv_0")(h)
    h = _add_temb(h, temb, self.act, out_ch)
    h = self.act(group_norm(out_ch, name="GroupNorm_1")(h))
    h = Dropout(self.dropout, deterministic=not train)(h)
    h = conv3x3(out_ch, init_scale=self.init_scale, name="Conv_1")(h)
    if in_ch != out_ch or self.up or self.down:
      x = conv1x1(out_ch, name="Conv_2")(x)
    if nearest_up:
      x = fir_lib.naive_upsample_2d(x, 2)
    return (x + h) / np.sqrt(2.0) if self.skip_rescale else x + h


# --- U-Net pieces shared by DDPM and NCSN++ --------------------------------------------------------

def time_mlp(module, temb, nf, act):
  """The time embedding's two Dense layers, ``nf -> 4 nf -> 4 nf``."""
  temb = module(nn.Dense, nf * 4, kernel_init=default_init())(temb)
  return module(nn.Dense, nf * 4, kernel_init=default_init())(act(temb))


@dataclasses.dataclass(frozen=True)
class UNetBlocks:
  """Residual and attention blocks of a U-Net, created in order through ``module``.

  ``module(cls, ...)`` names each submodule by its index in the original's
  flat module list (the converter maps released checkpoints by that index),
  so the order of the calls below is the order of the original's modules.
  """

  module: Callable
  resnet: Callable                 # a ResNet block class with its fixed arguments bound
  attn: Callable                   # an attention block class likewise
  attn_resolutions: Sequence[int]
  temb: Any
  train: bool

  def down(self, hs, out_ch, num_res_blocks):
    """``num_res_blocks`` blocks on ``hs[-1]`` (attention at listed sizes), each output appended."""
    for _ in range(num_res_blocks):
      h = self.module(self.resnet, out_ch=out_ch)(hs[-1], self.temb, self.train)
      if h.shape[1] in self.attn_resolutions:
        h = self.module(self.attn)(h)
      hs.append(h)

  def middle(self, h):
    h = self.module(self.resnet)(h, self.temb, self.train)
    h = self.module(self.attn)(h)
    return self.module(self.resnet)(h, self.temb, self.train)

  def up(self, h, hs, out_ch, num_res_blocks):
    """``num_res_blocks + 1`` blocks, each on ``h`` concatenated with the next skip from ``hs``."""
    for _ in range(num_res_blocks + 1):
      h = self.module(self.resnet, out_ch=out_ch)(jnp.concatenate([h, hs.pop()], axis=-1),
                                                 self.temb, self.train)
    if h.shape[1] in self.attn_resolutions:
      h = self.module(self.attn)(h)
    return h
