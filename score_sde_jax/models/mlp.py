"""Score MLP for low-dimensional (vector) data."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from score_sde_jax import checks
from score_sde_jax.models import layers


class ScoreMLP(nn.Module):
  """Residual MLP taking ``(x, time_cond)`` to an output shaped like ``x``.

  ``time_cond`` is the time label chosen by ``score.py`` (``999 t`` for VP /
  sub-VP, ``sigma(t)`` for VE). ``embedding_type="fourier"`` embeds
  ``log(time_cond)`` with Gaussian Fourier features (NCSN++'s choice for VE);
  ``"positional"`` embeds ``time_cond`` sinusoidally (DDPM's choice for VP).
  Each residual block adds a learned projection of the embedding.
  """

  takes_images = False   # input (B, H, W, C) images, else (B, D) vectors

  dim: int                             # data dimension D
  hidden: int = 128                    # width of every hidden layer
  num_layers: int = 3                  # number of residual blocks
  embedding_type: str = "positional"   # "positional" | "fourier"
  embedding_dim: int = 64              # size of the time embedding
  fourier_scale: float = 16.0          # std of the Fourier frequencies
  activation: str = "swish"
  dropout: float = 0.0

  def __post_init__(self):
    checks.check_fields(self, {
        "dim": checks.POSITIVE_INT, "hidden": checks.POSITIVE_INT,
        "num_layers": checks.NON_NEGATIVE_INT,
        "embedding_type": checks.one_of(("fourier", "positional")),
        "embedding_dim": (lambda v: checks.POSITIVE_INT[0](v) and v >= 4 and v % 2 == 0,
                          "an even integer >= 4"),
        "fourier_scale": checks.POSITIVE, "activation": layers.ACTIVATION,
        "dropout": checks.RATE})
    super().__post_init__()

  @staticmethod
  def unused_fields(values: dict) -> set:
    return set() if values.get("embedding_type") == "fourier" else {"fourier_scale"}

  @nn.compact
  def __call__(self, x, time_cond, train: bool = False):
    act = layers.get_act(self.activation)
    if self.embedding_type == "fourier":
      temb = layers.GaussianFourierProjection(self.embedding_dim // 2, self.fourier_scale)(
          jnp.log(time_cond))
    else:
      temb = layers.get_timestep_embedding(time_cond, self.embedding_dim)
    temb = nn.Dense(self.hidden)(act(nn.Dense(self.hidden)(temb)))

    h = nn.Dense(self.hidden)(x.reshape(x.shape[0], -1))
    for _ in range(self.num_layers):
      r = nn.Dense(self.hidden)(act(h)) + nn.Dense(self.hidden)(act(temb))
      r = layers.Dropout(self.dropout, deterministic=not train)(act(r))
      h = h + nn.Dense(self.hidden)(r)
    out = nn.Dense(self.dim)(act(h))
    return out.reshape(x.shape)
