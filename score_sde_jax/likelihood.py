"""Exact log-likelihoods and latent codes through the probability-flow ODE.

The ODE ``dx/dt = f~(x, t) = f(x, t) - g(t)^2 score(x, t) / 2`` is a continuous
normalising flow: along its solutions ``d log p_t(x(t)) / dt = -div f~``, so

    log p_eps(x) = log p_T(x(T)) + int_eps^T div f~(x(t), t) dt.

One diffrax solve from ``eps`` to ``T`` carries the augmented state
``(x, delta_logp)`` whose vector field returns ``(f~, div f~)``, and
``log p_T`` is replaced by the prior's density (as in the paper). Each example
is solved on its own step sizes (the solve is ``vmap``-ped), so results do not
depend on the batch.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from score_sde_jax import checks, parallel
from score_sde_jax.sampling import progress as sampling_progress
from score_sde_jax.sampling.flow import MAX_STEPS, check_flow_args, flow_nfe, ode_sample, solve_flow
from score_sde_jax.score import as_pytree_fn
from score_sde_jax.sde import batch_mul, sum_except_batch

DIVERGENCES = ("exact", "gaussian", "rademacher")


class LikelihoodResult(NamedTuple):
  """``logp`` ``(B,)`` nats, the latent ``z = x(T)`` shaped like ``x``, and ``nfe`` ``(B,)``."""

  logp: jax.Array
  z: jax.Array
  nfe: jax.Array


class BitsPerDimResult(NamedTuple):
  """``bpd`` ``(B,)`` per example and ``nfe`` ``(B,)`` summed over dequantization rounds."""

  bpd: jax.Array
  nfe: jax.Array


def _draw_probes(key, shape, kind, dtype):
  if kind == "gaussian":
    return jax.random.normal(key, shape, dtype)
  if kind == "rademacher":
    return jax.random.rademacher(key, shape, dtype)
  return None


def _check_divergence(key, divergence):
  if divergence not in DIVERGENCES:
    raise ValueError(f"divergence={divergence!r}: expected one of {list(DIVERGENCES)}")
  if divergence != "exact":
    checks.check_key(key, f"the Hutchinson estimator (divergence={divergence!r})")


def _check_likelihood_eps(eps, sde):
  return checks.check_eps(checks.check_number("eps", eps), sde)


@functools.partial(jax.jit, static_argnames=("sde", "divergence", "solver", "controller",
                                             "max_steps", "mesh", "progress"))
def _log_likelihood(key, score_fn, x, rtol, atol, eps, *, sde, divergence, solver, controller,
                    max_steps, mesh, progress=False):
  # Probes are drawn for the global batch (partitionable threefry): the same on any mesh.
  probes = _draw_probes(key, x.shape, divergence, x.dtype)
  sol = solve_flow(sde, score_fn, x, eps, sde.T, solver=solver, rtol=rtol, atol=atol,
                   controller=controller, max_steps=max_steps, divergence=divergence,
                   probes=probes, mesh=mesh, progress=progress)
  return sde.prior_logp(sol.ys) + sol.delta_logp, sol.ys, sol.num_steps


def log_likelihood(key, sde, score_fn, x, *, divergence="rademacher", rtol=1e-5, atol=1e-5,
                   eps=1e-5, solver="tsit5", stepsize_controller=None, max_steps=MAX_STEPS,
                   mesh=None) -> LikelihoodResult:
  """Log-density of ``x`` under the model's probability-flow ODE (a CNF), in nats.

  Args:
    key: PRNG key for the Hutchinson probes; ``None`` only with ``divergence="exact"``.
    x: ``(B, ...)`` points in model space, read as samples of ``p_eps``.
    divergence: ``"exact"`` (trace of the Jacobian, ``D`` forward-mode products
      per evaluation: for low-dimensional data and small images) or
      ``"gaussian"`` / ``"rademacher"`` (Hutchinson-Skilling: one probe per
      example and solve, unbiased).
    rtol, atol, eps: the paper's 1e-5, 1e-5, 1e-5.
    solver, stepsize_controller: an adaptive solver (name or diffrax object)
      and optionally a diffrax step-size controller instead of ``PIDController(rtol, atol)``.
    mesh: split the batch over its devices, each running its own solves
      (``shard_map``); probes are drawn for the global batch, so the result
      equals that of one device.

  Inside :func:`score_sde_jax.sampling.progress.stage` (``--mode eval`` runs it so), diffrax's
  progress bar follows the solve (without a mesh).

  Returns:
    ``LikelihoodResult(logp, z, nfe)``: ``logp`` ``(B,)`` nats, the latent
    ``z = x(T)`` shaped like ``x``, and ``nfe`` ``(B,)`` score evaluations per
    example (the flow's NFE rule, :func:`score_sde_jax.sampling.flow_nfe`).
  """
  x = checks.check_batch("x", x)
  _check_divergence(key, divergence)
  eps = _check_likelihood_eps(eps, sde)
  solver, _ = check_flow_args(solver, stepsize_controller, None)
  parallel.check_mesh(x.shape[0], mesh, "x.shape[0]")
  logp, z, steps = _log_likelihood(key, as_pytree_fn(score_fn), x, rtol, atol, eps, sde=sde,
                                   divergence=divergence, solver=solver,
                                   controller=stepsize_controller, max_steps=max_steps, mesh=mesh,
                                   progress=sampling_progress.name_for(None) is not None)
  return LikelihoodResult(logp, z, flow_nfe(solver, steps))


def scaler_log2_jacobian(scaler) -> float:
  """``log2 |d scaler(u) / du|`` of an affine data scaler (per dimension)."""
  return float(jnp.log2(jnp.abs(jax.grad(lambda u: scaler(u))(jnp.float32(0.5)))))


def bits_offset(num_levels: int, scaler) -> float:
  """Bits per dimension added to ``-log2 p(y) / D`` for ``K``-level data and a scaler.

  Integer data ``k`` in ``{0..K-1}`` is dequantized to ``u = (k + U) / K`` in
  ``[0, 1)`` and scaled to ``y = scaler(u)``. The bin of ``k`` has volume
  ``K^-D`` in ``u``-space and ``p_u = p_y |dy/du|^D``, so by Jensen
  ``-log2 P(k) / D <= E_U[-log2 p_y(y)] / D - log2 |dy/du| + log2 K``.
  For 8-bit data: 7 bits when centered to [-1, 1] (``dy/du = 2``), else 8 (the paper's offsets).
  """
  return math.log2(num_levels) - scaler_log2_jacobian(scaler)


def dequantize(key, x_int, num_levels: int):
  """``(k + U) / K`` with ``U ~ Uniform[0, 1)``, from integer levels to ``[0, 1)``."""
  noise = jax.random.uniform(key, jnp.shape(x_int))
  return (jnp.asarray(x_int, jnp.float32) + noise) / num_levels


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _dequantize_scaled(key, x_int, num_levels, scaler, noise):
  # One jitted computation, so a sharded x_int stays sharded (and works across processes).
  u = dequantize(key, x_int, num_levels) if noise else x_int / num_levels
  return scaler(u)


def bits_per_dim(key, sde, score_fn, x_int, *, num_levels=256, scaler=lambda u: u,
                 n_repeats=1, dequantize_data=True, divergence="rademacher", rtol=1e-5,
                 atol=1e-5, eps=1e-5, solver="tsit5", mesh=None) -> BitsPerDimResult:
  """Bits per dimension of discrete data, an upper bound on ``-log2 P(x) / D``.

  Args:
    key: PRNG key for the dequantization noise and the probes; ``None`` only
      with ``dequantize_data=False`` and ``divergence="exact"``.
    x_int: ``(B, ...)`` integer levels in ``{0, ..., num_levels - 1}``.
    scaler: the affine map from ``[0, 1]`` to model space that training used
      (``score_sde_jax.data.get_data_scaler(centered)``).
    n_repeats: dequantization draws, each with its own noise (and probe); the
      result is their mean.
    mesh: split the batch over its devices, as :func:`log_likelihood`.
    dequantize_data: the default ``True`` is the right bound. ``False``
      reproduces the paper's standalone likelihood function, which feeds
      ``k / K`` without noise: the density of a continuous model at grid
      points is not a probability, and users reported negative bits/dim.

  Returns:
    ``BitsPerDimResult(bpd, nfe)``: ``bpd`` ``(B,)`` per example (the data
    set's figure is the mean over examples), ``nfe`` ``(B,)`` score evaluations
    summed over repeats.
  """
  x_int, num_levels, n_repeats = _check_levels(x_int, num_levels, n_repeats)
  if dequantize_data or divergence != "exact":
    checks.check_key(key, "bits_per_dim with dequantize_data=True or a Hutchinson divergence")

  def nll(k, y):
    logp, _, n = log_likelihood(k, sde, score_fn, y, divergence=divergence, rtol=rtol,
                                atol=atol, eps=eps, solver=solver, mesh=mesh)
    return -logp, n

  return _dequantized_bits(key, x_int, nll, num_levels=num_levels, scaler=scaler,
                           n_repeats=n_repeats, dequantize_data=dequantize_data)


def _check_levels(x_int, num_levels, n_repeats):
  x_int = checks.check_batch("x_int", x_int)
  num_levels = checks.check_int("num_levels", num_levels, 2)
  if jnp.issubdtype(x_int.dtype, jnp.floating):
    raise ValueError(f"x_int: dtype {x_int.dtype}; expected integer levels 0..{num_levels - 1}")
  low, high = int(jnp.min(x_int)), int(jnp.max(x_int))
  if low < 0 or high >= num_levels:
    raise ValueError(f"x_int: levels from {low} to {high}; expected 0..{num_levels - 1} "
                     f"(num_levels={num_levels})")
  return x_int, num_levels, checks.check_int("n_repeats", n_repeats, 1)


def _dequantized_bits(key, x_int, nll, *, num_levels, scaler, n_repeats, dequantize_data):
  """Bits/dim of integer levels from ``nll(key, y) -> (nats (B,), nfe (B,))`` of model-space
  ``y``, averaged over ``n_repeats`` dequantization draws (:func:`bits_offset`)."""
  n_dims = int(np.prod(x_int.shape[1:]))
  offset = bits_offset(num_levels, scaler)
  total, nfe = 0.0, 0
  for _ in range(n_repeats):
    if key is not None:
      key, key_noise, key_probe = jax.random.split(key, 3)
    else:
      key_noise = key_probe = None
    y = _dequantize_scaled(key_noise, x_int, num_levels, scaler, dequantize_data)
    nats, n = nll(key_probe, y)
    total = total + (nats / (n_dims * math.log(2)) + offset)
    nfe = nfe + n
  return BitsPerDimResult(total / n_repeats, nfe)


class BoundResult(NamedTuple):
  """ScoreFlow's upper bound on ``-log p(x)`` in nats ``(B,)`` and its terms: ``nll = prior +
  diffusion + offset``; ``nfe`` score evaluations per example."""

  nll: jax.Array
  prior: jax.Array
  diffusion: jax.Array
  offset: jax.Array
  nfe: int


@functools.partial(jax.jit, static_argnames=("sde", "num_times", "importance_sampling",
                                             "eps_offset"))
def _nll_bound(key, score_fn, x, eps, *, sde, num_times, importance_sampling, eps_offset):
  b, shape = x.shape[0], x.shape
  key_t, key_scan, key_prior, key_offset = jax.random.split(key, 4)
  # The integral over t as the mean of integrand(t) / p(t) over draws t ~ p.
  if importance_sampling:   # p = w / ratio, w = g^2 / std^2
    ts, ratios = sde.sample_likelihood_time(key_t, (num_times, b), eps)
    inv_p = ratios / sde.likelihood_weight(ts)
  else:
    ts = jax.random.uniform(key_t, (num_times, b), minval=eps, maxval=sde.T)
    inv_p = jnp.full((num_times, b), sde.T - eps)
  ts = ts.astype(x.dtype)

  def body(total, inputs):
    t, ratio, k = inputs   # ratio: 1 / p(t)
    key_z, key_probe = jax.random.split(k)
    z = jax.random.normal(key_z, shape, x.dtype)
    mean, std = sde.marginal_prob(x, t)
    score = score_fn(mean + batch_mul(std, z), t)
    g2 = sde.sde(jnp.zeros_like(x), t)[1] ** 2
    div_f = sde.drift_divergence(mean + batch_mul(std, z), t,
                                 jax.random.rademacher(key_probe, shape, x.dtype))
    # g^2 (|score - grad log p_0t|^2 - |grad log p_0t|^2) - 2 div f, grad log p_0t = -z / std,
    # written as |std score + z|^2 - |z|^2 over std^2 (no 1 / std^2 of each term apart).
    dsm = sum_except_batch(jnp.square(batch_mul(std, score) + z)) - sum_except_batch(z * z)
    integrand = g2 / std**2 * dsm - 2.0 * div_f
    return total + ratio * integrand, None

  total, _ = jax.lax.scan(body, jnp.zeros((b,), x.dtype),
                          (ts, inv_p.astype(x.dtype), jax.random.split(key_scan, num_times)))
  diffusion = 0.5 * total / num_times
  mean, std = sde.marginal_prob(x, jnp.full((b,), sde.T, x.dtype))
  prior = -sde.prior_logp(mean + batch_mul(std, jax.random.normal(key_prior, shape, x.dtype)))
  offset = jnp.zeros((b,), x.dtype)
  if eps_offset:
    # -log p(x) <= E_q[-log p_eps(y) - log p(x | y)] - H(q) for q(y | x) = p_0,eps(y | x) (the
    # kernel at eps) and the Gaussian decoder p(x | y) = N(Tweedie's mean, (std / a)^2).
    t_eps = jnp.full((b,), eps, x.dtype)
    mean, std = sde.marginal_prob(x, t_eps)
    y = mean + batch_mul(std, jax.random.normal(key_offset, shape, x.dtype))
    a = sde.marginal_prob(jnp.ones((b, 1), x.dtype), t_eps)[0][:, 0]
    x_hat = batch_mul(1.0 / a, y + batch_mul(std**2, score_fn(y, t_eps)))
    d = int(np.prod(shape[1:]))
    entropy = 0.5 * d * (jnp.log(2 * jnp.pi) + 2.0 * jnp.log(std) + 1.0)
    decoder_std = std / a
    recon = (0.5 * d * (jnp.log(2 * jnp.pi) + 2.0 * jnp.log(decoder_std))
             + 0.5 * sum_except_batch(jnp.square(x - x_hat)) / decoder_std**2)
    offset = recon - entropy
  return prior + diffusion + offset, prior, diffusion, offset


def nll_bound(key, sde, score_fn, x, *, num_times=1000, importance_sampling=True, eps=1e-5,
              eps_offset=True) -> BoundResult:
  """ScoreFlow's variational upper bound on ``-log p(x)`` (Song, Durkan, Murray & Ermon 2021,
  Theorem 2 in its denoising form), an unbiased Monte-Carlo estimate in nats.

  For the reverse-time SDE with the model's score and the prior ``pi``:

      -log p(x) <= E[-log pi(x_T)]
                   + 1/2 int_eps^T E[g^2 (|s - grad log p_0t|^2 - |grad log p_0t|^2) - 2 div f] dt
                   + [E_q[-log N(x; x_hat(y), (std / a)^2)] - H(q)]

  with ``x_t ~ p_0t(. | x)`` (the kernel, ``grad log p_0t = -z / std``); the last bracket
  (``eps_offset``) makes the bound one on ``x`` itself rather than on ``x`` perturbed to time
  ``eps``: ``q = p_0,eps(. | x)`` and Tweedie's denoiser ``x_hat(y) = (y + std^2 s(y, eps)) / a``
  as a Gaussian decoder. With the exact score and ``pi = p_T`` the bound equals ``-log p(x)``
  as ``eps -> 0``; with ``pi != p_T`` it exceeds it by ``E[log p_T(x_T) / pi(x_T)]``
  (tests/test_likelihood_weighting.py derives the Gaussian case in closed form). Unlike the
  probability-flow likelihood it bounds the SDE's own model and needs no divergence of the score
  (one score evaluation per time sample), only of the drift (exact for the paper's SDEs).

  Args:
    key: PRNG key (times, noise, probes).
    x: ``(B, ...)`` model-space points (dequantized for discrete data: :func:`bits_per_dim_bound`).
    num_times: time samples per example (ScoreFlow's ``N = 1000``); the estimate is unbiased for
      any number, its variance falls as ``1 / num_times``.
    importance_sampling: ``t`` drawn in proportion to ``g^2 / std^2``
      (:meth:`SDE.sample_likelihood_time`), as ScoreFlow; ``False``: uniform on ``[eps, T]``.
    eps: the smallest time (ScoreFlow's ``1e-5``).

  Returns:
    :class:`BoundResult` with ``nll`` ``(B,)`` nats and its terms.
  """
  x = checks.check_batch("x", x)
  checks.check_key(key, "nll_bound")
  num_times = checks.check_int("num_times", num_times, 1)
  eps = _check_likelihood_eps(eps, sde)
  nll, prior, diffusion, offset = _nll_bound(
      key, as_pytree_fn(score_fn), x, eps, sde=sde, num_times=num_times,
      importance_sampling=bool(importance_sampling), eps_offset=bool(eps_offset))
  return BoundResult(nll, prior, diffusion, offset, num_times + int(bool(eps_offset)))


def bits_per_dim_bound(key, sde, score_fn, x_int, *, num_levels=256, scaler=lambda u: u,
                       n_repeats=1, num_times=1000, importance_sampling=True, eps=1e-5,
                       eps_offset=True) -> BitsPerDimResult:
  """:func:`nll_bound` in bits/dim of integer levels, with the dequantization of
  :func:`bits_per_dim` (uniform noise, ``n_repeats`` draws; the same :func:`bits_offset`): an
  upper bound on ``-log2 P(x) / D`` like it, comparable term by term."""
  x_int, num_levels, n_repeats = _check_levels(x_int, num_levels, n_repeats)
  checks.check_key(key, "bits_per_dim_bound")

  def nll(k, y):
    result = nll_bound(k, sde, score_fn, y, num_times=num_times,
                       importance_sampling=importance_sampling, eps=eps, eps_offset=eps_offset)
    return result.nll, jnp.full(result.nll.shape, result.nfe)

  return _dequantized_bits(key, x_int, nll, num_levels=num_levels, scaler=scaler,
                           n_repeats=n_repeats, dequantize_data=True)


@functools.partial(jax.jit, static_argnames=("sde", "solver", "controller", "max_steps", "mesh"))
def _encode(score_fn, x, rtol, atol, eps, *, sde, solver, controller, max_steps, mesh):
  return solve_flow(sde, score_fn, x, eps, sde.T, solver=solver, rtol=rtol, atol=atol,
                    controller=controller, max_steps=max_steps, mesh=mesh).ys


def encode(sde, score_fn, x, *, rtol=1e-5, atol=1e-5, eps=1e-5, solver="tsit5",
           stepsize_controller=None, max_steps=MAX_STEPS, mesh=None):
  """Deterministic latent code ``z = x(T)`` of ``x = x(eps)`` under the probability-flow ODE."""
  x = checks.check_batch("x", x)
  eps = _check_likelihood_eps(eps, sde)
  solver, _ = check_flow_args(solver, stepsize_controller, None)
  parallel.check_mesh(x.shape[0], mesh, "x.shape[0]")
  return _encode(as_pytree_fn(score_fn), x, rtol, atol, eps, sde=sde, solver=solver,
                 controller=stepsize_controller, max_steps=max_steps, mesh=mesh)


def decode(sde, score_fn, z, *, rtol=1e-5, atol=1e-5, eps=1e-5, solver="tsit5",
           stepsize_controller=None, max_steps=MAX_STEPS, mesh=None):
  """``x(eps)`` from a latent ``z = x(T)``: the inverse of :func:`encode`.

  This is :func:`score_sde_jax.sampling.ode_sample` from the given latent,
  without the final denoising step and with the likelihood's ``eps``.
  """
  z = checks.check_batch("z", z)
  return ode_sample(None, sde, score_fn, z.shape, z=z, rtol=rtol, atol=atol, solver=solver,
                    eps=_check_likelihood_eps(eps, sde), denoise=False,
                    stepsize_controller=stepsize_controller, max_steps=max_steps,
                    mesh=mesh).samples


def slerp(z0, z1, alpha):
  """Spherical interpolation of directions with linearly interpolated norms.

  Gaussian latents concentrate on a shell, so the straight line between two
  of them passes through atypically small norms. Plain slerp keeps the norm
  only when ``|z0| = |z1|`` (in high dimensions nearly so; in 2-D it can blow
  up near antipodal pairs), so the direction is slerped and the norm
  interpolated: ``((1 - a)|z0| + a|z1|) slerp(z0/|z0|, z1/|z1|, a)``.
  """
  z0f, z1f = z0.reshape(-1), z1.reshape(-1)
  n0, n1 = jnp.linalg.norm(z0f), jnp.linalg.norm(z1f)
  u0, u1 = z0 / n0, z1 / n1
  omega = jnp.arccos(jnp.clip(jnp.dot(z0f / n0, z1f / n1), -1.0, 1.0))
  so = jnp.sin(omega)
  safe = so > 1e-6
  w0 = jnp.where(safe, jnp.sin((1 - alpha) * omega) / jnp.where(safe, so, 1.0), 1 - alpha)
  w1 = jnp.where(safe, jnp.sin(alpha * omega) / jnp.where(safe, so, 1.0), alpha)
  return ((1 - alpha) * n0 + alpha * n1) * (w0 * u0 + w1 * u1)


def interpolate(z0, z1, alphas):
  """Latents between ``z0`` and ``z1`` at ``alphas`` (:func:`slerp` of each pair).

  ``z0``, ``z1``: batches ``(B, ...)`` of latents, as :func:`encode` returns
  them, interpolated pair by pair into ``(B, len(alphas), ...)``; or one
  latent vector each ``(D,)``, giving ``(len(alphas), D)``.
  """
  z0, z1 = jnp.asarray(z0), jnp.asarray(z1)
  if z0.shape != z1.shape:
    raise ValueError(f"z0, z1: shapes {z0.shape} and {z1.shape} differ")
  alphas = jnp.asarray(alphas, jnp.result_type(float))
  if alphas.ndim != 1:
    raise ValueError(f"alphas: shape {alphas.shape}, expected (K,)")
  path = jax.vmap(lambda a, b: jax.vmap(lambda t: slerp(a, b, t))(alphas))
  return path(z0[None], z1[None])[0] if z0.ndim == 1 else path(z0, z1)
