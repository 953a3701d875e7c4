"""Noise-conditional classifiers: logits of ``p_t(y | x_t)`` for class-conditional sampling.

Both take ``(x, noise_label, train)`` where ``noise_label`` is ``log(std(t) / mean_coeff(t))``
(from :func:`score_sde_jax.classifier.noise_label`; for VE this is ``log sigma(t)``, what the
original's WideResNet received as ``log(sigmas)``), embedded with Gaussian Fourier features.

* :class:`WideResNet`: the original's ``models/wideresnet_noise_conditional.py`` (WRN with
  GroupNorm, Fourier noise embedding added in every block, per-image standardisation). The
  original defines shake-shake / shake-drop helpers but its network never calls them; neither
  does this port.
* :class:`ClassifierMLP`: a residual MLP for vector data.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_sde_jax import checks
from score_sde_jax.models import layers

# Kaiming normal with fan-out (gain 2) for convolutions, as the original.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _dense_out_init(key, shape, dtype=jnp.float32):
  """The original's final layer: U[-1, 1) / sqrt(num_classes)."""
  return jax.random.uniform(key, shape, dtype, -1.0) * shape[1] ** -0.5


def _norm_act(x, name, relu=True):
  x = nn.GroupNorm(num_groups=min(x.shape[-1] // 4, 32), epsilon=1e-5, name=name)(x)
  return nn.relu(x) if relu else x


def _output_add(block_x, orig_x):
  """Adds the shortcut, average-pooled and zero-padded in channels when the shapes differ."""
  stride = orig_x.shape[-2] // block_x.shape[-2]
  if block_x.shape[-1] != orig_x.shape[-1]:
    orig_x = nn.avg_pool(orig_x, (stride, stride), (stride, stride))
    orig_x = jnp.pad(orig_x, [(0, 0), (0, 0), (0, 0), (0, block_x.shape[-1] - orig_x.shape[-1])])
  return block_x + orig_x


class WideResnetBlock(nn.Module):
  channels: int
  strides: tuple = (1, 1)
  activate_before_residual: bool = False

  @nn.compact
  def __call__(self, x, temb):
    if self.activate_before_residual:
      x = _norm_act(x, "init_bn")
      orig_x = block_x = x
    else:
      orig_x = x
      block_x = _norm_act(x, "init_bn")
    block_x = nn.Conv(self.channels, (3, 3), self.strides, padding="SAME", use_bias=False,
                      kernel_init=_conv_init, name="conv1")(block_x)
    block_x = block_x + nn.Dense(self.channels)(nn.swish(temb))[:, None, None, :]
    block_x = _norm_act(block_x, "bn_2")
    block_x = nn.Conv(self.channels, (3, 3), padding="SAME", use_bias=False,
                      kernel_init=_conv_init, name="conv2")(block_x)
    return _output_add(block_x, orig_x)


class WideResNet(nn.Module):
  """Noise-conditional WRN-(6 blocks_per_group + 4)-channel_multiplier; ``(B, H, W, C)`` images.

  The paper's CIFAR-10 classifier is ``blocks_per_group=4, channel_multiplier=10`` (WRN-28-10).
  """

  takes_images = True   # input (B, H, W, C) images, else (B, D) vectors

  num_classes: int = 10
  blocks_per_group: int = 4
  channel_multiplier: int = 10
  embedding_size: int = 128      # Fourier features of the noise label (the original's 128)
  fourier_scale: float = 16.0

  def __post_init__(self):
    checks.check_fields(self, {
        "num_classes": (lambda v: checks.POSITIVE_INT[0](v) and v >= 2, "an integer >= 2"),
        "blocks_per_group": checks.POSITIVE_INT, "channel_multiplier": checks.POSITIVE_INT,
        "embedding_size": checks.POSITIVE_INT, "fourier_scale": checks.POSITIVE})
    super().__post_init__()

  @nn.compact
  def __call__(self, x, noise_label, train: bool = False):
    if x.ndim != 4:
      raise ValueError(f"WideResNet: expected images (B, H, W, C), got shape {x.shape}")
    n = np.prod(x.shape[1:])
    x = (x - jnp.mean(x, axis=(1, 2, 3), keepdims=True)) / jnp.maximum(
        jnp.std(x, axis=(1, 2, 3), keepdims=True), 1.0 / np.sqrt(n))     # per-image standardisation
    temb = layers.GaussianFourierProjection(self.embedding_size, self.fourier_scale)(noise_label)
    temb = nn.Dense(self.embedding_size * 4)(temb)
    temb = nn.Dense(self.embedding_size * 4)(nn.swish(temb))
    x = nn.Conv(16, (3, 3), padding="SAME", use_bias=False, kernel_init=_conv_init,
                name="init_conv")(x)
    for g, (width, stride) in enumerate(((16, 1), (32, 2), (64, 2))):
      for i in range(self.blocks_per_group):
        x = WideResnetBlock(width * self.channel_multiplier, (stride, stride) if i == 0 else (1, 1),
                            activate_before_residual=(g == 0 and i == 0),
                            name=f"WideResnetGroup_{g}_block_{i}")(x, temb)
    x = _norm_act(x, "pre-pool-bn")
    x = jnp.mean(x, axis=(1, 2))
    self.sow("intermediates", "features", x)    # the pooled features (Frechet distance)
    return nn.Dense(self.num_classes, kernel_init=_dense_out_init)(x)


class ClassifierMLP(nn.Module):
  """Residual MLP classifier ``(B, D) -> (B, num_classes)`` with a Fourier noise embedding."""

  takes_images = False   # input (B, H, W, C) images, else (B, D) vectors

  num_classes: int
  hidden: int = 128
  num_layers: int = 3
  embedding_size: int = 32
  fourier_scale: float = 4.0
  activation: str = "swish"

  def __post_init__(self):
    checks.check_fields(self, {
        "num_classes": (lambda v: checks.POSITIVE_INT[0](v) and v >= 2, "an integer >= 2"),
        "hidden": checks.POSITIVE_INT, "num_layers": checks.NON_NEGATIVE_INT,
        "embedding_size": checks.POSITIVE_INT, "fourier_scale": checks.POSITIVE,
        "activation": layers.ACTIVATION})
    super().__post_init__()

  @nn.compact
  def __call__(self, x, noise_label, train: bool = False):
    act = layers.get_act(self.activation)
    temb = layers.GaussianFourierProjection(self.embedding_size, self.fourier_scale)(noise_label)
    temb = nn.Dense(self.hidden)(act(nn.Dense(self.hidden)(temb)))
    h = nn.Dense(self.hidden)(x.reshape(x.shape[0], -1))
    for _ in range(self.num_layers):
      r = nn.Dense(self.hidden)(act(h)) + nn.Dense(self.hidden)(act(temb))
      h = h + nn.Dense(self.hidden)(act(r))
    self.sow("intermediates", "features", act(h))
    return nn.Dense(self.num_classes)(act(h))
