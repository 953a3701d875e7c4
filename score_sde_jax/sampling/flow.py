"""The probability-flow ODE (eq. 13), solved per example with diffrax.

One solve serves sampling (:func:`ode_sample`), paths for figures, the
likelihood (with the divergence integrated alongside), encoding and decoding:
:func:`solve_flow`. Each example is solved on its own step sizes (the solve is
``vmap``-ped and, with a mesh, each device solves its own rows under
``shard_map``), so a result does not depend on the rest of its batch. There is
one solver table, one ``max_steps`` default and one NFE rule (:func:`flow_nfe`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import optimistix as optx

from score_sde_jax import checks, parallel
from score_sde_jax.sampling.common import SampleResult, Sampler, checked_result
from score_sde_jax.sampling.predictors import denoise as denoise_step
from score_sde_jax.score import as_pytree_fn

SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "euler": diffrax.Euler,
           "heun": diffrax.Heun}
MAX_STEPS = 16384


def get_solver(solver):
  """A diffrax solver from a name in :data:`SOLVERS` or a diffrax solver object.

  Objects must be Euler or explicit Runge-Kutta solvers, whose score
  evaluations per step are known (so the NFE is exact).
  """
  if isinstance(solver, str):
    if solver not in SOLVERS:
      raise ValueError(f"solver={solver!r}: unknown; known: {sorted(SOLVERS)} or a diffrax "
                       f"solver object")
    return SOLVERS[solver]()
  if isinstance(solver, diffrax.Euler) or (
      isinstance(solver, diffrax.AbstractERK) and getattr(solver, "tableau", None) is not None):
    return solver
  raise ValueError(f"solver={solver!r}: expected a name in {sorted(SOLVERS)}, diffrax.Euler() or "
                   f"an explicit Runge-Kutta solver (diffrax.Tsit5(), diffrax.Bosh3(), ...)")


def _evals(solver):
  """``(per_step, at_start)``: score evaluations of a step, and once at the start.

  A Runge-Kutta step evaluates every stage; first-same-as-last solvers reuse
  the last stage of a step as the first of the next, so they pay one
  evaluation at the start and one less per step. Rejected steps count.
  """
  if isinstance(solver, diffrax.Euler):
    return 1, 0
  tableau = solver.tableau
  stages = len(tableau.c) + 1
  return (stages - 1, 1) if tableau.fsal else (stages, 0)


def flow_nfe(solver, num_steps):
  """Score evaluations of a solve that took ``num_steps`` steps (accepted and rejected)."""
  per_step, at_start = _evals(get_solver(solver))
  return at_start + per_step * num_steps


def per_example_drift(sde, score_fn, probability_flow=True):
  """``drift(x, t)`` for one example (``x`` without batch axis) of the probability-flow ODE,
  or of the reverse-time SDE with ``probability_flow=False``."""
  rsde = sde.reverse(score_fn, probability_flow=probability_flow)
  return lambda x, t: rsde.sde(x[None], jnp.reshape(t, (1,)))[0][0]


def _divergence_field(drift, kind):
  """``(x, t, probe) -> (f, div f)`` with the exact trace or a Hutchinson estimate."""
  if kind == "exact":
    def field(x, t, probe):
      f_x = lambda y: drift(y, t)
      value = f_x(x)
      # Trace of the Jacobian from one forward-mode product per basis vector.
      basis = jnp.eye(x.size, dtype=x.dtype).reshape((x.size,) + x.shape)
      columns = jax.vmap(lambda e: jax.jvp(f_x, (x,), (e,))[1])(basis)
      return value, jnp.sum(columns.reshape(x.size, x.size).diagonal())
  else:
    def field(x, t, probe):
      value, jv = jax.jvp(lambda y: drift(y, t), (x,), (probe,))
      return value, jnp.sum(probe * jv)  # E[v^T J v] = tr J for E[v v^T] = I
  return field


class FlowSolution(NamedTuple):
  ys: jax.Array           # (B, ...) at t1, or (B, K, ...) at save_ts
  delta_logp: jax.Array   # (B,) integral of the divergence (zeros without one)
  num_steps: jax.Array    # (B,) steps taken per example
  status: jax.Array       # (B,) int32: SOLVED, NON_FINITE or OUT_OF_STEPS (check_solution)


SOLVED, NON_FINITE, OUT_OF_STEPS = 0, 1, 2


class SolveError(ValueError):
  """A probability-flow solve that did not reach its end: a non-finite drift, or max_steps."""


def check_solution(status, what: str, max_steps: int) -> None:
  """One clear error for solves that stopped early (``status`` from :class:`FlowSolution`).

  ``status`` may be sharded across processes (a multi-host evaluation): every process gathers
  all of it, so all raise the same error or none does."""
  status = parallel.to_host(status)
  n, bad, slow = status.size, int((status == NON_FINITE).sum()), int((status == OUT_OF_STEPS).sum())
  if bad:
    raise SolveError(f"{what}: the probability-flow drift became NaN or infinite for {bad} of {n} "
                     f"examples, so their solves stopped there: the score returned non-finite "
                     f"values (NaN or infinite weights, inputs far outside the data, or an "
                     f"overflow); check the checkpoint and the inputs")
  if slow:
    raise SolveError(f"{what}: {slow} of {n} adaptive solves reached max_steps={max_steps} "
                     f"before their end time: the tolerances (rtol, atol) are too tight for this "
                     f"score, or the score is too rough for an adaptive solver; loosen them or "
                     f"raise max_steps")


def _guarded(field):
  """``field(t, state, args)`` on the state ``(inner, flag)``: the inner field where every value
  is finite; where not, zeros (so the step is accepted rather than rejected until max_steps) and
  ``d flag / dt = 1``, which stops the solve at the end of that step (the solve's event; the flag
  is then non-zero, negative for a solve backwards in time)."""
  def guarded(t, state, args):
    out = field(t, state[0], args)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(out)]))
    out = jax.tree.map(lambda v: jnp.where(finite, v, jnp.zeros_like(v)), out)
    return out, jnp.where(finite, 0.0, 1.0).astype(state[1].dtype)
  return guarded


def _inner_rms_norm(state):
  """The default controller's norm on the inner state alone: the step sizes are those of the
  unguarded solve."""
  return optx.rms_norm(state[0])


def _solve_examples(y, probes, score_fn, t0, t1, rtol, atol, save_ts, *, sde, solver,
                    controller, num_steps, max_steps, divergence, progress=False):
  drift = per_example_drift(sde, score_fn)
  if divergence is None:
    term = diffrax.ODETerm(_guarded(lambda t, x, args: drift(x, t)))
  else:
    field = _divergence_field(drift, divergence)
    term = diffrax.ODETerm(_guarded(lambda t, state, probe: field(state[0], t, probe)))
  if num_steps is not None:
    controller, dt0 = diffrax.ConstantStepSize(), (t1 - t0) / num_steps
  else:
    controller = controller or diffrax.PIDController(rtol=rtol, atol=atol, norm=_inner_rms_norm)
    dt0 = None
  saveat = diffrax.SaveAt(t1=True) if save_ts is None else diffrax.SaveAt(ts=save_ts)
  # diffrax's own bar: the share of [t0, t1] covered (under vmap, by the slowest example)
  meter = diffrax.TqdmProgressMeter(refresh_steps=10) if progress else diffrax.NoProgressMeter()

  # The flag moves away from 0 (down when the solve runs backwards in time) once a drift is bad.
  event = diffrax.Event(lambda t, state, args, **kwargs: state[1] != 0)

  def solve_one(y0, probe):
    inner = y0 if divergence is None else (y0, jnp.zeros((), y0.dtype))
    sol = diffrax.diffeqsolve(term, solver, t0=t0, t1=t1, dt0=dt0,
                              y0=(inner, jnp.zeros((), y0.dtype)), args=probe, stepsize_controller=controller, max_steps=max_steps,
                              saveat=saveat, progress_meter=meter, event=event, throw=False)
    inner_ys, flags = sol.ys
    ys, delta = (inner_ys, jnp.zeros((1,), y0.dtype)) if divergence is None else inner_ys
    status = jnp.where(jnp.any(flags != 0) | (sol.result == diffrax.RESULTS.event_occurred),
                       NON_FINITE,
                       jnp.where(sol.result == diffrax.RESULTS.successful, SOLVED, OUT_OF_STEPS))
    return ((ys[0] if save_ts is None else ys), delta[-1], sol.stats["num_steps"],
            status.astype(jnp.int32))

  return jax.vmap(solve_one)(y, probes)


def solve_flow(sde, score_fn, y, t0, t1, *, solver, rtol=1e-5, atol=1e-5, controller=None,
               num_steps=None, max_steps=MAX_STEPS, save_ts=None, divergence=None, probes=None,
               mesh=None, progress=False) -> FlowSolution:
  """Solves the probability-flow ODE from ``t0`` to ``t1`` for each row of ``y`` (traceable).

  ``t1 < t0`` runs backwards (sampling, decoding). Adaptive steps
  (``controller``, default ``PIDController(rtol, atol)``) unless ``num_steps``
  fixes them. ``save_ts`` saves each path at those times. With ``divergence``
  (``"exact"``, or a Hutchinson kind with ``probes`` shaped like ``y``) the
  state carries ``delta_logp = int_t0^t1 div f dt`` alongside. ``mesh``: each
  device solves its rows (``shard_map``), so no device waits for another's
  step count. ``progress``: diffrax's progress bar over ``[t0, t1]`` (without a mesh). Call it
  inside ``jit`` with ``sde``, ``solver`` (an object), ``controller``, ``num_steps``,
  ``max_steps``, ``divergence``, ``mesh`` and ``progress`` static.
  """
  y = parallel.constrain_batch(y, mesh)
  probes = jnp.zeros_like(y) if probes is None else parallel.constrain_batch(probes, mesh)
  solve = functools.partial(_solve_examples, sde=sde, solver=solver, controller=controller,
                            num_steps=num_steps, max_steps=max_steps, divergence=divergence,
                            progress=bool(progress) and mesh is None)
  return FlowSolution(*parallel.map_shards(solve, mesh, (y, probes),
                                           (score_fn, t0, t1, rtol, atol, save_ts)))


def check_flow_args(solver, controller, num_steps, rtol=1e-5, atol=1e-5):
  """The solver object, and ``num_steps`` as an int or ``None``, checked before tracing (with
  the tolerances of an adaptive solve: not both 0, which no step can meet)."""
  solver = get_solver(solver)
  if num_steps is None and controller is None:
    rtol = checks.check_number("rtol", rtol, positive=False)
    atol = checks.check_number("atol", atol, positive=False)
    if rtol < 0 or atol < 0:
      raise ValueError(f"rtol={rtol!r}, atol={atol!r}: tolerances must be >= 0")
    if rtol == 0 and atol == 0:
      raise ValueError("rtol=0, atol=0: an adaptive solve needs a positive tolerance (no step "
                       "meets an error of exactly 0); the paper's are 1e-5 and 1e-5")
  if num_steps is not None:
    num_steps = checks.check_int("num_steps", num_steps, 1)
    if controller is not None:
      raise ValueError("num_steps and stepsize_controller: give one (fixed steps, or a controller)")
  elif controller is None and not isinstance(solver, diffrax.AbstractAdaptiveSolver):
    raise ValueError(f"solver={solver!r}: not adaptive; give num_steps for fixed steps, or use "
                     f"tsit5 / dopri5 (or another adaptive solver)")
  return solver, num_steps


@functools.partial(jax.jit, static_argnames=("sde", "shape", "solver", "controller", "num_steps",
                                             "max_steps", "denoise", "mesh"))
def _ode_sample(key, z, score_fn, rtol, atol, eps, *, sde, shape, solver, controller, num_steps,
                max_steps, denoise, mesh):
  x = sde.prior_sampling(key, shape) if z is None else z
  sol = solve_flow(sde, score_fn, x, sde.T, eps, solver=solver, rtol=rtol, atol=atol,
                   controller=controller, num_steps=num_steps, max_steps=max_steps, mesh=mesh)
  x = sol.ys
  if denoise:
    x = denoise_step(sde, score_fn, x, eps)
  return x, jnp.max(sol.num_steps), sol.status


def ode_sample(key, sde, score_fn, shape, *, rtol=1e-5, atol=1e-5, solver="tsit5", eps=None,
               denoise=True, z=None, num_steps=None, stepsize_controller=None,
               max_steps=MAX_STEPS, mesh=None) -> SampleResult:
  """Samples by solving the probability-flow ODE (eq. 13) from ``T`` to ``eps`` with diffrax.

  Adaptive (``PIDController(rtol, atol)``, or ``stepsize_controller``) with
  ``solver`` ``tsit5`` / ``dopri5`` (or any adaptive explicit diffrax solver
  object), or fixed steps with ``num_steps`` (``euler``, ``heun``, or any
  solver). Each example is solved on its own step sizes, so a sample does not
  depend on the rest of the batch. ``z`` (shape ``shape``) is a latent to
  decode instead of a prior draw (then ``key`` may be ``None``); ``denoise``
  adds the paper's final noise-free reverse-diffusion step. ``eps`` defaults
  to the SDE's ``sampling_eps``. ``mesh`` splits the batch over its devices;
  each device runs its own solves, and the samples equal those of one device.

  Returns:
    ``SampleResult(samples, nfe)``: ``nfe`` is the number of score
    evaluations (:func:`flow_nfe`, the largest over the batch, i.e. the number
    of batched network calls), plus one for ``denoise``.
  """
  shape = checks.check_shape(shape)
  if z is None:
    checks.check_key(key, "ode_sample without a latent z (the prior draw)")
  else:
    z = checks.check_points("z", z)
    if z.shape != shape:
      raise ValueError(f"z: shape {z.shape}, expected {shape}")
  eps = checks.check_eps(eps, sde)
  solver, num_steps = check_flow_args(solver, stepsize_controller, num_steps, rtol, atol)
  parallel.check_mesh(shape[0], mesh, "shape[0]")
  x, steps, status = _ode_sample(key, z, as_pytree_fn(score_fn), rtol, atol, eps, sde=sde,
                                 shape=shape, solver=solver, controller=stepsize_controller,
                                 num_steps=num_steps, max_steps=max_steps, denoise=denoise,
                                 mesh=mesh)
  check_solution(status, "ode_sample", max_steps)
  return checked_result("ode_sample", x, flow_nfe(solver, int(steps)) + int(denoise))


@dataclasses.dataclass(frozen=True)
class ODESampler(Sampler):
  """``sampling.method = "ode"``: :func:`ode_sample`, fields ``sampling.ode.<field>``."""

  solver: str = "tsit5"    # tsit5 | dopri5 (adaptive), euler | heun (fixed steps, or heun adaptive)
  rtol: float = 1e-5       # tolerances of the adaptive step-size controller
  atol: float = 1e-5
  num_steps: int = 0       # fixed steps (0: adaptive)

  section = "ode"
  uses_flow = True

  def __post_init__(self):
    checks.check_fields(self, {"solver": checks.one_of(SOLVERS), "rtol": checks.POSITIVE,
                               "atol": checks.POSITIVE, "num_steps": checks.NON_NEGATIVE_INT})

  def check(self, sde) -> None:
    check_flow_args(self.solver, None, self.num_steps or None)

  def sample(self, key, sde, score_fn, shape, *, eps=None, denoise=True, mesh=None):
    return ode_sample(key, sde, score_fn, shape, rtol=self.rtol, atol=self.atol,
                      solver=self.solver, eps=eps, denoise=denoise,
                      num_steps=self.num_steps or None, mesh=mesh)

  @property
  def tag(self) -> str:
    return f"ode_{self.solver}" + (f"{self.num_steps}" if self.num_steps else "")
