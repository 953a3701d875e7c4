"""Where the toy model's likelihood gap comes from and what closes it (JSON lines).

For each variant of ``--config`` (default ``configs/toy/gmm_vp.py``, the default toy model, the
8-mode ring; an image config such as ``configs/digits/ddpmpp_vp.py`` runs ``train`` and ``eval``
only): train it (``run.py --mode train``; resumes), then

* ``score``: the learned score's error against the exact score of the ring's time-t marginal on
  a log grid of t, from ``--score_samples`` exact draws of ``p_t`` per time: the relative error
  ``sqrt(E|s - s*|^2 / E|s*|^2)`` and the KL density ``g(t)^2 E|s - s*|^2 / 2``, whose integral
  over ``[eps, T]`` is the score-matching term of ScoreFlow's bound ``KL(p_0 || p_SDE) <=
  J_SM + KL(p_T || pi)`` (``j_sm``, trapezoidal in log t);
* ``eval``: ``--mode eval`` on ``eval.num_eval_examples`` test points: the probability-flow NLL
  with the exact trace and its gap to the data's exact entropy, and ScoreFlow's bound and its gap;
* ``figures``: relative error and KL density against t, one curve per variant.

  python benchmarks/likelihood_training.py --root W [--config C] [--variants paper,lw_is_cosine]
      [--part train|score|eval|figures] [--set section.field=value ...]  (--set: every variant)

Variants (``VARIANTS``): ``paper`` (the paper's weighting, uniform t, constant rate), ``lw``
(likelihood weighting, uniform t), ``lw_is`` (likelihood weighting with importance-sampled t),
``*_cosine`` (the rate decayed to 0 by a half cosine), ``config`` (the config as it is), and the
further changes listed there. Every variant trains the same number of steps with the same batch,
data stream and seed unless it says otherwise.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from score_sde_jax import compilation  # noqa: E402
compilation.add_xla_cpu_flags()   # before JAX's backends start, as run.py does

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import load_config  # noqa: E402
from score_sde_jax import modes  # noqa: E402
from score_sde_jax import workdir as workdir_lib  # noqa: E402

CONFIG = "configs/toy/gmm_vp.py"

_PAPER = {"training.likelihood_weighting": False, "training.importance_sampling": False,
          "optim.lr_decay": "none"}
_LW_IS = {"training.likelihood_weighting": True, "training.importance_sampling": True}
VARIANTS = {
    # The paper's objective (std^2 weighting, uniform t) and a constant rate after the warm-up:
    # the toy configs' defaults before the study (2026-12-07).
    "paper": _PAPER,
    "lw": {**_PAPER, "training.likelihood_weighting": True},           # uniform t
    "lw_is": {**_PAPER, **_LW_IS},                                      # ScoreFlow's
    "paper_cosine": {**_PAPER, "optim.lr_decay": "cosine"},           # the toy defaults now
    "lw_is_cosine": {**_LW_IS, "optim.lr_decay": "cosine"},
    "lw_is_wide": {**_PAPER, **_LW_IS, "model.hidden": 512},
    "config": {},                                                       # the config as it is
    # Image configs (--config configs/digits/ddpmpp_vp.py): training on uniformly dequantized
    # data, (k + U) / K, the density that bits/dim measures, with and without likelihood training.
    "dq": {"data.uniform_dequantization": True},
    "lw_is_dq": {**_LW_IS, "data.uniform_dequantization": True},
}


def _config(name, args):
  """The variant's config: ``VARIANTS[name]``, then ``--set`` overrides."""
  return load_config(args.config, [f"{k}={v!r}" for k, v in VARIANTS[name].items()] + args.set)


def part_train(name, args):
  t0 = time.perf_counter()
  modes.run("train", _config(name, args), os.path.join(args.root, name))
  return {"seconds": round(time.perf_counter() - t0, 1)}


def score_errors(run, dataset, times, n, seed=0):
  """``(relative error, KL density)`` at each time, from ``n`` exact draws of ``p_t``."""
  rel, density = [], []
  rng = np.random.default_rng(seed)
  for t in times:
    x = jnp.asarray(dataset.marginal_sample(run.sde, rng, n, t), jnp.float32)
    tt = jnp.full((n,), t, jnp.float32)
    learned = run.score_fn(x, tt)
    exact = dataset.marginal_score(run.sde, x, tt)
    mse = float(jnp.mean(jnp.sum((learned - exact) ** 2, axis=-1)))
    norm = float(jnp.mean(jnp.sum(exact**2, axis=-1)))
    g2 = float(run.sde.sde(jnp.zeros((1, x.shape[1])), jnp.full((1,), t))[1][0]) ** 2
    rel.append(np.sqrt(mse / norm))
    density.append(0.5 * g2 * mse)
  return np.asarray(rel), np.asarray(density)


def part_score(name, args):
  run = workdir_lib.load_workdir(os.path.join(args.root, name))
  dataset = run.experiment.data.load()
  if not hasattr(dataset, "marginal_score"):
    return {"skipped": f"{type(dataset).__name__} has no exact marginal score"}
  times = np.logspace(np.log10(run.experiment.training.objective.eps), 0.0, args.score_times)
  rel, density = score_errors(run, dataset, times, args.score_samples)
  j_sm = float(np.trapezoid(density * times, np.log(times)))
  np.savez(os.path.join(args.root, name, "score_error.npz"), times=times, relative=rel,
           kl_density=density)
  at = {f"rel_err_t{t:g}": round(float(np.interp(np.log(t), np.log(times), rel)), 4)
        for t in (1e-3, 0.02, 0.1, 0.7)}
  return {"step": run.step, "j_sm_nats": round(j_sm, 4), **at}


def part_eval(name, args):
  config = _config(name, args)
  config.eval.figures = False
  t0 = time.perf_counter()
  result = modes.run("eval", config, os.path.join(args.root, name))
  keep = ("step", "nll_nats", "nll_nats_se", "data_entropy_nats", "gap_nats", "gap_nats_se",
          "bound_nll_nats", "bound_nll_nats_se", "bound_gap_nats", "bound_gap_nats_se",
          "num_examples", "dsm_loss",
          "bits_per_dim", "bits_per_dim_se", "bound_bits_per_dim", "bound_bits_per_dim_se",
          "nfe_mean")
  return {**{k: result[k] for k in keep if k in result},
          "seconds": round(time.perf_counter() - t0, 1)}


def part_figures(names, args):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for name in names:
    path = os.path.join(args.root, name, "score_error.npz")
    if not os.path.exists(path):
      continue
    z = np.load(path)
    axes[0].loglog(z["times"], z["relative"], label=name)
    axes[1].semilogx(z["times"], z["kl_density"] * z["times"], label=name)
  axes[0].set(xlabel="t", ylabel="sqrt(E|s - s*|^2 / E|s*|^2)",
              title="relative error of the learned score")
  axes[1].set(xlabel="t", ylabel="t g^2 E|s - s*|^2 / 2  (nats per unit log t)",
              title="the KL bound's score term, by time")
  for ax in axes:
    ax.grid(alpha=0.3)
    ax.legend()
  fig.suptitle(f"{args.config}: learned score against the exact one")
  fig.tight_layout()
  out = os.path.join(args.root, "score_error_vs_t.png")
  fig.savefig(out, dpi=120)
  plt.close(fig)
  return {"paths": [out]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--root", required=True, help="a folder with one workdir per variant")
  parser.add_argument("--config", default=CONFIG,
                      help="the base config (image configs: train and eval parts only)")
  parser.add_argument("--variants", default="paper,lw,lw_is,paper_cosine,lw_is_cosine")
  parser.add_argument("--part", default="all", choices=["all", "train", "score", "eval",
                                                         "figures"])
  parser.add_argument("--set", action="append", default=[],
                      help="config override for every variant, e.g. training.n_iters=4000")
  parser.add_argument("--score_times", type=int, default=41)
  parser.add_argument("--score_samples", type=int, default=8192)
  args = parser.parse_args()
  args.root = os.path.abspath(args.root)
  os.makedirs(args.root, exist_ok=True)
  names = args.variants.split(",")
  unknown = [n for n in names if n not in VARIANTS]
  if unknown:
    parser.error(f"--variants: {unknown} unknown; known: {sorted(VARIANTS)}")
  for part, fn in (("train", part_train), ("score", part_score), ("eval", part_eval)):
    if args.part in ("all", part):
      for name in names:
        line = {"bench": "likelihood_training", "part": part, "variant": name,
                "overrides": VARIANTS[name], "set": args.set, **fn(name, args)}
        print(json.dumps(line), flush=True)
        with open(os.path.join(args.root, "results.jsonl"), "a") as f:
          f.write(json.dumps(line) + "\n")
  if args.part in ("all", "figures"):
    print(json.dumps({"bench": "likelihood_training", "part": "figures",
                      **part_figures(names, args)}), flush=True)


if __name__ == "__main__":
  main()
