"""Samplers on the 2-D ring mixture with its exact score: NFE, wall time, quality (JSON lines).

The network is out of the loop, so the numbers measure the samplers alone.
Wall time is the median of ``--repeats`` calls after a first (compiling) call,
whose time is reported as ``first_call_s``.

``--part solvers``: the paper's samplers (PC, annealed Langevin, adaptive and fixed-step
probability-flow ODE, diffrax reverse SDE) with MMD against ``--n`` exact draws; then diffrax's
Euler-Maruyama reverse-SDE solve against the ``lax.scan`` Euler-Maruyama predictor at the same
number of steps (``time_ratio`` = diffrax / scan).

``--part fast``: the few-step samplers (DPM-Solver++ orders 1-3, EDM's Heun) at 5 to 50 NFE
beside the references PC-1000 (reverse diffusion + Langevin), Euler-Maruyama 100 and the
adaptive ODE. Quality is ``logp_gap``: the samples' mean exact log-density minus that of
``--n_logp`` exact draws (its sampling noise is printed on the first line: a second set of exact
draws), and MMD on the first ``--n`` samples. The few-step samplers use the toy configs' noise
range (``sigma_min=0.01``, ``sigma_max=10``) and, as ``range=sde``, the SDE's own.
``--figure PATH`` draws |logp_gap| against NFE.

  python benchmarks/sampling.py [--part all|solvers|fast] [--n 2000] [--repeats 3]
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
from score_sde_jax import viz  # noqa: E402
from score_sde_jax.sampling import (annealed_langevin_sample, dpm_solver_sample,  # noqa: E402
                                    edm_sample, ode_sample, pc_sample, sde_sample)
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


SDES = [("vp", VPSDE()), ("subvp", subVPSDE()), ("ve", VESDE(sigma_max=5.0))]
TOY_RANGE = {"sigma_min": 0.01, "sigma_max": 10.0}   # configs/default_toy.py
FAST_NFES = (5, 10, 15, 20, 30, 50)


def fast_samplers(sde, score, shape, nfe, sigma_range):
  """The few-step samplers at (about) ``nfe`` evaluations, denoised at the end as in configs."""
  out = {f"dpm_solver++ order {o}" + (" (ddim)" if o == 1 else ""): (
      lambda k, o=o: dpm_solver_sample(k, sde, score, shape, num_steps=nfe - 1 - (o == 3),
                                       order=o, schedule="edm", denoise=True, **sigma_range))
      for o in (1, 2, 3)}
  out["edm heun"] = lambda k: edm_sample(k, sde, score, shape, num_steps=(nfe - 1) // 2,
                                         schedule="edm", **sigma_range)
  return out


def fast_part(args, gmm):
  big = (args.n_logp, 2)
  exact = gmm.sample(np.random.default_rng(1), args.n_logp).astype(np.float32)
  lp_exact = float(np.mean(gmm.log_prob(exact)))
  other = gmm.sample(np.random.default_rng(2), args.n_logp).astype(np.float32)
  ref = exact[:args.n]
  quality = lambda x: {"logp_gap": round(float(np.mean(gmm.log_prob(x))) - lp_exact, 4),
                       "mmd": round(mmd(np.asarray(x)[:args.n], ref), 5)}
  print(json.dumps({"bench": "fast_sampling", "sampler": "exact samples (noise level)",
                    "n_logp": args.n_logp, **quality(other)}), flush=True)
  panels, references = {}, {}
  for sde_name, sde in SDES:
    score = lambda x, t, sde=sde: gmm.marginal_score(sde, x, t)
    refs = {
        "pc reverse_diffusion+langevin N=1000": lambda k: pc_sample(k, sde, score, big),
        "euler_maruyama N=100": lambda k: pc_sample(k, sde, score, big, predictor="euler_maruyama",
                                                    corrector="none", num_steps=100),
        "ode tsit5 rtol=atol=1e-5": lambda k: ode_sample(k, sde, score, big),
    }
    references[sde_name] = {}
    for name, fn in refs.items():
      x, nfe, first, wall = timed(fn, args.repeats)
      row = {"sde": sde_name, "sampler": name, "nfe": int(nfe), "wall_s": round(wall, 4), **quality(x)}
      references[sde_name][name.split(" rtol")[0]] = (int(nfe), abs(row["logp_gap"]))
      print(json.dumps({"bench": "fast_sampling", **row}), flush=True)
    curves = {}
    for range_name, sigma_range in (("toy", TOY_RANGE), ("sde", {})):
      for nfe_target in FAST_NFES:
        for name, fn in fast_samplers(sde, score, big, nfe_target, sigma_range).items():
          x, nfe, first, wall = timed(fn, args.repeats)
          row = {"sde": sde_name, "sampler": name, "range": range_name, "nfe": int(nfe),
                 "first_call_s": round(first, 3), "wall_s": round(wall, 4), **quality(x)}
          print(json.dumps({"bench": "fast_sampling", **row}), flush=True)
          if range_name == "toy":
            nf, v = curves.setdefault(name, ([], []))
            nf.append(int(nfe)), v.append(abs(row["logp_gap"]))
    panels[sde_name] = curves
  if args.figure:
    viz.plot_quality_vs_nfe(panels, args.figure, references=references,
                            title="Ring, exact score")
    print(json.dumps({"bench": "fast_sampling", "figure": args.figure}))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--part", choices=("all", "solvers", "fast"), default="all")
  parser.add_argument("--n", type=int, default=2000)
  parser.add_argument("--n_logp", type=int, default=100_000)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--figure", default=None)
  args = parser.parse_args()
  gmm = GaussianMixture.ring()
  if args.part in ("all", "fast"):
    fast_part(args, gmm)
  if args.part == "fast":
    return
  ref = gmm.sample(np.random.default_rng(1), args.n)
  null = mmd(gmm.sample(np.random.default_rng(2), args.n), ref)
  print(json.dumps({"bench": "sampling", "sampler": "exact samples (reference)", "mmd": null}))
  shape = (args.n, 2)
  for sde_name, sde in SDES:
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
