"""Controllable generation on 2-D mixtures with exact scores: how close each method comes to the
exact conditional (JSON lines), and the README's figure.

* Imputation: the ring of 8 Gaussians given its first coordinate ``x = 0.7``; the exact
  ``p(y | x)`` has four modes (y = +-2 and +-1.41). The paper's projection method, and the same
  followed by Langevin refinement at ``eps`` (``refine_steps``), for VE / VP / sub-VP: the weight
  of each mode and the mean exact conditional log-density of the samples, against exact draws.
* Class-conditional sampling with a classifier MLP trained here (2000 steps): the fraction of
  samples nearest the requested component, and the same with the exact classifier.
* Guidance scale on two overlapping components: mean and posterior of component 0 at scale 0,
  1 and 4.
* ``--part refine``: the refinement's length on a correlated 4-D Gaussian (the tests' data,
  two coordinates known): the imputed block's mean and covariance errors, in the exact
  conditional's standard deviations, after 0 to 500 Langevin steps (PC-1000).

  python benchmarks/controllable.py [--part all|refine] [--n 4000]
      [--figure docs/figures/controllable_2d.png]
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

from score_sde_jax.classifier import get_classifier_fn, get_classifier_loss_fn  # noqa: E402
from score_sde_jax.controllable import guided_score, inpaint  # noqa: E402
from score_sde_jax.data import GaussianMixture  # noqa: E402
from score_sde_jax.models.classifier import ClassifierMLP  # noqa: E402
from score_sde_jax.sampling import pc_sample  # noqa: E402
from score_sde_jax.sde import VESDE, VPSDE, subVPSDE  # noqa: E402
from score_sde_jax.train import init_train_state, make_optimizer, make_train_step  # noqa: E402

RING = GaussianMixture.ring()
SDES = {"vp": VPSDE(), "subvp": subVPSDE(), "ve": VESDE(sigma_max=5.0)}
X_KNOWN = 0.7
MODES_Y = np.array([-2.0, -np.sqrt(2), np.sqrt(2), 2.0])


def conditional_y():
  """The exact ``p(y | x = X_KNOWN)`` of the ring: weights, means and std of its components."""
  std = 0.15
  logw = np.log(RING.weights) - 0.5 * ((X_KNOWN - RING.means[:, 0]) / std) ** 2
  w = np.exp(logw - logw.max())
  return w / w.sum(), RING.means[:, 1], std


def conditional_logpdf(y):
  w, m, s = conditional_y()
  comps = np.log(w + 1e-300) - 0.5 * ((y[:, None] - m) / s) ** 2 - np.log(s * np.sqrt(2 * np.pi))
  return np.logaddexp.reduce(comps, axis=1)


def mode_weights(y):
  return np.bincount(np.argmin(np.abs(y[:, None] - MODES_Y), axis=1), minlength=4) / len(y)


def imputation(n, emit):
  w, m, s = conditional_y()
  rng = np.random.default_rng(0)
  comp = rng.choice(len(w), n, p=w)
  exact = m[comp] + s * rng.standard_normal(n)
  emit(dict(task="impute", method="exact draws", mode_weights=mode_weights(exact).round(3).tolist(),
            mean_logp=round(float(conditional_logpdf(exact).mean()), 3)))
  data = np.zeros((n, 2), np.float32)
  data[:, 0] = X_KNOWN
  mask = np.array([1.0, 0.0], np.float32)
  out = {"exact": exact}
  for name, sde in SDES.items():
    for refine in (0, 500):
      t0 = time.perf_counter()
      x, nfe = inpaint(jax.random.PRNGKey(1), sde, lambda x, t: RING.marginal_score(sde, x, t),
                       data, mask, num_steps=1000, refine_steps=refine, snr=0.16)
      y = np.asarray(x)[:, 1]
      out[(name, refine)] = y
      emit(dict(task="impute", sde=name, method="projection" + (" + refine" if refine else ""),
                refine_steps=refine, nfe=nfe, mode_weights=mode_weights(y).round(3).tolist(),
                mean_logp=round(float(conditional_logpdf(y).mean()), 3),
                wall_s=round(time.perf_counter() - t0, 2)))
  return out


def gaussian_refinement(n, emit):
  rng = np.random.default_rng(0)          # tests/test_controllable.py's _gaussian(4, 0)
  a = rng.standard_normal((4, 4))
  mu, cov = rng.standard_normal(4), a @ a.T / 4 + 0.1 * np.eye(4)
  gauss = GaussianMixture([1.0], mu[None], cov[None])
  value = np.array([0.5, -1.0])
  cond_mean = mu[2:] + cov[:2, 2:].T @ np.linalg.solve(cov[:2, :2], value - mu[:2])
  cond_cov = cov[2:, 2:] - cov[:2, 2:].T @ np.linalg.solve(cov[:2, :2], cov[:2, 2:])
  sd = np.sqrt(np.diag(cond_cov))
  data = np.zeros((n, 4), np.float32)
  data[:, :2] = value
  mask = np.array([1, 1, 0, 0], np.float32)
  for name, sde in SDES.items():
    for refine in (0, 25, 50, 100, 200, 500):
      t0 = time.perf_counter()
      x, nfe = inpaint(jax.random.PRNGKey(1), sde, lambda x, t: gauss.marginal_score(sde, x, t),
                       data, mask, refine_steps=refine, snr=0.16)
      xb = np.asarray(x)[:, 2:]
      emit(dict(task="refine_gaussian", sde=name, refine_steps=refine, nfe=nfe,
                mean_error_sd=np.round(np.abs(xb.mean(0) - cond_mean) / sd, 3).tolist(),
                max_cov_error=round(float(np.max(np.abs(np.cov(xb.T) - cond_cov)
                                                  / np.outer(sd, sd))), 3),
                standard_error_sd=round(1 / np.sqrt(n), 3),
                wall_s=round(time.perf_counter() - t0, 2)))


def train_classifier(sde, steps=2000):
  model = ClassifierMLP(num_classes=8)
  opt = make_optimizer(1e-3, 100, 1.0)
  state = init_train_state(jax.random.PRNGKey(0), model, jnp.zeros((1, 2)), jnp.zeros((1,)), opt)
  step = make_train_step(get_classifier_loss_fn(sde, model), opt, ema_rate=0.99)
  rng = np.random.default_rng(0)
  for _ in range(steps):
    x, y = RING.sample_with_labels(rng, 256)
    state, _ = step(state, (jnp.asarray(x, jnp.float32), jnp.asarray(y)))
  return get_classifier_fn(sde, model, state.ema_params)


def conditional(n, emit):
  sde = SDES["vp"]
  score = lambda x, t: RING.marginal_score(sde, x, t)
  labels = np.arange(n) % 8
  out = {}
  for name, clf in (("exact", lambda x, t: RING.marginal_log_posterior(sde, x, t)),
                    ("trained MLP", train_classifier(sde))):
    x, nfe = pc_sample(jax.random.PRNGKey(2), sde, guided_score(score, clf, labels), (n, 2),
                       num_steps=1000, snr=0.16)
    x = np.asarray(x)
    nearest = np.argmin(((x[:, None] - RING.means[None]) ** 2).sum(-1), axis=1)
    emit(dict(task="conditional", sde="vp", classifier=name, nfe=nfe,
              on_requested_component=round(float(np.mean(nearest == labels)), 4)))
    out[name] = (x, labels)
  return out


def scales(n, emit):
  sde = SDES["vp"]
  gmm = GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.0]], [0.8])
  exact_clf = lambda x, t: gmm.marginal_log_posterior(sde, x, t)
  out = {}
  for scale in (0.0, 1.0, 4.0):
    score = guided_score(lambda x, t: gmm.marginal_score(sde, x, t), exact_clf, 0, scale)
    x = np.asarray(pc_sample(jax.random.PRNGKey(7), sde, score, (n, 2), num_steps=1000,
                             snr=0.16)[0])
    post = np.exp(np.asarray(exact_clf(x, jnp.full((n,), 1e-3))))[:, 0]
    emit(dict(task="guidance_scale", sde="vp", scale=scale, mean_x=round(float(x[:, 0].mean()), 3),
              std_x=round(float(x[:, 0].std()), 3), mean_posterior_0=round(float(post.mean()), 3)))
    out[scale] = x[:, 0]
  return out


def figure(imp, cond, sc, path):
  from matplotlib.figure import Figure
  fig = Figure(figsize=(15, 4.4))
  axes = fig.subplots(1, 3)
  ys = np.linspace(-2.8, 2.8, 400)
  ax = axes[0]
  bins = np.linspace(-2.8, 2.8, 90)
  ax.hist(imp[("vp", 0)], bins, density=True, alpha=0.45, label="projection (paper)")
  ax.hist(imp[("vp", 500)], bins, density=True, alpha=0.45, label="projection + 500 Langevin")
  ax.plot(ys, np.exp(conditional_logpdf(ys)), "k", lw=1.2, label="exact p(y | x)")
  ax.set(title=f"Imputation of y given x = {X_KNOWN} (VP, exact score)", xlabel="y")
  ax.legend(fontsize=8)
  ax = axes[1]
  x, labels = cond["trained MLP"]
  ax.scatter(x[:, 0], x[:, 1], c=labels, cmap="tab10", s=2, vmax=9)
  ax.scatter(RING.means[:, 0], RING.means[:, 1], c=np.arange(8), cmap="tab10", vmax=9,
             marker="x", s=60, linewidths=2)
  ax.set(title="Class-conditional PC samples (trained MLP classifier)", aspect="equal",
         xlim=(-2.8, 2.8), ylim=(-2.8, 2.8))
  ax = axes[2]
  xs = np.linspace(-4, 4, 400)
  bins = np.linspace(-4, 4, 80)
  for scale, values in sc.items():
    ax.hist(values, bins, density=True, histtype="step", lw=1.5, label=f"scale {scale:g}")
  g = lambda m: np.exp(-0.5 * ((xs - m) / 0.8) ** 2) / (0.8 * np.sqrt(2 * np.pi))
  ax.plot(xs, 0.5 * g(-1) + 0.5 * g(1), "k:", lw=1, label="exact p(x)")
  ax.plot(xs, g(-1), "k--", lw=1, label="exact p(x | y = 0)")
  ax.set(title="Guidance scale, two overlapping components", xlabel="first coordinate")
  ax.legend(fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=110)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--n", type=int, default=4000)
  parser.add_argument("--figure", default="")
  parser.add_argument("--part", choices=("all", "refine"), default="all")
  args = parser.parse_args()
  emit = lambda d: print(json.dumps(d), flush=True)
  if args.part == "refine":
    return gaussian_refinement(args.n, emit)
  imp = imputation(args.n, emit)
  cond = conditional(args.n, emit)
  sc = scales(args.n, emit)
  if args.figure:
    figure(imp, cond, sc, args.figure)


if __name__ == "__main__":
  main()
