"""The figures each mode writes, composed from ``viz`` (which only draws arrays).

Which figures apply is decided by the data: images get grids, 2-D points get
scatter plots, score fields and density maps (Gaussian mixtures also get their
exact scores and densities drawn beside the model's).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from score_sde_jax import keys, likelihood, viz
from score_sde_jax.metric_writer import read_metrics
from score_sde_jax.parallel import to_host
from score_sde_jax.sampling import ode_paths, reverse_sde_paths
from score_sde_jax.sde import simulate_forward


def _is_2d(dataset) -> bool:
  return dataset.kind == "points" and dataset.example_shape == (2,)


def snapshot(dataset, x, path, title):
  """Samples drawn during training: an image grid, or a scatter plot of the first two coordinates."""
  if dataset.kind == "image":
    return viz.plot_image_grid(dataset.clip(x), path, title=title)
  if dataset.example_shape[0] >= 2:
    return viz.plot_samples(x, dataset.held_out(len(x), 0), path, title=title)
  return None


def loss_curve(exp, workdir):
  rows = read_metrics(os.path.join(workdir, "metrics.jsonl"))
  train = [r for r in rows if "loss" in r]
  if not train:
    return None
  evals = [r for r in rows if "eval_loss" in r]
  floor = [r["eval_loss_exact_score"] for r in rows if "eval_loss_exact_score" in r]
  return viz.plot_loss([r["step"] for r in train], [r["loss"] for r in train],
                       os.path.join(workdir, "figures", "loss.png"),
                       eval_steps=[r["step"] for r in evals],
                       eval_loss=[r["eval_loss"] for r in evals],
                       floor=floor[-1] if floor else None,
                       title=f"DSM loss ({exp.data.name}, {exp.model.sde_name})")


def training_figures(exp, workdir, state, dataset):
  """Loss curve; for 2-D data the forward diffusion, and learned vs exact score for mixtures."""
  paths = [p for p in [loss_curve(exp, workdir)] if p]
  fig_dir = os.path.join(workdir, "figures")
  sde = exp.sde
  if _is_2d(dataset):
    x0 = jnp.asarray(dataset.sample(keys.numpy_stream(exp.seed, "figures"), 2000), jnp.float32)
    ts, xs = jax.jit(simulate_forward, static_argnums=(1, 3, 4), static_argnames="save_every")(
        keys.stream(exp.seed, "figure_paths"), sde, x0, sde.T, 1000, save_every=10)
    paths.append(viz.plot_forward_diffusion(
        ts, xs, os.path.join(fig_dir, "forward_diffusion.png"),
        title=f"Forward {exp.model.sde_name} diffusion of {exp.data.name} data"))
    if dataset.marginal_score is not None:
      score_fn = exp.model.score_fn(state.ema_params)
      paths.append(score_field(score_fn, sde, dataset, os.path.join(fig_dir, "score_field.png")))
  return paths


def score_field(score_fn, sde, dataset, path, times=(0.02, 0.1, 0.3, 0.7)):
  """Learned against exact score of a 2-D Gaussian mixture on a grid, at several times."""
  lim = float(np.abs(dataset.means).max() + 3 * np.sqrt(dataset.covs.max()))
  g = np.linspace(-lim, lim, 21)
  grid = jnp.asarray(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2), jnp.float32)
  score_fn = jax.jit(score_fn)
  learned = [score_fn(grid, t) for t in times]
  exact = [dataset.marginal_score(sde, grid, t) for t in times]
  data = dataset.sample(np.random.default_rng(0), 2000)
  return viz.plot_score_fields(grid, times, jax.device_get(learned), jax.device_get(exact), path,
                               data=data)


def sample_figures(run, dataset, samples, held_out, result, tag):
  """Samples beside held-out data (an image grid for images); for 2-D data also the paths of the
  reverse SDE and of the probability-flow ODE from the same prior points."""
  fig_dir = os.path.join(run.workdir, "figures")
  if dataset.kind == "image":
    return [viz.plot_image_grid(dataset.clip(samples[:64]),
                                os.path.join(fig_dir, f"samples_{tag}.png"),
                                title=f"{result['sampler']}, step {run.step}")]
  if not _is_2d(dataset):
    return []
  log_prob = dataset.log_prob
  lp_fn = (lambda xy: log_prob(jnp.asarray(xy, jnp.float32))) if log_prob is not None else None
  title = (f"{result['sampler']}, step {run.step}: MMD {result['mmd']:.4f}, "
           f"NFE {result['nfe_per_batch']:.0f}")
  paths = [viz.plot_samples(samples, held_out, os.path.join(fig_dir, f"samples_{tag}.png"),
                            log_prob_fn=lp_fn, title=title)]
  sde, seed = run.sde, run.experiment.seed
  z = sde.prior_sampling(keys.stream(seed, "figure_latents"), (60,) + run.data_shape)
  sde_ts, sde_xs = reverse_sde_paths(keys.stream(seed, "figure_paths"), sde, _host_score_fn(run), z,
                                     eps=sde.sampling_eps)
  ode_ts, ode_xs = ode_paths(sde, _host_score_fn(run, flow=True), z, eps=sde.sampling_eps)
  paths.append(viz.plot_trajectories(sde_ts, sde_xs, ode_ts, ode_xs,
                                     os.path.join(fig_dir, "trajectories.png"), data=held_out))
  return paths


def _host_score_fn(run, flow=False):
  """The EMA score from host copies of the parameters: figures run on process 0 alone, without
  collectives."""
  return run.experiment.model.score_fn(to_host(run.params), flow=flow)


def likelihood_figures(run, dataset, data):
  """2-D data: model vs exact log-density on a grid, latent interpolations, encode-decode."""
  if not _is_2d(dataset):
    return []
  sde = run.sde
  score_fn = _host_score_fn(run, flow=True)
  fig_dir = os.path.join(run.workdir, "figures")
  kw = run.experiment.eval.flow_options()
  lim = float(np.quantile(np.abs(data), 0.999)) * 1.2
  g = np.linspace(-lim, lim, 64)
  grid = jnp.asarray(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2), jnp.float32)
  model_lp = np.concatenate([np.asarray(likelihood.log_likelihood(
      None, sde, score_fn, chunk, divergence="exact", **kw).logp) for chunk in tqdm(
          jnp.split(grid, 8), desc="log-density grid (figure)", unit="chunk", dynamic_ncols=True)])
  exact_lp = np.asarray(dataset.log_prob(grid)) if dataset.log_prob is not None else None
  paths = [viz.plot_log_density(g, model_lp.reshape(64, 64),
                                os.path.join(fig_dir, "log_density.png"),
                                exact=None if exact_lp is None else exact_lp.reshape(64, 64))]
  rng = keys.numpy_stream(run.experiment.seed, "figures")
  # Fewer than 12 held-out points (eval.num_eval_examples): pairs repeat points (it failed).
  pairs = data[rng.choice(len(data), size=(6, 2), replace=len(data) < 12)]
  z = likelihood.encode(sde, score_fn, jnp.asarray(pairs.reshape(-1, 2)), **kw).reshape(6, 2, 2)
  alphas = np.linspace(0, 1, 9)
  latents = likelihood.interpolate(z[:, 0], z[:, 1], alphas).reshape(-1, 2)
  decoded = np.asarray(likelihood.decode(sde, score_fn, latents, **kw)).reshape(6, len(alphas), 2)
  paths.append(viz.plot_interpolations(decoded, alphas, data,
                                       os.path.join(fig_dir, "interpolation.png")))
  x = jnp.asarray(data[:200])
  recon = likelihood.decode(sde, score_fn, likelihood.encode(sde, score_fn, x, **kw), **kw)
  paths.append(viz.plot_reconstructions(np.asarray(x), np.asarray(recon), data,
                                        os.path.join(fig_dir, "reconstruction.png")))
  return paths


def image_flow_figures(run, dataset, held_out, *, n_pairs: int = 4, n_alphas: int = 9,
                       n_reconstructions: int = 16):
  """Images: semantic interpolation and encode-decode reconstructions under the probability-flow
  ODE, on held-out images (integer levels). Returns ``(paths, stats)``; ``stats`` holds the
  reconstruction error in data units ([0, 1]) and in levels.

  ``interpolation.png``: one row per pair of held-out images, the two images at the ends and
  between them the decoded slerp of their latents at ``n_alphas`` points of [0, 1].
  ``reconstruction.png``: the images over their ``decode(encode(x))``.
  """
  sde = run.sde
  score_fn = _host_score_fn(run, flow=True)
  kw = run.experiment.eval.flow_options()
  fig_dir = os.path.join(run.workdir, "figures")
  rng = keys.numpy_stream(run.experiment.seed, "figures")
  n_pairs = min(n_pairs, len(held_out) // 2)
  pairs = dataset.to_unit(held_out[rng.choice(len(held_out), size=2 * n_pairs,
                                              replace=len(held_out) < 2 * n_pairs)])
  z = likelihood.encode(sde, score_fn, run.scaler(jnp.asarray(pairs)), **kw)
  z = z.reshape((n_pairs, 2) + z.shape[1:])
  alphas = np.linspace(0.0, 1.0, n_alphas)
  latents = likelihood.interpolate(z[:, 0], z[:, 1], alphas).reshape((-1,) + z.shape[2:])
  decoded = np.asarray(run.inverse_scaler(likelihood.decode(sde, score_fn, latents, **kw)))
  decoded = decoded.reshape((n_pairs, n_alphas) + decoded.shape[1:])
  pairs = pairs.reshape((n_pairs, 2) + pairs.shape[1:])
  rows = np.concatenate([pairs[:, :1], decoded, pairs[:, 1:]], axis=1)
  paths = [viz.plot_image_grid(rows.reshape((-1,) + rows.shape[2:]),
                               os.path.join(fig_dir, "interpolation.png"), nrow=n_alphas + 2,
                               title="held-out x0 | decode(slerp(encode(x0), encode(x1), a)) | x1 "
                                     f"(step {run.step})",
                               col_labels=["x0"] + [f"a={a:.2g}" for a in alphas] + ["x1"])]
  per_row = min(8, n_reconstructions, len(held_out))
  count = min(n_reconstructions, len(held_out)) // per_row * per_row  # whole x / decoded row pairs
  x = dataset.to_unit(held_out[:count])
  recon = np.asarray(run.inverse_scaler(likelihood.decode(
      sde, score_fn, likelihood.encode(sde, score_fn, run.scaler(jnp.asarray(x)), **kw), **kw)))
  err = np.abs(recon - x)
  levels = dataset.num_levels - 1
  stats = {"reconstruction_mean_abs_error": float(err.mean()),
           "reconstruction_max_abs_error": float(err.max()),
           "reconstruction_mean_abs_error_levels": float(err.mean() * levels),
           "reconstruction_examples": int(len(x))}
  rows = [part for i in range(0, len(x), per_row) for part in (x[i:i + per_row],
                                                               recon[i:i + per_row])]
  paths.append(viz.plot_image_grid(
      np.concatenate(rows), os.path.join(fig_dir, "reconstruction.png"), nrow=per_row,
      title=f"held-out x over decode(encode(x)), step {run.step}: mean |error| "
            f"{err.mean() * levels:.2g} levels, max {err.max() * levels:.2g}",
      row_labels=["x", "decoded"] * (len(rows) // 2)))
  return paths, stats

