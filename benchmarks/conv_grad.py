"""The kernel gradient of a 3x3 'same' convolution, XLA's own against the rows formulation of
``score_sde_jax.models.conv`` (and the forward convolution beside them), on the shapes of the
paper's networks: one JSON line per shape with GFLOP/s of each, their ratio to the same run's
convolution peak, and whether ``conv.rows_apply`` picks the rows formulation for that shape.

This is the measurement behind ``conv.ROWS_MIN_POSITIONS`` / ``ROWS_MIN_OUT_CHANNELS``; rerun it
when JAX or the machine changes.

Then one line per ``--upsample_shapes`` entry (the image before upsampling): the 3x3 convolution
of a 2x nearest-upsampled image, ``conv.upsample_conv3x3`` against upsampling and convolving,
milliseconds of the forward, the input gradient and the kernel gradient of each, and the speed-up.

  python benchmarks/conv_grad.py [--shapes 16x32x32x64x64,...] [--upsample_shapes ...]
                                 [--repeats 5]
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from score_sde_jax import compilation  # noqa: E402
compilation.add_xla_cpu_flags()   # before JAX's backends start, as run.py does

# (batch, height, width, in channels, out channels): DDPM++ 32x32 b16 (nf 32), the paper's
# CIFAR-10 networks at batch 8 (nf 128), 8x8 b64, and a 64x64 / 128x128 image.
SHAPES = ("16x32x32x32x32,16x32x32x64x32,16x32x32x64x64,16x32x32x96x32,16x16x16x64x64,"
          "64x8x8x64x64,8x32x32x128x128,8x32x32x256x128,8x16x16x256x256,8x8x8x256x256,"
          "4x64x64x128x128,1x128x128x128x128")
# The upsampling blocks' convolutions, input shape: DDPM++ 32x32 (16 -> 32) and 8x8 (4 -> 8), the
# paper's DDPM++ at batch 8 (16 -> 32, 8 -> 16, 4 -> 8).
UPSAMPLE_SHAPES = "16x16x16x64x64,64x4x4x64x64,8x16x16x256x256,8x8x8x256x256,8x4x4x256x256"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shapes", default=SHAPES)
  parser.add_argument("--upsample_shapes", default=UPSAMPLE_SHAPES, help="'' for none")
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

  def vjp_part(fn, which):
    def part(x, k, g):
      _, vjp = jax.vjp(fn, x, k)
      return vjp(g)[which]
    return part

  upsampled = lambda x, k: conv.conv3x3(conv.upsample(x), k)
  for spec in filter(None, args.upsample_shapes.split(",")):
    n, h, w, c, o = (int(v) for v in spec.split("x"))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, h, w, c)).astype(np.float32)
    k = rng.normal(size=(3, 3, c, o)).astype(np.float32)
    g = rng.normal(size=(n, 2 * h, 2 * w, o)).astype(np.float32)
    ms = {}
    for name, fn in (("upsampled", upsampled), ("phases", conv.upsample_conv3x3)):
      ms[f"forward_{name}_ms"] = 1e3 * seconds(fn, x, k)
      ms[f"input_grad_{name}_ms"] = 1e3 * seconds(vjp_part(fn, 0), x, k, g)
      ms[f"kernel_grad_{name}_ms"] = 1e3 * seconds(vjp_part(fn, 1), x, k, g)
    print(json.dumps({
        "bench": "conv_grad_upsample", "input_shape": [n, h, w, c, o],
        "gflop_upsampled": round(2 * n * 4 * h * w * c * o * 9 / 1e9, 3),
        **{key: round(v, 3) for key, v in ms.items()},
        **{f"{part}_speedup": round(ms[f"{part}_upsampled_ms"] / ms[f"{part}_phases_ms"], 2)
           for part in ("forward", "input_grad", "kernel_grad")},
        "backend": jax.default_backend()}), flush=True)


if __name__ == "__main__":
  main()
