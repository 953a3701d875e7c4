"""Whole sample paths, for figures: the reverse SDE (Euler-Maruyama) and the probability-flow ODE."""

from __future__ import annotations

import dataclasses
import functools

import diffrax
import jax
import jax.numpy as jnp

from score_sde_jax.sampling.diffeq import probability_flow_drift
from score_sde_jax.sampling.pc import as_pytree_fn
from score_sde_jax.sampling.predictors import euler_maruyama


@functools.partial(jax.jit, static_argnames=("sde", "num_steps", "save_every"))
def _sde_paths(key, score_fn, z, eps, *, sde, num_steps, save_every):
  sde = dataclasses.replace(sde, N=num_steps)
  ts = jnp.linspace(sde.T, eps, num_steps)

  def step(x, inputs):
    t, k = inputs
    x, _ = euler_maruyama(k, sde, score_fn, x, jnp.full((x.shape[0],), t))
    return x, None

  def chunk(x, inputs):
    x, _ = jax.lax.scan(step, x, inputs)
    return x, x

  n_chunks = num_steps // save_every
  keys = jax.random.split(key, num_steps).reshape((n_chunks, save_every, -1))
  _, xs = jax.lax.scan(chunk, z, (ts.reshape(n_chunks, save_every), keys))
  times = jnp.concatenate([ts[:1], ts[save_every - 1::save_every]])
  return times, jnp.concatenate([z[None], xs])


def reverse_sde_paths(key, sde, score_fn, z, *, num_steps=1000, save_every=10, eps=1e-3):
  """Euler-Maruyama paths of the reverse SDE from ``z`` at ``T`` to ``eps``: ``(ts (K,), xs (K, B, ...))``."""
  if num_steps % save_every:
    raise ValueError(f"num_steps={num_steps} must be a multiple of save_every={save_every}")
  return _sde_paths(key, as_pytree_fn(score_fn), jnp.asarray(z), eps, sde=sde, num_steps=num_steps,
                    save_every=save_every)


@functools.partial(jax.jit, static_argnames=("sde", "n_save"))
def _ode_paths(score_fn, z, eps, rtol, atol, *, sde, n_save):
  drift = probability_flow_drift(sde, score_fn)
  ts = jnp.linspace(sde.T, eps, n_save)

  def vector_field(t, y, args):
    return drift(y, t)

  def solve_one(y0):
    sol = diffrax.diffeqsolve(diffrax.ODETerm(vector_field), diffrax.Tsit5(), t0=sde.T, t1=eps,
                              dt0=None, y0=y0, saveat=diffrax.SaveAt(ts=ts),
                              stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
                              max_steps=16384)
    return sol.ys

  return ts, jnp.swapaxes(jax.vmap(solve_one)(z), 0, 1)


def ode_paths(sde, score_fn, z, *, n_save=101, eps=1e-3, rtol=1e-5, atol=1e-5):
  """Probability-flow ODE paths from ``z`` at ``T`` to ``eps``: ``(ts (K,), xs (K, B, ...))``."""
  return _ode_paths(as_pytree_fn(score_fn), jnp.asarray(z), eps, rtol, atol, sde=sde, n_save=n_save)
