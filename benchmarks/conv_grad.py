"""The kernel gradient of a 3x3 'same' convolution, XLA's own against the rows formulation of
``score_sde_jax.models.conv`` (and the forward convolution beside them), on the shapes of the
paper's networks: one JSON line per shape with GFLOP/s of each, their ratio to the same run's
convolution peak, and whether ``conv.rows_apply`` picks the rows formulation for that shape.

This is the measurement behind ``conv.ROWS_MIN_POSITIONS`` / ``ROWS_MIN_OUT_CHANNELS``; rerun it
when JAX or the machine changes.

  python benchmarks/conv_grad.py [--shapes 16x32x32x64x64,...] [--repeats 5]
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (batch, height, width, in channels, out channels): DDPM++ 32x32 b16 (nf 32), the paper's
# CIFAR-10 networks at batch 8 (nf 128), 8x8 b64, and a 64x64 / 128x128 image.
SHAPES = ("16x32x32x32x32,16x32x32x64x32,16x32x32x64x64,16x32x32x96x32,16x16x16x64x64,"
          "64x8x8x64x64,8x32x32x128x128,8x32x32x256x128,8x16x16x256x256,8x8x8x256x256,"
          "4x64x64x128x128,1x128x128x128x128")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shapes", default=SHAPES)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  import jax
  import numpy as np
  from benchmarks.common import best_seconds, conv_peak_gflops
  from score_sde_jax.models import conv

  def seconds(fn, *a):
    return best_seconds(jax.jit(fn).lower(*a).compile(), a, args.repeats)

  peak = conv_peak_gflops()
  xla_grad = lambda x, k, g: jax.vjp(lambda k: conv._conv(x, k), k)[1](g)[0]
  for spec in args.shapes.split(","):
    n, h, w, c, o = (int(v) for v in spec.split("x"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, h, w, c)).astype(np.float32)
    k = rng.normal(size=(3, 3, c, o)).astype(np.float32)
    g = rng.normal(size=(n, h, w, o)).astype(np.float32)
    gflop = 2 * n * h * w * c * o * 9 / 1e9
    rates = {name: gflop / seconds(fn, *a) for name, fn, a in [
        ("forward", lambda x, k: conv._conv(x, k), (x, k)),
        ("kernel_grad_xla", xla_grad, (x, k, g)),
        ("kernel_grad_rows", conv.kernel_grad_rows, (x, g))]}
    print(json.dumps({
        "bench": "conv_grad", "shape": [n, h, w, c, o], "gflop": round(gflop, 3),
        **{f"{name}_gflops": round(r, 1) for name, r in rates.items()},
        **{f"{name}_peak_ratio": round(r / peak, 3) for name, r in rates.items()},
        "rows_speedup": round(rates["kernel_grad_rows"] / rates["kernel_grad_xla"], 2),
        "rows_chosen": conv.rows_apply((n, h, w, c), o), "conv_peak_gflops": round(peak, 1),
        "backend": jax.default_backend()}), flush=True)


if __name__ == "__main__":
  main()
