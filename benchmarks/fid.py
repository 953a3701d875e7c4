"""Speed of the FID Inception features (JSON lines): seconds per image and for 10,000 images,
XLA's GFLOP per image, the achieved GFLOP/s and its ratio to a 3x3 convolution peak measured in
the same process.

  python benchmarks/fid.py [--batch_size 50] [--repeats 3] [--size 32]

One batch of ``--size`` x ``--size`` RGB images (resized to 299 inside, as for CIFAR-10) is timed
``--repeats`` times after a compiling call; the 10,000-image time is the batch's best time
scaled (the feature pass is the same program batch after batch).
"""

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from score_sde_jax import compilation  # noqa: E402
compilation.add_xla_cpu_flags()   # before JAX's backends start, as run.py does

from benchmarks.common import best_seconds, conv_peak_gflops, flops_of  # noqa: E402
from score_sde_jax import inception  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_size", type=int, default=50)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--size", type=int, default=32)
  args = parser.parse_args()
  peak = conv_peak_gflops()
  params = inception.load_params()
  net = inception.InceptionV3()
  fn = jax.jit(lambda p, x: net.apply(p, inception.preprocess(x)))
  x = np.random.default_rng(0).random((args.batch_size, args.size, args.size, 3), np.float32)
  t0 = time.perf_counter()
  compiled = fn.lower(params, x).compile()
  compile_s = time.perf_counter() - t0
  seconds = best_seconds(compiled, (params, x), args.repeats)
  gflop = flops_of(compiled) / 1e9
  per_image = seconds / args.batch_size
  print(json.dumps({"bench": "fid_features", "backend": jax.default_backend(),
                    "device": jax.devices()[0].device_kind, "batch_size": args.batch_size,
                    "image_size": args.size, "compile_s": round(compile_s, 1),
                    "batch_s": round(seconds, 3), "s_per_image": round(per_image, 4),
                    "s_per_10000_images": round(per_image * 10_000, 1),
                    "gflop_per_image": round(gflop / args.batch_size, 2),
                    "gflops": round(gflop / seconds, 1), "conv_peak_gflops": round(peak, 1),
                    "ratio_to_peak": round(gflop / seconds / peak, 3)}), flush=True)


if __name__ == "__main__":
  main()
