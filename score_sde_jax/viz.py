"""Figures (matplotlib, PNG). Functions take plain arrays and a path; nothing of the package is imported.

Over 300 lines on purpose: one short function per kind of figure (about 15 of them), sharing the
saving and colour set-up; which figure a mode draws is decided in ``figures.py``.
"""

from __future__ import annotations

import os

import matplotlib
import numpy as np
from matplotlib.figure import Figure

# Figures are built as matplotlib.figure.Figure objects and saved: no pyplot state and no
# backend selection, so importing this module leaves a notebook's matplotlib set-up alone.


def _save(fig, path):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  return path


def plot_forward_diffusion(ts, xs, path, *, n_snapshots: int = 5, n_paths: int = 40,
                           title: str = "Forward diffusion"):
  """Particles pushed to noise by the forward SDE, as in Figure 1 of the paper.

  Top row: scatter plots of the 2-D particles at ``n_snapshots`` times.
  Bottom: the first coordinate of ``n_paths`` particles against ``t`` (jittery
  SDE paths) over the histogram density of all particles at each time.

  Args:
    ts: ``(K,)`` increasing times from 0.
    xs: ``(K, B, D)`` particle positions at those times (``D >= 2``).
  """
  ts, xs = np.asarray(ts), np.asarray(xs)
  fig = Figure(figsize=(3.0 * n_snapshots, 6.4))
  grid = fig.add_gridspec(2, n_snapshots, height_ratios=[1, 1.05])
  idx = np.linspace(0, len(ts) - 1, n_snapshots).round().astype(int)
  lim = float(np.quantile(np.abs(xs[idx[-1]]), 0.995)) * 1.1
  lim = max(lim, float(np.abs(xs[0]).max()) * 1.1)
  for j, k in enumerate(idx):
    ax = fig.add_subplot(grid[0, j])
    ax.scatter(xs[k, :, 0], xs[k, :, 1], s=1.5, alpha=0.4, color="C0", rasterized=True)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(f"t = {ts[k]:.2f}")
    ax.set_xticks([])
    ax.set_yticks([])
  ax = fig.add_subplot(grid[1, :])
  bins = np.linspace(-lim, lim, 121)
  density = np.stack([np.histogram(xs[k, :, 0], bins=bins, density=True)[0] for k in range(len(ts))])
  ax.imshow(density.T, origin="lower", aspect="auto", cmap="Blues",
            extent=(ts[0], ts[-1], -lim, lim), vmax=np.quantile(density, 0.99))
  ax.plot(ts, xs[:, :n_paths, 0], color="k", lw=0.5, alpha=0.6)
  ax.set_xlabel("t")
  ax.set_ylabel("$x_1(t)$")
  ax.set_ylim(-lim, lim)
  fig.suptitle(title)
  return _save(fig, path)


def plot_loss(train_steps, train_loss, path, *, eval_steps=None, eval_loss=None, floor=None,
              title: str = "Training loss"):
  """Training loss (per log interval and a moving average) and evaluation loss against step.

  ``floor``: the eval loss of the exact score, where known (the minimum of the DSM loss).
  """
  train_steps, train_loss = np.asarray(train_steps), np.asarray(train_loss)
  fig = Figure(figsize=(7, 4))
  ax = fig.subplots()
  ax.plot(train_steps, train_loss, color="C0", alpha=0.3, lw=0.8, label="train (mean of each log interval)")
  w = max(1, len(train_loss) // 20)
  if len(train_loss) > w > 1:
    smooth = np.convolve(train_loss, np.ones(w) / w, mode="valid")
    ax.plot(train_steps[w - 1:], smooth, color="C0", lw=1.8, label=f"train (mean of {w})")
  if eval_steps is not None and len(eval_steps):
    ax.plot(eval_steps, eval_loss, "o-", color="C3", ms=3, lw=1.2, label="eval (EMA params)")
  if floor is not None:
    ax.axhline(floor, color="k", ls="--", lw=1, label=f"eval, exact score ({floor:.4f})")
  ax.set_xlabel("step")
  ax.set_ylabel("loss")
  if np.all(train_loss > 0):
    ax.set_yscale("log")
  ax.grid(alpha=0.3, which="both")
  ax.legend()
  ax.set_title(title)
  return _save(fig, path)


# Learned arrows are drawn at most this long, in units of the panel's typical exact arrow (its
# 90% quantile): where a model is wild (the empty centre of a ring at small t) its arrows would
# otherwise cross the whole panel and hide the others.
ARROW_CAP = 3.0


def capped_arrows(vectors, cap: float):
  """``(vectors with lengths above cap scaled down to cap, which ones were)``."""
  vectors = np.asarray(vectors, np.float64)
  norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
  capped = norms[..., 0] > cap
  return np.where(norms > cap, vectors * cap / np.maximum(norms, 1e-300), vectors), capped


def plot_score_fields(grid_xy, times, learned, exact, path, *, data=None,
                      title: str = "Score field: learned (red) vs exact (black)"):
  """Quiver plots of a learned and an exact 2-D score at several times.

  Args:
    grid_xy: ``(G, 2)`` points.
    times: ``(T,)`` times.
    learned, exact: ``(T, G, 2)`` scores at those points and times; ``learned=None`` draws the
      exact score alone (no comparison, no error in the titles). Learned arrows longer than
      :data:`ARROW_CAP` typical exact arrows are drawn at that length and ringed; the title
      says how many (the relative error is of the true values).
    data: optional ``(N, 2)`` data points drawn underneath.
  """
  grid_xy = np.asarray(grid_xy)
  exact = np.asarray(exact)
  alone = learned is None
  learned = exact if alone else np.asarray(learned)
  xs = np.unique(grid_xy[:, 0])
  step = np.diff(xs).min() if len(xs) > 1 else 1.0   # one grid spacing of margin
  xlim = (grid_xy[:, 0].min() - step, grid_xy[:, 0].max() + step)
  ylim = (grid_xy[:, 1].min() - step, grid_xy[:, 1].max() + step)
  n = len(times)
  fig = Figure(figsize=(3.6 * n, 3.8))
  axes = fig.subplots(1, n)
  axes = np.atleast_1d(axes)
  for ax, t, sl, se in zip(axes, times, learned, exact):
    if data is not None:
      ax.scatter(data[:, 0], data[:, 1], s=1, alpha=0.2, color="C0", rasterized=True)
    # Normalise arrows per panel: the score's scale grows like 1/std as t -> 0.
    scale = np.quantile(np.linalg.norm(se, axis=-1), 0.9) + 1e-12
    ax.quiver(grid_xy[:, 0], grid_xy[:, 1], se[:, 0] / scale, se[:, 1] / scale, color="k",
              angles="xy", scale=25, width=0.004, alpha=0.8)
    if alone:
      ax.set_title(f"t = {t:.2f}")
    else:
      drawn, capped = capped_arrows(sl / scale, ARROW_CAP)
      ax.quiver(grid_xy[:, 0], grid_xy[:, 1], drawn[:, 0], drawn[:, 1], color="C3",
                angles="xy", scale=25, width=0.004, alpha=0.8)
      if capped.any():   # where the learned score is far too large: drawn at the cap, ringed
        ax.scatter(grid_xy[capped, 0], grid_xy[capped, 1], s=30, facecolors="none",
                   edgecolors="C3", linewidths=0.8)
      rel = np.linalg.norm(sl - se, axis=-1).mean() / np.linalg.norm(se, axis=-1).mean()
      note = f"\n{int(capped.sum())} long arrows capped (ringed)" if capped.any() else ""
      ax.set_title(f"t = {t:.2f}  (rel. err {rel:.2f}){note}", fontsize=10)
    ax.set_xlim(*xlim)   # the grid's extent: long arrows do not widen the panel
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(title)
  return _save(fig, path)


def _density_grid(log_prob_fn, lim, n=200):
  g = np.linspace(-lim, lim, n)
  xy = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
  return g, np.exp(np.asarray(log_prob_fn(xy))).reshape(n, n)


def plot_samples(samples, data, path, *, log_prob_fn=None, title="Samples"):
  """2-D samples beside held-out data, with the exact density where known (``log_prob_fn``)."""
  samples, data = np.asarray(samples), np.asarray(data)
  lim = float(np.quantile(np.abs(data), 0.999)) * 1.25
  n = 3 if log_prob_fn is not None else 2
  fig = Figure(figsize=(4.2 * n, 4.4))
  axes = fig.subplots(1, n)
  dens = _density_grid(log_prob_fn, lim) if log_prob_fn is not None else None
  for ax, pts, name, color in [(axes[0], data, "held-out data", "C0"),
                               (axes[1], samples, "samples", "C3")]:
    ax.scatter(pts[:, 0], pts[:, 1], s=1.5, alpha=0.35, color=color, rasterized=True)
    if dens is not None:
      ax.contour(dens[0], dens[0], dens[1], levels=dens[1].max() * np.array([0.05, 0.3, 0.7]),
                 colors="k", linewidths=0.6, alpha=0.6)
    ax.set_title(f"{name} ({len(pts)})")
  if dens is not None:
    axes[2].imshow(dens[1], origin="lower", extent=(-lim, lim, -lim, lim), cmap="magma")
    axes[2].set_title("exact density")
  for ax in axes:
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(title)
  return _save(fig, path)


def plot_trajectories(sde_ts, sde_xs, ode_ts, ode_xs, path, *, data=None, n_paths=60,
                      title="Reverse-time SDE vs probability-flow ODE from the same prior points"):
  """Sample paths of the reverse SDE and of the probability-flow ODE side by side.

  Top: 2-D paths (grey start at ``T``, red end at ``eps``); bottom: the first
  coordinate against ``t``. The ODE paths are smooth and run straighter to the modes.
  """
  sde_xs, ode_xs = np.asarray(sde_xs)[:, :n_paths], np.asarray(ode_xs)[:, :n_paths]
  lim = float(np.quantile(np.abs(np.concatenate([sde_xs[-1], ode_xs[-1]])), 0.99)) * 1.6
  fig = Figure(figsize=(10, 9.5))
  axes = fig.subplots(2, 2, gridspec_kw={"height_ratios": [1.3, 1]})
  for col, (ts, xs, name) in enumerate([(sde_ts, sde_xs, "reverse-time SDE"),
                                        (ode_ts, ode_xs, "probability-flow ODE")]):
    ts = np.asarray(ts)
    ax = axes[0, col]
    if data is not None:
      ax.scatter(data[:, 0], data[:, 1], s=1, alpha=0.15, color="C0", rasterized=True)
    ax.plot(xs[:, :, 0], xs[:, :, 1], color="k", lw=0.5, alpha=0.45, rasterized=True)
    ax.scatter(xs[0, :, 0], xs[0, :, 1], s=6, color="0.6", zorder=3, label="start (t = T)")
    ax.scatter(xs[-1, :, 0], xs[-1, :, 1], s=8, color="C3", zorder=3, label="end (t = eps)")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(name)
    ax.legend(loc="upper right", fontsize=8)
    ax = axes[1, col]
    ax.plot(ts, xs[:, :, 0], color="k", lw=0.6, alpha=0.5, rasterized=True)
    ax.set_xlim(ts.max(), ts.min())
    ax.set_xlabel("t (running backwards)")
    ax.set_ylabel("$x_1(t)$")
    ax.set_ylim(-lim, lim)
  fig.suptitle(title)
  return _save(fig, path)


def plot_log_density(grid_1d, model_logp, path, *, exact=None, title="Log-density"):
  """Model log-density on a square grid beside the exact one (same colour scale)."""
  n = 2 if exact is not None else 1
  fig = Figure(figsize=(4.8 * n, 4.4))
  axes = fig.subplots(1, n)
  axes = np.atleast_1d(axes)
  lo = float(np.quantile(exact if exact is not None else model_logp, 0.02))
  hi = float(np.max(exact if exact is not None else model_logp))
  ext = (grid_1d[0], grid_1d[-1], grid_1d[0], grid_1d[-1])
  panels = [(model_logp, "model (probability-flow ODE)")]
  if exact is not None:
    panels.append((exact, "exact"))
  for ax, (img, name) in zip(axes, panels):
    im = ax.imshow(np.clip(img, lo, hi), origin="lower", extent=ext, cmap="viridis", vmin=lo, vmax=hi)
    ax.set_title(name)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
  fig.colorbar(im, ax=list(axes), shrink=0.8, label="log p (nats)")
  fig.suptitle(title)
  return _save(fig, path)


def plot_interpolations(decoded, alphas, data, path,
                        title="Spherical interpolation in latent space, decoded"):
  """``decoded`` ``(pairs, len(alphas), 2)``: each pair's decoded path, coloured by alpha."""
  fig = Figure(figsize=(5.5, 5))
  ax = fig.subplots()
  ax.scatter(data[:, 0], data[:, 1], s=1, alpha=0.15, color="0.5", rasterized=True)
  cmap = matplotlib.colormaps["coolwarm"]
  for path_pts in np.asarray(decoded):
    ax.plot(path_pts[:, 0], path_pts[:, 1], color="k", lw=0.6, alpha=0.5)
    ax.scatter(path_pts[:, 0], path_pts[:, 1], c=cmap(np.asarray(alphas)), s=18, zorder=3)
  ax.set_aspect("equal")
  ax.set_title(title + "\n(blue: alpha = 0, red: alpha = 1)")
  return _save(fig, path)


def plot_reconstructions(x, recon, data, path, title="decode(encode(x))"):
  """Points and their encode-decode reconstructions, with the largest error in the title."""
  err = float(np.max(np.linalg.norm(np.asarray(x) - np.asarray(recon), axis=-1)))
  fig = Figure(figsize=(5.5, 5))
  ax = fig.subplots()
  ax.scatter(data[:, 0], data[:, 1], s=1, alpha=0.15, color="0.5", rasterized=True)
  ax.scatter(x[:, 0], x[:, 1], s=30, facecolors="none", edgecolors="C0", label="x")
  ax.scatter(recon[:, 0], recon[:, 1], s=6, color="C3", label="decode(encode(x))")
  ax.set_aspect("equal")
  ax.legend(loc="upper right")
  ax.set_title(f"{title}: max error {err:.1e}")
  return _save(fig, path)


def plot_image_grid(images, path, *, nrow=None, title=None, row_labels=None, col_labels=None,
                    min_pixels: int = 48):
  """A grid of images ``(N, H, W, C)`` in [0, 1] (grey for one channel), ``nrow`` images per row
  (torchvision's name; default: a square grid).

  ``row_labels`` / ``col_labels``: one text per row / column, written left of / above it (which
  class a row holds, which is the input and which the reconstruction). Small images are drawn
  at ``min_pixels`` screen pixels or more (8x8 digits are unreadable at their own size).
  """
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  n, h, w, c = images.shape
  nrow = nrow or int(np.ceil(np.sqrt(n)))
  ncol = int(np.ceil(n / nrow))   # the number of rows of the grid
  for name, labels, count in [("row_labels", row_labels, ncol), ("col_labels", col_labels, nrow)]:
    if labels is not None and len(labels) != count:
      raise ValueError(f"{name}: {len(labels)} labels for a grid of {ncol} rows x {nrow} "
                       f"columns; give {count}")
  pad = 1
  canvas = np.ones((ncol * (h + pad) + pad, nrow * (w + pad) + pad, c), np.float32)
  for i, img in enumerate(images):
    r, col = divmod(i, nrow)
    canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = img
  # Columns at least as wide as their labels (size 7: up to 8 screen pixels per character).
  label_pixels = 8 * max((len(str(v)) for v in col_labels), default=0) if col_labels else 0
  scale = max(1.0, 320 / canvas.shape[1], min_pixels / h, label_pixels / (w + pad))
  margin_left = 0.9 if row_labels is not None else 0.2
  margin_top = (0.5 if col_labels is not None else 0.2) + (0.3 if title else 0.0)
  fig = Figure(figsize=(canvas.shape[1] * scale / 100 + margin_left,
                        canvas.shape[0] * scale / 100 + margin_top))
  ax = fig.subplots()
  ax.imshow(canvas[..., 0] if c == 1 else canvas, cmap="gray" if c == 1 else None,
            interpolation="nearest", vmin=0, vmax=1)
  for spine in ax.spines.values():
    spine.set_visible(False)
  centres = lambda k, size: pad + np.arange(k) * (size + pad) + (size - 1) / 2
  ax.set_yticks(centres(ncol, h) if row_labels is not None else [],
                [str(v) for v in row_labels] if row_labels is not None else [], fontsize=8)
  ax.set_xticks(centres(nrow, w) if col_labels is not None else [],
                [str(v) for v in col_labels] if col_labels is not None else [], fontsize=7)
  ax.xaxis.set_ticks_position("top")
  ax.tick_params(length=0)
  if title:
    ax.set_title(title, fontsize=8, pad=14 if col_labels is not None else 6)
  return _save(fig, path)


def plot_accuracy_vs_time(t_centers, curves: dict, path, *, chance=None,
                          title="Noise-conditional classifier"):
  """Accuracy against diffusion time ``t``, one line per entry of ``curves`` (name -> values)."""
  fig = Figure(figsize=(5.5, 3.6))
  ax = fig.add_subplot()
  for name, acc in curves.items():
    ax.plot(t_centers, acc, marker="o", ms=3, label=name)
  if chance is not None:
    ax.axhline(chance, color="grey", ls=":", label="chance")
  ax.set(xlabel="t", ylabel="held-out accuracy", ylim=(0, 1.02), title=title)
  ax.legend(frameon=False, fontsize=8)
  return _save(fig, path)


def plot_conditional_samples(samples, labels, data, path, *, title="Class-conditional samples"):
  """2-D samples coloured by the class they were drawn for, over the data (grey)."""
  fig = Figure(figsize=(5, 5))
  ax = fig.add_subplot()
  ax.scatter(data[:, 0], data[:, 1], s=2, c="lightgrey", label="data")
  cmap = matplotlib.colormaps["tab10"]
  for i, k in enumerate(np.unique(labels)):
    pts = samples[labels == k]
    ax.scatter(pts[:, 0], pts[:, 1], s=3, color=cmap(i % 10), label=f"class {k}")
  ax.set_aspect("equal")
  ax.set_title(title)
  ax.legend(frameon=False, fontsize=7, markerscale=3, loc="upper right")
  return _save(fig, path)


def plot_quality_vs_nfe(panels: dict, path, *, references: dict | None = None,
                        levels: dict | None = None,
                        ylabel="|mean log p(samples) - mean log p(exact)| (nats)",
                        title="Few-step samplers"):
  """Sample quality against network evaluations, one panel per entry of ``panels``
  (name -> {sampler -> (nfe list, values)}), log-log; ``references`` (panel -> {name ->
  (nfe, value)}) are drawn as single marked points (the many-step samplers), ``levels``
  (name -> value) as dashed horizontal lines in every panel (e.g. the data's own level). A
  curve's points may come in any order: the line joins them by NFE."""
  fig = Figure(figsize=(4.2 * len(panels), 3.6))
  axes = fig.subplots(1, len(panels), squeeze=False)[0]
  for ax, (panel, curves) in zip(axes, panels.items()):
    for name, (nfe, vals) in curves.items():
      order = np.argsort(nfe, kind="stable")   # a line through the points in NFE order
      ax.plot(np.asarray(nfe)[order], np.maximum(np.asarray(vals, float)[order], 1e-4), marker="o",
              ms=3, label=name)
    for name, (nfe, val) in ((references or {}).get(panel) or {}).items():
      ax.plot([nfe], [max(val, 1e-4)], marker="*", ms=9, ls="none", label=name)
    for name, val in (levels or {}).items():
      ax.axhline(max(val, 1e-4), color="0.4", ls="--", lw=1, label=name)
    ax.set(xscale="log", yscale="log", xlabel="NFE", title=f"{title}: {panel}")
    ax.grid(alpha=0.3, which="both")
  axes[0].set_ylabel(ylabel)
  axes[-1].legend(frameon=False, fontsize=7, loc="best")
  return _save(fig, path)
