"""What the benchmarks share: XLA's FLOP count of a compiled function and the machine's
convolution peak, measured in the same process (achieved GFLOP/s only mean something as a ratio
to a peak of the same run: these machines vary from day to day)."""

import time

import jax
import jax.numpy as jnp
import numpy as np


def flops_of(compiled) -> float:
  """XLA's FLOP count of a compiled function (``jax.jit(f).lower(...).compile()``)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get("flops", float("nan"))) if cost else float("nan")


def conv_peak_gflops(shape=(16, 32, 32, 128), repeats: int = 10) -> float:
  """GFLOP/s of one 3x3 ``conv_general_dilated`` (NHWC, ``shape``, channels in = out, fp32):
  the best of ``repeats`` calls after a warm-up, the reference for the other numbers."""
  x = jnp.ones(shape, jnp.float32)
  w = jnp.ones((3, 3, shape[-1], shape[-1]), jnp.float32) / (9 * shape[-1])
  conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
  flops = flops_of(conv.lower(x, w).compile())
  conv(x, w).block_until_ready()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    conv(x, w).block_until_ready()
    times.append(time.perf_counter() - t0)
  return flops / 1e9 / float(np.min(times))
