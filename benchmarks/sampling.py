"""Samplers on the 2-D ring mixture with its exact score: NFE, wall time, MMD (JSON lines).

The network is out of the loop, so the numbers measure the samplers alone.
Wall time is the median of ``--repeats`` calls after a first (compiling) call,
whose time is reported as ``first_call_s``. The last lines compare diffrax's
Euler-Maruyama reverse-SDE solve with the ``lax.scan`` Euler-Maruyama
predictor at the same number of steps (``time_ratio`` = diffrax / scan).

  python benchmarks/sampling.py [--n 2000] [--repeats 3]
"""

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from score_sde_jax.data import GaussianMixture  # noqa: E402
from score_sde_jax.metrics import mmd  # noqa: E402
from score_sde_jax.sampling import annealed_langevin_sample, ode_sample, pc_sample, sde_sample  # noqa: E402
from score_sde_jax.sde import VESDE, VPSDE, subVPSDE  # noqa: E402


def timed(fn, repeats):
  t0 = time.perf_counter()
  x, nfe = fn(jax.random.PRNGKey(0))
  jax.block_until_ready(x)
  first = time.perf_counter() - t0
  times = []
  for i in range(repeats):
    t0 = time.perf_counter()
    x, nfe = fn(jax.random.PRNGKey(i + 1))
    jax.block_until_ready(x)
    times.append(time.perf_counter() - t0)
  return np.asarray(x), nfe, first, float(np.median(times))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=2000)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  gmm = GaussianMixture.ring()
  ref = gmm.sample(np.random.default_rng(1), args.n)
  null = mmd(gmm.sample(np.random.default_rng(2), args.n), ref)
  print(json.dumps({"bench": "sampling", "sampler": "exact samples (reference)", "mmd": null}))
  shape = (args.n, 2)
  for sde_name, sde in [("vp", VPSDE()), ("subvp", subVPSDE()), ("ve", VESDE(sigma_max=5.0))]:
    score = lambda x, t, sde=sde: gmm.marginal_score(sde, x, t)
    runs = {
        "pc reverse_diffusion+langevin N=1000": lambda k: pc_sample(k, sde, score, shape),
        "pc euler_maruyama N=1000": lambda k: pc_sample(k, sde, score, shape,
                                                        predictor="euler_maruyama", corrector="none"),
        "pc reverse_diffusion N=100": lambda k: pc_sample(k, sde, score, shape, corrector="none",
                                                          num_steps=100),
        "ode tsit5 rtol=atol=1e-5": lambda k: ode_sample(k, sde, score, shape),
        "ode tsit5 rtol=atol=1e-3": lambda k: ode_sample(k, sde, score, shape, rtol=1e-3, atol=1e-3),
        "ode heun 50 steps": lambda k: ode_sample(k, sde, score, shape, solver="heun", num_steps=50),
        "sde diffrax euler N=1000": lambda k: sde_sample(k, sde, score, shape, num_steps=1000),
    }
    if sde_name != "subvp":  # sub-VP's kernel std at eps = 1e-3 is 1e-4: too small for NCSN's steps
      runs["annealed langevin 100x5"] = lambda k: annealed_langevin_sample(
          k, sde, score, shape, n_steps_each=5, step_lr=1e-4, num_scales=100)
    for name, fn in runs.items():
      x, nfe, first, wall = timed(fn, args.repeats)
      print(json.dumps({"bench": "sampling", "sde": sde_name, "sampler": name, "n": args.n,
                        "nfe": nfe, "first_call_s": round(first, 3), "wall_s": round(wall, 4),
                        "mmd": round(mmd(x, ref), 5)}), flush=True)
    for steps in (100, 1000):
      _, _, _, scan_t = timed(lambda k: pc_sample(k, sde, score, shape, predictor="euler_maruyama",
                                                   corrector="none", num_steps=steps), args.repeats)
      _, _, _, dfx_t = timed(lambda k: sde_sample(k, sde, score, shape, num_steps=steps,
                                                  denoise=False), args.repeats)
      print(json.dumps({"bench": "sde_solver_vs_scan", "sde": sde_name, "num_steps": steps,
                        "n": args.n, "lax_scan_em_s": round(scan_t, 4),
                        "diffrax_em_s": round(dfx_t, 4), "time_ratio": round(dfx_t / scan_t, 2)}),
            flush=True)


if __name__ == "__main__":
  main()
