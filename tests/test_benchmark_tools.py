"""The benchmarks' shared tools (benchmarks/common.py): the profiler breakdown's sorting of XLA:CPU
ops by kind, on a real compiled program, and the same-process peaks."""

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common


def test_ops_of_a_compiled_network_piece_are_sorted_by_kind():
  """A conv, a GroupNorm and an attention-like softmax inside a module called DDPM, then an
  update outside it: each compiled op lands in the kind its JAX call path names."""
  from flax import linen as nn
  from score_sde_jax.models import layers

  class DDPM(nn.Module):
    @nn.compact
    def __call__(self, x):
      h = nn.Conv(32, (3, 3), name="Conv_0")(x)
      h = layers.GroupNorm(num_groups=8, name="GroupNorm_0")(h)
      with jax.named_scope("attention"):
        h = jax.nn.softmax(h, axis=-1)
      return h

  model = DDPM()
  x = jnp.ones((2, 8, 8, 4))
  params = model.init(jax.random.PRNGKey(0), x)

  def step(params, x):
    out = model.apply(params, x)
    return jax.tree.map(lambda p: p * 0.5, params), out

  compiled = jax.jit(step).lower(params, x).compile()
  instructions = common._hlo_instructions(compiled.as_text())
  kinds = {common.categorize(name, op, fused) for name, (op, fused) in instructions.items()
           if op or fused}
  assert {"convolution", "GroupNorm", "optimizer, EMA and loss"} <= kinds
  seconds = common.op_breakdown(compiled, (params, x), calls=2)
  assert seconds["wall"] > 0
  assert seconds.get("convolution", 0) > 0
  assert set(seconds) - {"wall"} <= set(common.CATEGORIES)


def test_peaks_are_flops_over_time():
  """The matmul peak counts 2 n^3 FLOPs (XLA's count) over a positive time."""
  a = jnp.ones((64, 64))
  assert common.flops_of(jax.jit(jnp.matmul).lower(a, a).compile()) == 2 * 64**3
  assert np.isfinite(common.matmul_peak_gflops(n=64, repeats=2)) and common.matmul_peak_gflops(64, 2) > 0
