"""Log-likelihood on the 2-D ring mixture with its exact score: NFE, wall time and error (JSON lines).

For each SDE and divergence (exact trace, Hutchinson Gaussian, Hutchinson
Rademacher) the probability-flow log-likelihood of ``--n`` exact samples of
``p_eps`` is compared with the exact log-density of the time-eps marginal:
``mean_abs_err`` per example (for Hutchinson this is dominated by its
variance: one probe per solve) and ``bias`` (mean error, which should be near 0).
Wall time is the median of ``--repeats`` calls after a compiling first call.

  python benchmarks/likelihood.py [--n 512] [--repeats 3] [--dim 2]
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from score_sde_jax import compilation  # noqa: E402
compilation.add_xla_cpu_flags()   # before JAX's backends start, as run.py does

from score_sde_jax.data import GaussianMixture  # noqa: E402
from score_sde_jax.likelihood import log_likelihood  # noqa: E402
from score_sde_jax.sde import VESDE, VPSDE, subVPSDE  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=512)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--dim", type=int, default=2, help="data dimension (ring in the first two)")
  args = parser.parse_args()
  ring = GaussianMixture.ring()
  means = np.zeros((8, args.dim))
  means[:, :2] = ring.means
  gmm = GaussianMixture(ring.weights, means, [0.15] * 8)
  eps = 1e-5
  for sde_name, sde in [("vp", VPSDE()), ("subvp", subVPSDE()), ("ve", VESDE())]:
    score = lambda x, t, sde=sde: gmm.marginal_score(sde, x, t)
    x = jnp.asarray(gmm.marginal_sample(sde, np.random.default_rng(0), args.n, eps), jnp.float32)
    exact = np.asarray(gmm.marginal_log_prob(sde, x, jnp.full((args.n,), eps)))
    for divergence in ("exact", "gaussian", "rademacher"):
      fn = lambda k: log_likelihood(k, sde, score, x, divergence=divergence)
      t0 = time.perf_counter()
      jax.block_until_ready(fn(jax.random.PRNGKey(0)))
      first = time.perf_counter() - t0
      times = []
      for i in range(args.repeats):
        t0 = time.perf_counter()
        logp, _, nfe = jax.block_until_ready(fn(jax.random.PRNGKey(i + 1)))
        times.append(time.perf_counter() - t0)
      err = np.asarray(logp) - exact
      print(json.dumps({
          "bench": "likelihood", "sde": sde_name, "divergence": divergence, "dim": args.dim,
          "n": args.n, "nfe_mean": float(np.mean(nfe)), "nfe_max": int(np.max(nfe)),
          "first_call_s": round(first, 3), "wall_s": round(float(np.median(times)), 4),
          "mean_abs_err": float(np.mean(np.abs(err))), "max_abs_err": float(np.max(np.abs(err))),
          "bias": float(np.mean(err)), "bias_se": float(np.std(err) / np.sqrt(args.n))}), flush=True)


if __name__ == "__main__":
  main()
