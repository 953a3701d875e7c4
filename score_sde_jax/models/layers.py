"""Shared layers: time / noise-level embeddings."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def get_timestep_embedding(timesteps: jax.Array, embedding_dim: int,
                           max_positions: int = 10000) -> jax.Array:
  """Sinusoidal embedding of DDPM (Ho et al. 2020), ``(B,) -> (B, embedding_dim)``."""
  if timesteps.ndim != 1:
    raise ValueError(f"timesteps: shape {timesteps.shape}, expected (B,)")
  half_dim = embedding_dim // 2
  scale = math.log(max_positions) / (half_dim - 1)
  freqs = jnp.exp(jnp.arange(half_dim, dtype=jnp.float32) * -scale)
  emb = timesteps.astype(jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.sin(emb), jnp.cos(emb)], axis=1)
  if embedding_dim % 2 == 1:
    emb = jnp.pad(emb, [[0, 0], [0, 1]])
  return emb


class GaussianFourierProjection(nn.Module):
  """Random Fourier features ``[sin(2 pi W x), cos(2 pi W x)]`` (Tancik et al. 2020).

  ``W`` is drawn once from ``N(0, scale^2)`` and never trained: it is a
  parameter (as in the paper's code, so checkpoints carry it) behind a
  ``stop_gradient``.
  """

  embedding_size: int = 256
  scale: float = 1.0

  @nn.compact
  def __call__(self, x):
    W = self.param("W", jax.nn.initializers.normal(stddev=self.scale), (self.embedding_size,))
    W = jax.lax.stop_gradient(W)
    x_proj = x[:, None] * W[None, :] * 2 * jnp.pi
    return jnp.concatenate([jnp.sin(x_proj), jnp.cos(x_proj)], axis=-1)


ACTIVATIONS = {
    "swish": nn.swish,
    "silu": nn.silu,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "elu": nn.elu,
    "softplus": nn.softplus,
    "tanh": jnp.tanh,
}


def get_act(name: str):
  """Activation function by name; an unknown name lists the known ones."""
  try:
    return ACTIVATIONS[name]
  except KeyError:
    raise ValueError(f"model.activation={name!r}: unknown; known: {sorted(ACTIVATIONS)}") from None
