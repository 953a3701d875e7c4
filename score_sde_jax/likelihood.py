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
from score_sde_jax.sampling.flow import (MAX_STEPS, check_flow_args, check_solution, flow_nfe,
                                         ode_sample, solve_flow)
from score_sde_jax.score import as_pytree_fn

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
  return sde.prior_logp(sol.ys) + sol.delta_logp, sol.ys, sol.num_steps, sol.status


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
  x = checks.check_points("x", x)
  _check_divergence(key, divergence)
  eps = _check_likelihood_eps(eps, sde)
  solver, _ = check_flow_args(solver, stepsize_controller, None, rtol, atol)
  parallel.check_mesh(x.shape[0], mesh, "x.shape[0]")
  logp, z, steps, status = _log_likelihood(
      key, as_pytree_fn(score_fn), x, rtol, atol, eps, sde=sde, divergence=divergence,
      solver=solver, controller=stepsize_controller, max_steps=max_steps, mesh=mesh,
      progress=sampling_progress.name_for(None) is not None)
  check_solution(status, "log_likelihood", max_steps)
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


@functools.partial(jax.jit, static_argnames=("sde", "solver", "controller", "max_steps", "mesh"))
def _encode(score_fn, x, rtol, atol, eps, *, sde, solver, controller, max_steps, mesh):
  sol = solve_flow(sde, score_fn, x, eps, sde.T, solver=solver, rtol=rtol, atol=atol,
                   controller=controller, max_steps=max_steps, mesh=mesh)
  return sol.ys, sol.status


def encode(sde, score_fn, x, *, rtol=1e-5, atol=1e-5, eps=1e-5, solver="tsit5",
           stepsize_controller=None, max_steps=MAX_STEPS, mesh=None):
  """Deterministic latent code ``z = x(T)`` of ``x = x(eps)`` under the probability-flow ODE."""
  x = checks.check_points("x", x)
  eps = _check_likelihood_eps(eps, sde)
  solver, _ = check_flow_args(solver, stepsize_controller, None, rtol, atol)
  parallel.check_mesh(x.shape[0], mesh, "x.shape[0]")
  z, status = _encode(as_pytree_fn(score_fn), x, rtol, atol, eps, sde=sde, solver=solver,
                      controller=stepsize_controller, max_steps=max_steps, mesh=mesh)
  check_solution(status, "encode", max_steps)
  return z


def decode(sde, score_fn, z, *, rtol=1e-5, atol=1e-5, eps=1e-5, solver="tsit5",
           stepsize_controller=None, max_steps=MAX_STEPS, mesh=None):
  """``x(eps)`` from a latent ``z = x(T)``: the inverse of :func:`encode`.

  This is :func:`score_sde_jax.sampling.ode_sample` from the given latent,
  without the final denoising step and with the likelihood's ``eps``.
  """
  z = checks.check_points("z", z)
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
