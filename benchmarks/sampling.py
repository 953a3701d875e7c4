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

``--part digits --workdir W``: a trained digits workdir (``configs/digits/*``) with a digit
classifier in ``W/classifier`` (``run.py --mode train_classifier``). ``--n_images`` samples of
each sampler against the 180 held-out digits: the Frechet distance in the classifier's features
at the smallest time (``fd``; FID's formula, features of its last hidden layer) and MMD in pixel
space (``pixel_mmd``), with ``--n_images`` training digits as the data's own level; references
PC-1000 (reverse diffusion + Langevin) and the adaptive ODE (the config's tolerances), then the
few-step samplers at ``--digits_nfes`` with the SDE's noise range and ``--digits_range``. Each
line has the wall time of the call (``first_call_s``, compilation included; the few-step rows
also ``wall_s`` of a second call), XLA's GFLOP per score evaluation, the achieved GFLOP/s and its
ratio to a 3x3 convolution peak measured in the same run. ``--figure PATH``: FD against NFE.

  python benchmarks/sampling.py [--part all|solvers|fast|ranges|snr] [--n 2000] [--repeats 3]
  python benchmarks/sampling.py --part digits --workdir W [--n_images 256] [--figure PATH]
  python benchmarks/sampling.py --part digits --replot LINES.jsonl --figure PATH
  python benchmarks/sampling.py --part digits_goal --workdir W [--n_images 256]

``--part ranges``: the few-step samplers' noise range and time grid on the ring, as the root-mean-
square distance (float64) of 1000 samples from the exact probability-flow map of the same prior
draws (adaptive, rtol = atol = 1e-9, to the grid's last time, then the same data prediction):
the SDE's own range, ``sigma_max = 80`` and the toy range, each with the ``logsnr`` and ``edm``
grids, at about 10, 20 and 30 evaluations.

``--part snr``: PC-1000 (reverse diffusion + Langevin) on the ring against the corrector's
``snr`` (and no corrector), ``--n_logp`` samples: the mean exact log-density gap and MMD as in
``--part fast``, for VP, sub-VP, VE and a VP SDE written on the base class (Euler-Maruyama
reverse diffusion, Langevin ``alpha = 1``, as a user's own SDE).

``--part digits_goal``: FD with its sampling noise for EDM's Heun with churn (S_churn = 5,
10 steps, 21 NFE) over 6 keys and PC-1000 over 3.
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

from benchmarks.common import conv_peak_gflops, flops_of  # noqa: E402
from score_sde_jax import build, viz, workdir as workdir_lib  # noqa: E402
from score_sde_jax.data import GaussianMixture  # noqa: E402
from score_sde_jax.metrics import frechet_distance, mmd  # noqa: E402
from score_sde_jax.modes.conditional import check_classifier_matches  # noqa: E402
from score_sde_jax.sampling import (annealed_langevin_sample, dpm_solver_sample,  # noqa: E402
                                    edm_sample, ode_sample, pc_sample, sde_sample)
from score_sde_jax.sampling import grids  # noqa: E402
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
        "pc reverse_diffusion+langevin N=1000": lambda k: pc_sample(k, sde, score, big, snr=0.16),
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


def _base_class_vp():
  import dataclasses
  from score_sde_jax import SDE
  from score_sde_jax.sde import batch_mul

  @dataclasses.dataclass(frozen=True)
  class BaseClassVPSDE(SDE):
    N: int = 1000

    def sde(self, x, t):
      beta = 0.1 + 19.9 * t
      return -0.5 * batch_mul(beta, x), jnp.sqrt(beta)

    def marginal_prob(self, x, t):
      log_mean = -0.25 * t**2 * 19.9 - 0.05 * t
      return batch_mul(jnp.exp(log_mean), x), jnp.sqrt(1.0 - jnp.exp(2.0 * log_mean))

  return BaseClassVPSDE()


def snr_part(args, gmm):
  exact = gmm.sample(np.random.default_rng(1), args.n_logp).astype(np.float32)
  lp_exact = float(np.mean(gmm.log_prob(exact)))
  quality = lambda x: {"logp_gap": round(float(np.mean(gmm.log_prob(x))) - lp_exact, 4),
                       "mmd": round(mmd(np.asarray(x)[:args.n], exact[:args.n]), 5)}
  for sde_name, sde in SDES + [("vp on the base class", _base_class_vp())]:
    score = lambda x, t, sde=sde: gmm.marginal_score(sde, x, t)
    for snr in (None, 0.01, 0.02, 0.05, 0.075, 0.1, 0.16, 0.25):
      options = {"corrector": "none"} if snr is None else {"snr": snr}
      t0 = time.perf_counter()
      x, nfe = pc_sample(jax.random.PRNGKey(0), sde, score, (args.n_logp, 2), **options)
      x = np.asarray(x)
      print(json.dumps({"bench": "langevin_snr", "sde": sde_name, "snr": snr, "nfe": int(nfe),
                        "default_snr": sde.langevin_snr, "wall_s": round(time.perf_counter() - t0, 2),
                        **quality(x)}), flush=True)


def ranges_part(args):
  jax.config.update("jax_enable_x64", True)
  gmm = GaussianMixture.ring()
  shape, key = (1000, 2), jax.random.PRNGKey(0)
  ranges = (("sde", {}), ("sigma_max=80", {"sigma_max": 80.0}), ("toy", TOY_RANGE))
  for sde_name, sde in SDES:
    score = lambda x, t, sde=sde: gmm.marginal_score(sde, x, t)
    exact = {}

    def exact_map(prior_key, t_end, prior_name):
      k = (prior_name, round(t_end, 12))
      if k not in exact:
        z = sde.prior_sampling(prior_key, shape)
        exact[k] = np.asarray(ode_sample(None, sde, score, shape, z=z, rtol=1e-9, atol=1e-9,
                                         eps=t_end, denoise=True)[0])
      return exact[k]

    for schedule in ("logsnr", "edm"):
      for range_name, sigma_range in ranges:
        if sde_name == "ve" and range_name == "sigma_max=80":
          continue   # VE's own sigma_max is 5
        for nfe_target in (10, 20, 30):
          for kind in (2, 3, "edm"):
            if kind == "edm":
              steps = (nfe_target - 1) // 2
              fn = lambda: edm_sample(key, sde, score, shape, num_steps=steps, schedule=schedule,
                                      **sigma_range)
              prior_key = jax.random.split(key)[0]   # edm_sample's prior draw
            else:
              steps = nfe_target - 1 - (kind == 3)
              fn = lambda: dpm_solver_sample(key, sde, score, shape, num_steps=steps, order=kind,
                                             schedule=schedule, denoise=True, **sigma_range)
              prior_key = key
            t_end = float(grids.time_steps(sde, steps, sde.sampling_eps, schedule,
                                           **sigma_range)[-1])
            x, nfe = fn()
            rms = float(np.sqrt(np.mean(np.sum(
                (np.asarray(x) - exact_map(prior_key, t_end, kind == "edm"))**2, -1))))
            print(json.dumps({"bench": "sampler_ranges", "sde": sde_name,
                              "sampler": "edm heun" if kind == "edm" else f"dpm_solver++ order {kind}",
                              "schedule": schedule, "range": range_name, "nfe": int(nfe),
                              "rms_to_exact_flow": round(rms, 4)}), flush=True)


def _digits_setup(args):
  """The trained run, its classifier, the held-out digits, ``quality(x)`` and the lines' common
  fields."""
  run = workdir_lib.load_workdir(args.workdir)
  with_classifier = build.experiment(run.experiment.record, scope="network", classifier=True)
  clf = workdir_lib.load_classifier(with_classifier.classifier.directory(run.workdir))
  check_classifier_matches(run, clf)
  dataset = run.experiment.data.load()
  held_out = dataset.to_unit(dataset.test_levels)
  eps = run.sde.sampling_eps
  features_fn = jax.jit(lambda x: clf.feature_fn(run.scaler(x), jnp.full((x.shape[0],), eps)))
  features = lambda x: np.asarray(features_fn(jnp.asarray(x, jnp.float32)))
  f_held = features(held_out)
  flat = lambda x: np.asarray(x).reshape(len(x), -1)
  quality = lambda x: {"fd": round(frechet_distance(features(x), f_held), 3),
                       "pixel_mmd": round(mmd(flat(x), flat(held_out)), 5)}
  base = {"bench": "digits_sampling", "workdir": args.workdir, "step": run.step,
          "classifier_step": clf.step, "sde": run.experiment.model.sde_name,
          "n_images": args.n_images, "n_held_out": len(held_out)}
  return run, dataset, held_out, quality, base


def digits_part(args):
  run, dataset, held_out, quality, base = _digits_setup(args)
  n = args.n_images
  train = dataset.to_unit(dataset.train_levels[np.random.default_rng(0).choice(
      len(dataset.train_levels), n, replace=False)])
  shape = (n,) + run.data_shape
  x0 = jnp.zeros(shape, jnp.float32)
  score_flops = flops_of(jax.jit(run.score_fn).lower(x0, jnp.full((n,), 0.5)).compile())
  peak = conv_peak_gflops()
  base["conv_peak_gflops"] = round(peak, 1)
  ode = run.experiment.sampling.with_options("ode").sampler
  lo, hi = args.digits_range
  rows = []
  for nfe in args.digits_nfes:
    for range_name, rng in (("sde", (0.0, 0.0)), (f"{lo:g}-{hi:g}", (lo, hi))):
      r = dict(schedule="edm", sigma_min=rng[0], sigma_max=rng[1], noise_removal=True)
      for o in (1, 2, 3):
        rows.append((f"dpm_solver++ order {o}" + (" (ddim)" if o == 1 else ""), range_name, 2,
                     dict(method="dpm_solver", order=o, num_steps=nfe - 1 - (o == 3), **r)))
      rows.append(("edm heun", range_name, 2,
                   dict(method="edm", num_steps=(nfe - 1) // 2, churn=0.0, **r)))
  rows += [("pc reverse_diffusion+langevin N=1000", "reference", 1, dict(
               method="pc", predictor="reverse_diffusion", corrector="langevin")),
           (f"ode {ode.solver} rtol={ode.rtol:g} atol={ode.atol:g}", "reference", 1,
            dict(method="ode", num_steps=0))]
  out = [{**base, "sampler": "training digits (data's own level)", **quality(train)}]
  print(json.dumps(out[0]), flush=True)
  for name, range_name, calls, sampling in rows:
    times = []
    for i in range(calls):
      t0 = time.perf_counter()
      x, nfe = run.sample(jax.random.PRNGKey(i), n, batch_size=n, **sampling)
      times.append(time.perf_counter() - t0)
    wall = times[-1]
    gflops = score_flops * nfe / 1e9 / wall
    row = {**base, "sampler": name, "range": range_name, "nfe": int(nfe),
           "first_call_s": round(times[0], 2), "wall_s": round(wall, 2) if calls > 1 else None,
           "gflop_per_eval": round(score_flops / 1e9, 3), "achieved_gflops": round(gflops, 1),
           "ratio_to_conv_peak": round(gflops / peak, 3), **quality(x)}
    print(json.dumps(row), flush=True)
    out.append(row)
  if args.figure:
    digits_figure(out, args.figure)


def digits_goal(args):
  """The issue's digits goal, with sampling noise: FD of EDM's Heun with churn at 21 NFE over
  6 keys and of PC-1000 over 3 (``--n_images`` each), as mean and standard deviation."""
  run, _, _, quality, base = _digits_setup(args)
  for name, keys, sampling in (
      ("edm heun churn=5, 10 steps, the SDE's range", range(300, 306), dict(
          method="edm", num_steps=10, schedule="edm", sigma_min=0.0, sigma_max=0.0,
          noise_removal=True, churn=5.0)),
      ("pc reverse_diffusion+langevin N=1000", range(300, 303), dict(
          method="pc", predictor="reverse_diffusion", corrector="langevin"))):
    fds = []
    for k in keys:
      x, nfe = run.sample(jax.random.PRNGKey(k), args.n_images, batch_size=args.n_images,
                          **sampling)
      fds.append(quality(x)["fd"])
    print(json.dumps({**base, "bench": "digits_goal", "sampler": name, "nfe": int(nfe),
                      "keys": list(keys), "fd": fds, "fd_mean": round(float(np.mean(fds)), 3),
                      "fd_std": round(float(np.std(fds, ddof=1)), 3)}), flush=True)


def digits_figure(rows, path):
  """FD against NFE from the ``digits_sampling`` lines: one panel per noise range, the
  references as points and the training digits' FD as a dashed line."""
  curves, references, levels = {}, {}, {}
  for row in rows:
    if "nfe" not in row:
      levels[row["sampler"]] = row["fd"]
    elif row["range"] == "reference":
      references[row["sampler"].split(" rtol")[0]] = (row["nfe"], row["fd"])
    else:
      panel = "the SDE's noise range" if row["range"] == "sde" else f"sigma {row['range']}"
      nf, v = curves.setdefault(panel, {}).setdefault(row["sampler"], ([], []))
      nf.append(row["nfe"]), v.append(row["fd"])
  viz.plot_quality_vs_nfe(curves, path, references={p: references for p in curves}, levels=levels,
                          title=f"Digits ({rows[0]['sde']})",
                          ylabel="Frechet distance to held-out digits")
  print(json.dumps({"bench": "digits_sampling", "figure": path}))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--part", choices=("all", "solvers", "fast", "ranges", "snr", "digits",
                                          "digits_goal"),
                      default="all")
  parser.add_argument("--workdir", default=None, help="--part digits: a trained digits workdir")
  parser.add_argument("--n_images", type=int, default=256)
  parser.add_argument("--digits_nfes", type=lambda v: tuple(map(int, v.split(","))),
                      default=(10, 20, 50))
  parser.add_argument("--digits_range", type=lambda v: tuple(map(float, v.split(","))),
                      default=(0.002, 80.0), help="sigma_min,sigma_max (EDM's image range)")
  parser.add_argument("--n", type=int, default=2000)
  parser.add_argument("--n_logp", type=int, default=100_000)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--figure", default=None)
  parser.add_argument("--replot", default=None,
                      help="--part digits: draw --figure from this file of its JSON lines")
  args = parser.parse_args()
  if args.part == "digits" and args.replot:
    if not args.figure:
      parser.error("--replot draws a figure: give --figure PATH")
    with open(args.replot) as f:
      rows = [json.loads(line) for line in f if line.startswith("{")]
    return digits_figure([r for r in rows if "sampler" in r], args.figure)
  if args.part in ("digits", "digits_goal"):
    if not args.workdir:
      parser.error(f"--part {args.part} needs --workdir (a trained digits workdir with a "
                   f"classifier)")
    return (digits_part if args.part == "digits" else digits_goal)(args)
  if args.part == "ranges":
    return ranges_part(args)
  gmm = GaussianMixture.ring()
  if args.part == "snr":
    return snr_part(args, gmm)
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
        "pc reverse_diffusion+langevin N=1000": lambda k: pc_sample(k, sde, score, shape, snr=0.16),
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
