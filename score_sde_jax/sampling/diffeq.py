"""The probability-flow ODE and the reverse-time SDE solved with diffrax.

Both run backwards in time, from ``T`` to ``eps`` (``t1 < t0``, negative ``dt0``).
"""

from __future__ import annotations

import functools

import diffrax
import jax
import jax.numpy as jnp
import lineax

from score_sde_jax import parallel
from score_sde_jax.sampling.pc import as_pytree_fn, check_common, check_mesh, constrain_batch
from score_sde_jax.sampling.predictors import reverse_diffusion

ADAPTIVE_SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5}
FIXED_SOLVERS = {"euler": diffrax.Euler, "heun": diffrax.Heun}
# Score evaluations per step: explicit Runge-Kutta stages, less the one that
# first-same-as-last solvers reuse; plus one evaluation at the start for FSAL.
_EVALS_PER_STEP = {"tsit5": 6, "dopri5": 6, "euler": 1, "heun": 2}
_FSAL_START = {"tsit5": 1, "dopri5": 1, "euler": 0, "heun": 0}
DEFAULT_MAX_STEPS = 16384


def probability_flow_drift(sde, score_fn, probability_flow=True):
  """``drift(x, t)`` of the probability-flow ODE for one example (``x`` without batch axis).

  The diffrax solves are per example (``vmap``-ped), so each sees a single ``x``.
  ``probability_flow=False`` gives the drift of the reverse-time SDE instead.
  """
  rsde = sde.reverse(score_fn, probability_flow=probability_flow)
  return lambda x, t: rsde.sde(x[None], jnp.reshape(t, (1,)))[0][0]


def _denoise(sde, score_fn, x, eps):
  """The paper's noise removal: one reverse-diffusion step at ``eps`` without its noise."""
  _, x_mean = reverse_diffusion(jax.random.PRNGKey(0), sde, score_fn, x,
                                jnp.full((x.shape[0],), eps))
  return x_mean


def _solve_examples(x, score_fn, rtol, atol, eps, *, sde, solver, num_steps, max_steps):
  """One diffrax solve per example of ``x`` (``vmap``): steps do not depend on the batch."""
  drift = probability_flow_drift(sde, score_fn)

  def vector_field(t, y, args):
    return drift(y, t)

  if num_steps is None:
    controller, dt0 = diffrax.PIDController(rtol=rtol, atol=atol), None
    solver_obj = ADAPTIVE_SOLVERS[solver]()
  else:
    controller, dt0 = diffrax.ConstantStepSize(), -(sde.T - eps) / num_steps
    solver_obj = FIXED_SOLVERS[solver]()

  def solve_one(y0):
    sol = diffrax.diffeqsolve(diffrax.ODETerm(vector_field), solver_obj, t0=sde.T, t1=eps,
                              dt0=dt0, y0=y0, stepsize_controller=controller,
                              max_steps=max_steps, saveat=diffrax.SaveAt(t1=True))
    return sol.ys[0], sol.stats["num_steps"]

  return jax.vmap(solve_one)(x)


@functools.partial(jax.jit, static_argnames=("sde", "shape", "solver", "num_steps", "max_steps",
                                             "denoise", "mesh"))
def _ode_solve(key, z, score_fn, rtol, atol, eps, *, sde, shape, solver, num_steps, max_steps,
               denoise, mesh):
  x = sde.prior_sampling(key, shape) if z is None else z
  x = constrain_batch(x, mesh)
  solve = functools.partial(_solve_examples, sde=sde, solver=solver, num_steps=num_steps,
                            max_steps=max_steps)
  # Each device solves its own rows (shard_map): no device waits for another's step count.
  x, steps = parallel.map_shards(solve, mesh, (x,), (score_fn, rtol, atol, eps))
  if denoise:
    x = _denoise(sde, score_fn, x, eps)
  return x, steps


def ode_sample(key, sde, score_fn, shape, *, rtol=1e-5, atol=1e-5, solver="tsit5", eps=1e-3,
               denoise=True, z=None, num_steps=None, max_steps=DEFAULT_MAX_STEPS, mesh=None):
  """Samples by solving the probability-flow ODE (eq. 13) from ``T`` to ``eps`` with diffrax.

  Adaptive (``solver`` ``tsit5`` or ``dopri5`` with ``PIDController(rtol, atol)``),
  or fixed-step with ``solver`` ``euler`` / ``heun`` and ``num_steps``. Each
  example is solved on its own step sizes (the solve is ``vmap``-ped), so a
  sample does not depend on the rest of the batch. ``z`` (shape ``shape``) is
  a latent to decode instead of a prior draw; ``denoise`` adds the paper's
  final noise-free reverse-diffusion step. ``mesh`` splits the batch over its
  devices; each device runs its own solves (``shard_map``), and the samples
  equal those of one device.

  Returns ``(x, nfe)``: ``nfe`` is the number of (batched) score evaluations,
  the largest over the batch: ``1 + 6 steps`` for Tsit5/Dopri5 (first same as
  last), ``steps`` for Euler, ``2 steps`` for Heun, plus one for ``denoise``.
  """
  shape = tuple(shape)
  check_common(shape, eps, sde)
  if num_steps is None and solver not in ADAPTIVE_SOLVERS:
    raise ValueError(f"solver={solver!r}: adaptive solvers are {sorted(ADAPTIVE_SOLVERS)}; "
                     f"fixed-step {sorted(FIXED_SOLVERS)} need num_steps")
  if num_steps is not None:
    if solver not in FIXED_SOLVERS:
      raise ValueError(f"solver={solver!r} with num_steps={num_steps}: fixed-step solvers are "
                       f"{sorted(FIXED_SOLVERS)}")
    if not (isinstance(num_steps, int) and num_steps >= 1):
      raise ValueError(f"num_steps={num_steps!r}: expected a positive integer")
  check_mesh(shape, mesh)
  if z is not None:
    z = jnp.asarray(z)
    if z.shape != shape:
      raise ValueError(f"z: shape {z.shape}, expected {shape}")
  x, steps = _ode_solve(key, z, as_pytree_fn(score_fn), rtol, atol, eps, sde=sde, shape=shape,
                        solver=solver, num_steps=num_steps, max_steps=max_steps, denoise=denoise,
                        mesh=mesh)
  nfe = _FSAL_START[solver] + _EVALS_PER_STEP[solver] * int(jnp.max(steps)) + int(denoise)
  return x, nfe


def _sde_solve_examples(x, keys, score_fn, eps, *, sde, num_steps):
  """Per-example Euler-Maruyama solves, each driven by its own Brownian motion (``vmap``)."""
  reverse_drift = probability_flow_drift(sde, score_fn, probability_flow=False)

  def solve_one(y0, key):
    def drift(t, y, args):  # y is the flattened example
      return reverse_drift(y.reshape(y0.shape), t).reshape(-1)

    def diffusion(t, y, args):
      g = sde.sde(jnp.zeros((1, 1)), jnp.reshape(t, (1,)))[1][0]
      return lineax.DiagonalLinearOperator(jnp.full((y0.size,), g))

    # Brownian motion lives on the increasing interval [eps, T]; diffrax walks it backwards.
    brownian = diffrax.VirtualBrownianTree(eps, sde.T, tol=(sde.T - eps) / num_steps / 8,
                                           shape=(y0.size,), key=key)
    terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, brownian))
    sol = diffrax.diffeqsolve(terms, diffrax.Euler(), t0=sde.T, t1=eps,
                              dt0=-(sde.T - eps) / num_steps, y0=y0.reshape(-1),
                              stepsize_controller=diffrax.ConstantStepSize(),
                              max_steps=num_steps + 1, saveat=diffrax.SaveAt(t1=True))
    return sol.ys[0].reshape(y0.shape)

  return jax.vmap(solve_one)(x, keys)


@functools.partial(jax.jit, static_argnames=("sde", "shape", "num_steps", "denoise", "mesh"))
def _sde_solve(key, score_fn, eps, *, sde, shape, num_steps, denoise, mesh):
  key_prior, key_bm = jax.random.split(key)
  x = constrain_batch(sde.prior_sampling(key_prior, shape), mesh)
  keys = constrain_batch(jax.random.split(key_bm, shape[0]), mesh)
  solve = functools.partial(_sde_solve_examples, sde=sde, num_steps=num_steps)
  x = parallel.map_shards(solve, mesh, (x, keys), (score_fn, eps))
  if denoise:
    x = _denoise(sde, score_fn, x, eps)
  return x


def sde_sample(key, sde, score_fn, shape, *, num_steps=1000, eps=1e-3, denoise=True, mesh=None):
  """Samples by solving the reverse-time SDE (eq. 6) with diffrax's Euler-Maruyama.

  The drift is an ``ODETerm``; the diffusion a ``ControlTerm`` with a diagonal
  (lineax) operator driven by a ``VirtualBrownianTree`` on ``[eps, T]``, one
  per example (``vmap``, with keys split from ``key``), so a sample does not
  depend on the size or the split of its batch. Only
  Euler-Maruyama is exposed: stochastic Runge-Kutta solvers have been reported
  wrong backwards in time (diffrax issue 598), and this one is checked against
  the exact mixture in ``tests/test_sampling.py``. ``mesh`` splits the batch
  over its devices, each solving its own rows (``shard_map``).

  Returns ``(x, nfe)`` with ``nfe = num_steps (+ 1 with denoise)``.
  """
  shape = tuple(shape)
  check_common(shape, eps, sde)
  if not (isinstance(num_steps, int) and num_steps >= 1):
    raise ValueError(f"num_steps={num_steps!r}: expected a positive integer")
  check_mesh(shape, mesh)
  x = _sde_solve(key, as_pytree_fn(score_fn), eps, sde=sde, shape=shape, num_steps=num_steps,
                 denoise=denoise, mesh=mesh)
  return x, num_steps + int(denoise)
