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

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from score_sde_jax import parallel
from score_sde_jax.sampling.diffeq import probability_flow_drift
from score_sde_jax.sampling.pc import as_pytree_fn, check_mesh, constrain_batch

SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5}
DIVERGENCES = ("exact", "gaussian", "rademacher")
_EVALS_PER_STEP = 6  # Tsit5 and Dopri5 are first-same-as-last: 6 new stages per step, 1 at start
MAX_STEPS = 16384


def _divergence_fn(drift, kind):
  """``(x, t, probe) -> (f, div f)`` with the exact trace or a Hutchinson estimate."""
  if kind == "exact":
    def fn(x, t, probe):
      f_x = lambda y: drift(y, t)
      value = f_x(x)
      # Trace of the Jacobian from one forward-mode product per basis vector.
      basis = jnp.eye(x.size, dtype=x.dtype).reshape((x.size,) + x.shape)
      columns = jax.vmap(lambda e: jax.jvp(f_x, (x,), (e,))[1])(basis)
      return value, jnp.sum(columns.reshape(x.size, x.size).diagonal())
  else:
    def fn(x, t, probe):
      value, jv = jax.jvp(lambda y: drift(y, t), (x,), (probe,))
      return value, jnp.sum(probe * jv)  # E[v^T J v] = tr J for E[v v^T] = I
  return fn


def _draw_probes(key, shape, kind, dtype):
  if kind == "gaussian":
    return jax.random.normal(key, shape, dtype)
  if kind == "rademacher":
    return jax.random.rademacher(key, shape, dtype)
  return jnp.zeros(shape, dtype)


def _check(divergence, solver, eps, sde, x):
  if divergence not in DIVERGENCES:
    raise ValueError(f"divergence={divergence!r}: expected one of {list(DIVERGENCES)}")
  if solver not in SOLVERS:
    raise ValueError(f"solver={solver!r}: expected one of {sorted(SOLVERS)}")
  if not 0 < eps < sde.T:
    raise ValueError(f"eps={eps!r}: must be in (0, T={sde.T})")
  if x.ndim < 2:
    raise ValueError(f"x: shape {x.shape}, expected (batch, ...)")


def _solve_likelihoods(x, probes, score_fn, rtol, atol, eps, *, sde, divergence, solver,
                       max_steps):
  """Per-example augmented solves ``(x, delta_logp)`` from ``eps`` to ``T`` (``vmap``)."""
  field = _divergence_fn(probability_flow_drift(sde, score_fn), divergence)

  def vector_field(t, state, probe):
    y, _ = state
    return field(y, t, probe)

  def solve_one(x0, probe):
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field), SOLVERS[solver](), t0=eps, t1=sde.T, dt0=None,
        y0=(x0, jnp.zeros((), x0.dtype)), args=probe,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=max_steps,
        saveat=diffrax.SaveAt(t1=True))
    z, delta_logp = sol.ys[0][0], sol.ys[1][0]
    return z, delta_logp, sol.stats["num_steps"]

  return jax.vmap(solve_one)(x, probes)


@functools.partial(jax.jit, static_argnames=("sde", "divergence", "solver", "max_steps", "mesh"))
def _log_likelihood(key, score_fn, x, rtol, atol, eps, *, sde, divergence, solver, max_steps, mesh):
  x = constrain_batch(x, mesh)
  # Probes are drawn for the global batch (partitionable threefry): the same on any mesh.
  probes = constrain_batch(_draw_probes(key, x.shape, divergence, x.dtype), mesh)
  solve = functools.partial(_solve_likelihoods, sde=sde, divergence=divergence, solver=solver,
                            max_steps=max_steps)
  z, delta_logp, steps = parallel.map_shards(solve, mesh, (x, probes),
                                             (score_fn, rtol, atol, eps))
  logp = sde.prior_logp(z) + delta_logp
  return logp, z, 1 + _EVALS_PER_STEP * steps


def log_likelihood(key, sde, score_fn, x, *, divergence="rademacher", rtol=1e-5, atol=1e-5,
                   eps=1e-5, solver="tsit5", max_steps=MAX_STEPS, mesh=None):
  """Log-density of ``x`` under the model's probability-flow ODE (a CNF), in nats.

  Args:
    key: PRNG key for the Hutchinson probes (unused with ``divergence="exact"``).
    x: ``(B, ...)`` points in model space, read as samples of ``p_eps``.
    divergence: ``"exact"`` (trace of the Jacobian, ``D`` forward-mode products
      per evaluation: for low-dimensional data and small images) or
      ``"gaussian"`` / ``"rademacher"`` (Hutchinson-Skilling: one probe per
      example and solve, unbiased).
    rtol, atol, eps: the paper's 1e-5, 1e-5, 1e-5.
    mesh: split the batch over its devices, each running its own solves
      (``shard_map``); probes are drawn for the global batch, so the result
      equals that of one device.

  Returns:
    ``(logp, z, nfe)``: ``logp`` ``(B,)`` nats, the latent ``z = x(T)`` shaped
    like ``x``, and ``nfe`` ``(B,)`` vector-field evaluations per example.
  """
  x = jnp.asarray(x)
  _check(divergence, solver, eps, sde, x)
  check_mesh(x.shape, mesh)
  key = jax.random.PRNGKey(0) if key is None else key
  return _log_likelihood(key, as_pytree_fn(score_fn), x, rtol, atol, eps, sde=sde,
                         divergence=divergence, solver=solver, max_steps=max_steps, mesh=mesh)


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
                 atol=1e-5, eps=1e-5, solver="tsit5", mesh=None):
  """Bits per dimension of discrete data, an upper bound on ``-log2 P(x) / D``.

  Args:
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
    ``(bpd, nfe)``: ``bpd`` ``(B,)`` per example (the data set's figure is the
    mean over examples), ``nfe`` ``(B,)`` vector-field evaluations summed over repeats.
  """
  x_int = jnp.asarray(x_int)
  if jnp.issubdtype(x_int.dtype, jnp.floating):
    raise ValueError(f"x_int: dtype {x_int.dtype}; expected integer levels 0..{num_levels - 1}")
  n_dims = int(np.prod(x_int.shape[1:]))
  offset = bits_offset(num_levels, scaler)
  total, nfe = 0.0, 0
  for r in range(n_repeats):
    key, key_noise, key_probe = jax.random.split(key, 3)
    y = _dequantize_scaled(key_noise, x_int, num_levels, scaler, dequantize_data)
    logp, _, n = log_likelihood(key_probe, sde, score_fn, y, divergence=divergence,
                                rtol=rtol, atol=atol, eps=eps, solver=solver, mesh=mesh)
    total = total + (-logp / (n_dims * math.log(2)) + offset)
    nfe = nfe + n
  return total / n_repeats, nfe


def _flow_examples(x, score_fn, rtol, atol, eps, *, sde, forward, solver, max_steps):
  drift = probability_flow_drift(sde, score_fn)
  t0, t1 = (eps, sde.T) if forward else (sde.T, eps)

  def solve_one(x0):
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: drift(y, t)), SOLVERS[solver](), t0=t0, t1=t1,
        dt0=None, y0=x0, stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps, saveat=diffrax.SaveAt(t1=True))
    return sol.ys[0]

  return jax.vmap(solve_one)(x)


@functools.partial(jax.jit, static_argnames=("sde", "forward", "solver", "max_steps", "mesh"))
def _flow(score_fn, x, rtol, atol, eps, *, sde, forward, solver, max_steps, mesh):
  flow = functools.partial(_flow_examples, sde=sde, forward=forward, solver=solver,
                           max_steps=max_steps)
  return parallel.map_shards(flow, mesh, (constrain_batch(x, mesh),), (score_fn, rtol, atol, eps))


def _checked_flow(sde, score_fn, x, forward, rtol, atol, eps, solver, max_steps, mesh):
  x = jnp.asarray(x)
  _check("exact", solver, eps, sde, x)
  check_mesh(x.shape, mesh)
  return _flow(as_pytree_fn(score_fn), x, rtol, atol, eps, sde=sde, forward=forward,
               solver=solver, max_steps=max_steps, mesh=mesh)


def encode(sde, score_fn, x, *, rtol=1e-5, atol=1e-5, eps=1e-5, solver="tsit5",
           max_steps=MAX_STEPS, mesh=None):
  """Deterministic latent code ``z = x(T)`` of ``x = x(eps)`` under the probability-flow ODE."""
  return _checked_flow(sde, score_fn, x, True, rtol, atol, eps, solver, max_steps, mesh)


def decode(sde, score_fn, z, *, rtol=1e-5, atol=1e-5, eps=1e-5, solver="tsit5",
           max_steps=MAX_STEPS, mesh=None):
  """``x(eps)`` from a latent ``z = x(T)``: the inverse of :func:`encode` (no denoising step)."""
  return _checked_flow(sde, score_fn, z, False, rtol, atol, eps, solver, max_steps, mesh)


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
  """Latents between ``z0`` and ``z1`` (each without batch axis) at ``alphas``: ``(len(alphas), ...)``."""
  alphas = jnp.asarray(alphas, jnp.float32)
  return jax.vmap(lambda a: slerp(jnp.asarray(z0), jnp.asarray(z1), a))(alphas)
