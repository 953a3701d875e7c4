"""What every sampler shares: the result shape and the paper's time grid."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class SampleResult(NamedTuple):
  """A sampler's result; unpacks as ``x, nfe = ...``.

  ``samples``: ``(B, ...)``. ``nfe``: score-function evaluations per example
  (the largest over the batch when examples run their own adaptive solves,
  which is the number of batched network calls).
  """

  samples: jax.Array
  nfe: int


def time_grid(T: float, eps, num_steps: int) -> jax.Array:
  """The paper's sampling grid ``linspace(T, eps, num_steps)`` (decreasing).

  The PC sampler takes one predictor step (of size ``T / num_steps``, on a
  chain of ``num_steps`` levels) at each of these times.
  """
  return jnp.linspace(T, eps, num_steps)
