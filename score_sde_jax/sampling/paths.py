"""Whole sample paths, for figures: the reverse SDE (Euler-Maruyama) and the probability-flow ODE."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from score_sde_jax import checks
from score_sde_jax.sampling.common import time_grid
from score_sde_jax.sampling.flow import MAX_STEPS, check_flow_args, check_solution, solve_flow
from score_sde_jax.sampling.predictors import euler_maruyama
from score_sde_jax.score import as_pytree_fn


@functools.partial(jax.jit, static_argnames=("sde", "num_steps", "save_every"))
def _sde_paths(key, score_fn, z, eps, *, sde, num_steps, save_every):
  ts = time_grid(sde.T, eps, num_steps)

  def step(x, inputs):
    t, k = inputs
    x, _ = euler_maruyama(k, sde, score_fn, x, jnp.full((x.shape[0],), t), num_steps)
    return x, None

  def chunk(x, inputs):
    x, _ = jax.lax.scan(step, x, inputs)
    return x, x

  n_chunks = num_steps // save_every
  keys = jax.random.split(key, num_steps).reshape((n_chunks, save_every, -1))
  _, xs = jax.lax.scan(chunk, z, (ts.reshape(n_chunks, save_every), keys))
  times = jnp.concatenate([ts[:1], ts[save_every - 1::save_every]])
  return times, jnp.concatenate([z[None], xs])


def reverse_sde_paths(key, sde, score_fn, z, *, num_steps=1000, save_every=10, eps=None):
  """Euler-Maruyama paths of the reverse SDE from ``z`` at ``T`` to ``eps``: ``(ts (K,), xs (K, B, ...))``."""
  checks.check_key(key, "reverse_sde_paths")
  num_steps = checks.check_int("num_steps", num_steps, 1)
  save_every = checks.check_int("save_every", save_every, 1)
  if num_steps % save_every:
    raise ValueError(f"num_steps={num_steps} must be a multiple of save_every={save_every}")
  return _sde_paths(key, as_pytree_fn(score_fn), checks.check_batch("z", z),
                    checks.check_eps(eps, sde), sde=sde, num_steps=num_steps,
                    save_every=save_every)


@functools.partial(jax.jit, static_argnames=("sde", "solver", "n_save", "max_steps"))
def _ode_paths(score_fn, z, eps, rtol, atol, *, sde, solver, n_save, max_steps):
  ts = jnp.linspace(sde.T, eps, n_save)
  sol = solve_flow(sde, score_fn, z, sde.T, eps, solver=solver, rtol=rtol, atol=atol,
                   max_steps=max_steps, save_ts=ts)
  return ts, jnp.swapaxes(sol.ys, 0, 1), sol.status


def ode_paths(sde, score_fn, z, *, n_save=101, eps=None, rtol=1e-5, atol=1e-5, solver="tsit5",
              max_steps=MAX_STEPS):
  """Probability-flow ODE paths from ``z`` at ``T`` to ``eps``: ``(ts (K,), xs (K, B, ...))``."""
  solver, _ = check_flow_args(solver, None, None, rtol, atol)
  ts, xs, status = _ode_paths(as_pytree_fn(score_fn), checks.check_points("z", z),
                              checks.check_eps(eps, sde), rtol, atol, sde=sde, solver=solver,
                              n_save=checks.check_int("n_save", n_save, 2), max_steps=max_steps)
  check_solution(status, "ode_paths", max_steps)
  return ts, xs
