"""Fashion-MNIST end to end on one machine: train, then bits/dim, Inception FID / KID of every
sampler against the test set, the training set's FID as the floor, and the figures (JSON lines).

  python benchmarks/fashion_mnist.py --workdir W [--config configs/fashion_mnist/ddpmpp_vp.py]
      [--part train|stats|bpd|samplers|figures|conditional|inpaint|all] [--n 250]

``train``: ``run.py --mode train`` (resumes). ``stats``: the test split's Inception statistics
(``--mode fid_stats`` with ``eval.fid_split=test``: all 10,000 images) and, as the floor, FID /
KID of ``--n`` random training images against them. ``bpd``: ``--mode eval`` without sampling
on ``--bpd_examples`` test images (Hutchinson's Rademacher probe, ``--bpd_repeats``
dequantizations; bits/dim of 8-bit data with uniform dequantization; ``--bound_num_times``:
ScoreFlow's bound beside it). ``samplers``: ``--n``
samples of each sampler (the same prior keys), their wall time, NFE, FID and KID against the
test statistics; samples to ``W/bench/<sampler>.npz``. ``figures``: a row of samples per sampler
and FID against NFE, from ``W/bench/samplers.jsonl``. ``conditional`` / ``inpaint``: the
classifier (``--mode train_classifier``), class-conditional samples, and inpainting of held-out
images with the run's own modes.

FID of ``--n`` samples is biased upwards by roughly ``2048 / n`` (the floor line is at the same
``n``): compare rows at equal ``n`` only; KID is unbiased.
"""

import argparse
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from score_sde_jax import compilation  # noqa: E402
compilation.add_xla_cpu_flags()   # before JAX's backends start, as run.py does

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import load_config  # noqa: E402
from score_sde_jax import fid, metrics, modes, viz  # noqa: E402
from score_sde_jax import workdir as workdir_lib  # noqa: E402


def samplers(run):
  """``[(name, nfe label, sampling options)]``: the paper's PC-1000 and adaptive ODE, then the
  few-step solvers over the SDE's own noise range (EDM's time grid), denoised at the end."""
  few = dict(schedule="edm", sigma_min=0.0, sigma_max=0.0, noise_removal=True)
  pc = run.experiment.sampling.with_options("pc").sampler
  ode = run.experiment.sampling.with_options("ode").sampler
  rows = [(f"pc {pc.predictor}+{pc.corrector} N={run.sde.N}", dict(method="pc")),
          (f"ode {ode.solver} adaptive rtol={ode.rtol:g}", dict(method="ode", num_steps=0))]
  for nfe in (10, 20, 50):
    rows.append((f"dpm_solver++ order 2, {nfe} nfe", dict(method="dpm_solver", order=2,
                                                          num_steps=nfe - 1, **few)))
  for nfe in (20, 50):
    rows.append((f"ddim, {nfe} nfe", dict(method="dpm_solver", order=1, num_steps=nfe - 1, **few)))
  rows.append(("edm heun, 21 nfe", dict(method="edm", num_steps=10, churn=0.0, **few)))
  rows.append(("edm heun churn=5, 21 nfe", dict(method="edm", num_steps=10, churn=5.0, **few)))
  return rows


def _quality(images_u8, stats, ref_features, inception_batch):
  f = fid.inception_features(images_u8.astype(np.float32) / 255.0, batch_size=inception_batch,
                             progress="Inception features")
  kid, kid_se = metrics.kid(f, ref_features)
  return {"fid": round(fid.fid(f, stats), 3), "kid": round(kid, 6), "kid_se": round(kid_se, 6)}


def _config(args, **eval_fields):
  config = load_config(args.config, args.set)
  for k, v in eval_fields.items():
    config.eval[k] = v
  return config


def _stats_path(args):
  return os.path.join(args.workdir, "fid_stats", "fashion_mnist_test.npz")


def part_train(args):
  t0 = time.perf_counter()
  modes.run("train", load_config(args.config, args.set), args.workdir)
  print(json.dumps({"bench": "fashion_mnist", "part": "train",
                    "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


def part_stats(args):
  path = _stats_path(args)
  if not os.path.exists(path):
    t0 = time.perf_counter()
    modes.run("fid_stats", _config(args, fid_split="test", fid_num_images=0, fid_stats=path),
              args.workdir)
    print(json.dumps({"bench": "fashion_mnist", "part": "test statistics", "path": path,
                      "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
  from score_sde_jax import build
  data = build.experiment(load_config(args.config, args.set)).data.load()
  rows = np.random.default_rng(0).choice(len(data.train_levels), args.n, replace=False)
  images = fid.to_uint8(data.to_unit(data.train_levels[rows]))
  line = {"bench": "fashion_mnist", "part": "floor", "sampler": f"training images (n={args.n})",
          "n": args.n, **_quality(images, fid.load_statistics(path), fid.load_features(path),
                                  args.inception_batch)}
  print(json.dumps(line), flush=True)
  _append(args, line)


def part_bpd(args):
  t0 = time.perf_counter()
  result = modes.run("eval", _config(args, enable_sampling=False, figures=False,
                                     num_eval_examples=args.bpd_examples,
                                     bpd_repeats=args.bpd_repeats,
                                     bound_num_times=args.bound_num_times), args.workdir)
  line = {"bench": "fashion_mnist", "part": "bpd", "step": result["step"],
          "bits_per_dim": result["bits_per_dim"], "se": result["bits_per_dim_se"],
          "examples": result["num_examples"], "bpd_repeats": args.bpd_repeats,
          "divergence": result["divergence"], "nfe_mean": result["nfe_mean"]}
  if args.bound_num_times:
    line.update(bound_bits_per_dim=result["bound_bits_per_dim"],
                bound_se=result["bound_bits_per_dim_se"], bound_num_times=args.bound_num_times)
  print(json.dumps({**line, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


def _append(args, line):
  os.makedirs(os.path.join(args.workdir, "bench"), exist_ok=True)
  with open(os.path.join(args.workdir, "bench", "samplers.jsonl"), "a") as f:
    f.write(json.dumps(line) + "\n")


def part_samplers(args):
  run = workdir_lib.load_workdir(args.workdir)
  stats_path = _stats_path(args)
  stats, ref = fid.load_statistics(stats_path), fid.load_features(stats_path)
  wanted = set(args.only.split(",")) if args.only else None
  for i, (name, options) in enumerate(samplers(run)):
    if wanted is not None and str(i) not in wanted:
      continue
    t0 = time.perf_counter()
    x, nfes = run.sample_batches(jax.random.PRNGKey(args.seed), args.n, progress=name, **options)
    seconds = time.perf_counter() - t0
    images = fid.to_uint8(x)
    safe = re.sub(r"[^A-Za-z0-9.]+", "_", name).strip("_")
    np.savez(os.path.join(args.workdir, "bench", f"{safe}.npz"), samples=images)
    line = {"bench": "fashion_mnist", "part": "samplers", "sampler": name, "step": run.step,
            "n": args.n, "nfe": int(max(int(v) for v in nfes)), "seconds": round(seconds, 1),
            "samples": f"bench/{safe}.npz",
            **_quality(images, stats, ref, args.inception_batch)}
    print(json.dumps(line), flush=True)
    _append(args, line)


def part_figures(args):
  lines = [json.loads(s) for s in open(os.path.join(args.workdir, "bench", "samplers.jsonl"))]
  rows = {line["sampler"]: line for line in lines if line["part"] == "samplers"}
  grid, labels = [], []
  for name, line in rows.items():
    grid.append(np.load(os.path.join(args.workdir, line["samples"]))["samples"][:10] / 255.0)
    labels.append(f"{name}: FID {line['fid']:.1f}")
  figures = os.path.join(args.workdir, "bench")
  viz.plot_image_grid(np.concatenate(grid), os.path.join(figures, "samples_per_sampler.png"),
                      nrow=10, row_labels=labels, title=f"Fashion-MNIST samples (n={args.n} each)")
  curves, references = {}, {}
  for name, line in rows.items():
    if "nfe" in name:
      family = name.split(",")[0]
      nfe, vals = curves.setdefault(family, ([], []))
      nfe.append(line["nfe"]), vals.append(line["fid"])
    else:
      references[name] = (line["nfe"], line["fid"])
  levels = {line["sampler"]: line["fid"] for line in lines if line["part"] == "floor"}
  viz.plot_quality_vs_nfe({"Fashion-MNIST": curves}, os.path.join(figures, "fid_vs_nfe.png"),
                          references={"Fashion-MNIST": references}, levels=levels,
                          title="FID against network evaluations", ylabel=f"FID (n={args.n})")
  print(json.dumps({"bench": "fashion_mnist", "part": "figures",
                    "paths": [os.path.join(figures, "samples_per_sampler.png"),
                              os.path.join(figures, "fid_vs_nfe.png")]}), flush=True)


def part_conditional(args):
  config = load_config(args.config, args.set)
  for mode in ("train_classifier", "conditional"):
    t0 = time.perf_counter()
    modes.run(mode, config, args.workdir)
    print(json.dumps({"bench": "fashion_mnist", "part": mode,
                      "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


def part_inpaint(args):
  t0 = time.perf_counter()
  result = modes.run("inpaint", load_config(args.config, args.set), args.workdir)
  print(json.dumps({"bench": "fashion_mnist", "part": "inpaint",
                    "seconds": round(time.perf_counter() - t0, 1),
                    **{k: v for k, v in (result[1] if isinstance(result, tuple) else {}).items()
                       if isinstance(v, (int, float, str))}}), flush=True)


PARTS = {"train": part_train, "stats": part_stats, "bpd": part_bpd, "samplers": part_samplers,
         "figures": part_figures, "conditional": part_conditional, "inpaint": part_inpaint}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--config", default="configs/fashion_mnist/ddpmpp_vp.py")
  parser.add_argument("--part", default="all", choices=["all", *PARTS])
  parser.add_argument("--n", type=int, default=250, help="samples per sampler (and floor images)")
  parser.add_argument("--only", default="", help="sampler indices, e.g. 0,3")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--set", action="append", default=[],
                      help="config overrides, e.g. --set model.nf=16 (repeatable)")
  parser.add_argument("--bpd_examples", type=int, default=500)
  parser.add_argument("--bpd_repeats", type=int, default=1)
  parser.add_argument("--bound_num_times", type=int, default=0,
                      help="ScoreFlow's bound beside the ODE's bits/dim: time samples (0: off)")
  parser.add_argument("--inception_batch", type=int, default=50)
  args = parser.parse_args()
  args.workdir = os.path.abspath(args.workdir)
  for name, fn in PARTS.items():
    if args.part in ("all", name):
      fn(args)


if __name__ == "__main__":
  main()
