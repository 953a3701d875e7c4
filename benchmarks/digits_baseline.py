"""Classical density baseline for the digits: scikit-learn's GaussianMixture, in bits/dim.

Same data as the score model: scikit-learn's 8x8 digits with this library's fixed
held-out split (180 test images), 17 grey levels, uniformly dequantized
(u = (k + U) / 17). The number of components and the covariance type are chosen
on a validation split (the last 10 % of the training images, by mean
log-likelihood); the chosen model is refit on all training images and scored on
the test images over ``--repeats`` dequantization draws:

    bits/dim = -log2 p(u) / 64 + log2(17)       (an upper bound on -log2 P(k) / 64)

which is the same bound ``score_sde_jax.likelihood.bits_per_dim`` computes.

  python benchmarks/digits_baseline.py [--repeats 5]
"""

import argparse
import json
import math
import os
import sys

import numpy as np
from sklearn.mixture import GaussianMixture

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from score_sde_jax import compilation  # noqa: E402
compilation.add_xla_cpu_flags()   # before JAX's backends start, as run.py does

from score_sde_jax.data import images  # noqa: E402


def dequantize(levels, rng, k=17):
  return (levels.reshape(len(levels), -1) + rng.random((len(levels), levels[0].size))) / k


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--components", default="1,2,5,10,20,40,80")
  args = parser.parse_args()
  data = images.digits()
  train, test = data.train_levels, data.test_levels
  n_val = len(train) // 10
  fit_part, val_part = train[:-n_val], train[-n_val:]
  rng = np.random.default_rng(0)
  x_fit, x_val = dequantize(fit_part, rng), dequantize(val_part, rng)
  offset = math.log2(17)
  best = None
  for cov in ("full", "diag", "tied", "spherical"):
    for k in map(int, args.components.split(",")):
      gmm = GaussianMixture(k, covariance_type=cov, random_state=0, max_iter=500, reg_covar=1e-4)
      gmm.fit(x_fit)
      val_bpd = -gmm.score(x_val) / (64 * math.log(2)) + offset
      print(json.dumps({"bench": "digits_gmm_validation", "covariance_type": cov,
                        "n_components": k, "val_bits_per_dim": round(val_bpd, 4)}), flush=True)
      if best is None or val_bpd < best[0]:
        best = (val_bpd, cov, k)
  _, cov, k = best
  gmm = GaussianMixture(k, covariance_type=cov, random_state=0, max_iter=500, reg_covar=1e-4)
  gmm.fit(dequantize(train, rng))
  per_example = np.mean([-gmm.score_samples(dequantize(test, np.random.default_rng(100 + r)))
                         for r in range(args.repeats)], axis=0) / (64 * math.log(2)) + offset
  print(json.dumps({"bench": "digits_gmm_test", "covariance_type": cov, "n_components": k,
                    "test_bits_per_dim": round(float(per_example.mean()), 4),
                    "test_bits_per_dim_se": round(float(per_example.std(ddof=1) / np.sqrt(len(test))), 4),
                    "n_test": len(test), "repeats": args.repeats}), flush=True)


if __name__ == "__main__":
  main()
