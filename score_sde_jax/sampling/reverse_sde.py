"""The reverse-time SDE (eq. 6) solved with diffrax's Euler-Maruyama, per example.

It runs backwards in time, from ``T`` to ``eps`` (``t1 < t0``, negative ``dt0``),
with Brownian motion built on the increasing interval ``[eps, T]``.
"""

from __future__ import annotations

import dataclasses
import functools

import diffrax
import jax
import jax.numpy as jnp
import lineax

from score_sde_jax import checks, parallel
from score_sde_jax.sampling.common import SampleResult, Sampler, checked_result
from score_sde_jax.sampling.flow import per_example_drift
from score_sde_jax.sampling.predictors import denoise as denoise_step
from score_sde_jax.score import as_pytree_fn


def _solve_examples(x, keys, score_fn, eps, *, sde, num_steps):
  """Per-example Euler-Maruyama solves, each driven by its own Brownian motion (``vmap``)."""
  reverse_drift = per_example_drift(sde, score_fn, probability_flow=False)

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
def _sde_sample(key, score_fn, eps, *, sde, shape, num_steps, denoise, mesh):
  key_prior, key_bm = jax.random.split(key)
  x = parallel.constrain_batch(sde.prior_sampling(key_prior, shape), mesh)
  keys = parallel.constrain_batch(jax.random.split(key_bm, shape[0]), mesh)
  solve = functools.partial(_solve_examples, sde=sde, num_steps=num_steps)
  x = parallel.map_shards(solve, mesh, (x, keys), (score_fn, eps))
  if denoise:
    x = denoise_step(sde, score_fn, x, eps)
  return x


def sde_sample(key, sde, score_fn, shape, *, num_steps=1000, eps=None, denoise=True,
               mesh=None) -> SampleResult:
  """Samples by solving the reverse-time SDE (eq. 6) with diffrax's Euler-Maruyama.

  The drift is an ``ODETerm``; the diffusion a ``ControlTerm`` with a diagonal
  (lineax) operator driven by a ``VirtualBrownianTree`` on ``[eps, T]``, one
  per example (``vmap``, with keys split from ``key``), so a sample does not
  depend on the size or the split of its batch. Only Euler-Maruyama is
  exposed: stochastic Runge-Kutta solvers have been reported wrong backwards
  in time (diffrax issue 598), and this one is checked against the exact
  mixture in ``tests/test_sampling.py``. ``eps`` defaults to the SDE's
  ``sampling_eps``. ``mesh`` splits the batch over its devices, each solving
  its own rows (``shard_map``).

  Returns:
    ``SampleResult(samples, nfe)`` with ``nfe = num_steps (+ 1 with denoise)``.
  """
  checks.check_key(key, "sde_sample")
  shape = checks.check_shape(shape)
  eps = checks.check_eps(eps, sde)
  num_steps = checks.check_int("num_steps", num_steps, 1)
  parallel.check_mesh(shape[0], mesh, "shape[0]")
  x = _sde_sample(key, as_pytree_fn(score_fn), eps, sde=sde, shape=shape, num_steps=num_steps,
                  denoise=denoise, mesh=mesh)
  return checked_result("sde_sample", x, num_steps + int(denoise))


@dataclasses.dataclass(frozen=True)
class SDESampler(Sampler):
  """``sampling.method = "sde"``: :func:`sde_sample`, fields ``sampling.sde.<field>``."""

  num_steps: int = 1000    # Euler-Maruyama steps

  section = "sde"

  def __post_init__(self):
    checks.check_fields(self, {"num_steps": checks.POSITIVE_INT})

  def sample(self, key, sde, score_fn, shape, *, eps=None, denoise=True, mesh=None):
    return sde_sample(key, sde, score_fn, shape, num_steps=self.num_steps, eps=eps,
                      denoise=denoise, mesh=mesh)

  @property
  def tag(self) -> str:
    return f"sde_em{self.num_steps}"
