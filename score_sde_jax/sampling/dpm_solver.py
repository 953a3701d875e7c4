"""DPM-Solver++ (Lu et al. 2022): a multistep exponential integrator of the probability-flow ODE
in log-SNR time, orders 1-3 (order 1 is DDIM), for any SDE of the library (:mod:`grids`)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from score_sde_jax import checks, parallel
from score_sde_jax.sampling.common import SampleResult, Sampler, checked_result
from score_sde_jax.sampling.grids import (capped_step, check_grid_fields, checked_grid,
                                          coefficients, data_prediction, grid_for, log_snr,
                                          time_of_log_snr)
from score_sde_jax.score import as_pytree_fn


# DPM-Solver's reference lowers the final orders only below this many steps ("We only use lower
# order for steps < 10", dpm_solver_pytorch.py's multistep loop); from 10 steps on every step
# keeps the full order.
LOWER_ORDER_FINAL_BELOW = 10


def step_orders(num_steps: int, order: int, lower_order_final: bool,
                total_steps: int | None = None) -> np.ndarray:
  """The order of each of ``num_steps`` steps: rising from 1 while history builds up, and with
  ``lower_order_final`` falling to 1 at the last steps when the sampler takes fewer than
  :data:`LOWER_ORDER_FINAL_BELOW` steps in all (``total_steps``, default ``num_steps``), as
  DPM-Solver's reference does."""
  orders = np.minimum(order, np.arange(1, num_steps + 1))
  total = num_steps if total_steps is None else total_steps
  if lower_order_final and total < LOWER_ORDER_FINAL_BELOW:
    orders = np.minimum(orders, np.arange(num_steps, 0, -1))
  return orders.astype(np.int32)


def check_order(order) -> None:
  if not (checks.POSITIVE_INT[0](order) and order <= 3):
    raise ValueError(f"order={order!r}: expected 1 (DDIM), 2 or 3")


def dpm_solver_update(x, x0s, lams, alpha_t, sigma_t, sigma_s, order):
  """One DPM-Solver++ multistep update of ``x`` at the time of ``lams[1]`` to that of ``lams[0]``.

  ``x0s``: data predictions at the last three times (newest first), ``lams`` their log-SNRs;
  ``order`` 1 (DDIM), 2 or 3 (the official multistep formulas, Lu et al. 2022, Alg. 2)."""
  lam_t, lam_0, lam_1, lam_2 = lams
  m0, m1, m2 = x0s
  h = lam_t - lam_0
  phi_1 = jnp.expm1(-h)
  base = (sigma_t / sigma_s) * x - alpha_t * phi_1 * m0
  r0 = (lam_0 - lam_1) / h
  d1_0 = (m0 - m1) / r0

  def first():
    return base

  def second():
    return base - 0.5 * alpha_t * phi_1 * d1_0

  def third():
    r1 = (lam_1 - lam_2) / h
    d1_1 = (m1 - m2) / r1
    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    phi_2 = phi_1 / h + 1.0
    phi_3 = phi_2 / h - 0.5
    return base + alpha_t * phi_2 * d1 - 2.0 * alpha_t * phi_3 * d2

  return jax.lax.switch(order - 1, (first, second, third))


def singlestep_2s_update(x, m_s, m_mid, h, alpha_t, sigma_t, sigma_s):
  """DPM-Solver++(2S) from ``s`` to ``t`` with the data prediction ``m_mid`` at the log-SNR
  midpoint (``r = 1/2``): local error O(h^3)."""
  phi_1 = jnp.expm1(-h)
  return (sigma_t / sigma_s) * x - alpha_t * phi_1 * m_s - alpha_t * phi_1 * (m_mid - m_s)


@functools.partial(jax.jit, static_argnames=("sde", "shape", "denoise", "first_2s", "capped",
                                             "mesh"))
def _dpm_solver(key, score_fn, ts, orders, t_mid, *, sde, shape, denoise, first_2s, capped, mesh):
  x = parallel.constrain_batch(sde.prior_sampling(key, shape), mesh)
  if capped:   # then the multistep solver starts afresh at sigma_max
    x, ts = parallel.constrain_batch(capped_step(sde, score_fn, x, ts), mesh), ts[1:]
  alphas, sigmas = coefficients(sde, ts)
  lams = jnp.log(alphas) - jnp.log(sigmas)
  m = data_prediction(sde, score_fn, x, ts[0])
  hist = (m, m, m)
  lam_hist = (lams[0], lams[0] + 1.0, lams[0] + 2.0)   # placeholders: unused at orders 1, 2
  start = 1
  if first_2s:   # order 3: a second-order first step, so that the global order is 3
    a_mid, s_mid = coefficients(sde, t_mid)
    x_mid = (s_mid / sigmas[0]) * x - a_mid * jnp.expm1(-(lams[1] - lams[0]) / 2) * m
    m_mid = data_prediction(sde, score_fn, x_mid, t_mid)
    x = singlestep_2s_update(x, m, m_mid, lams[1] - lams[0], alphas[1], sigmas[1], sigmas[0])
    m = data_prediction(sde, score_fn, x, ts[1])
    hist, lam_hist = (m, hist[0], hist[0]), (lams[1], lams[0], lams[0] + 1.0)
    start = 2

  def step(carry, i):
    x, hist, lam_hist = carry
    x = dpm_solver_update(x, hist, (lams[i],) + lam_hist, alphas[i], sigmas[i], sigmas[i - 1],
                          orders[i - 1])
    x = parallel.constrain_batch(x, mesh)
    m = data_prediction(sde, score_fn, x, ts[i])
    return (x, (m,) + hist[:2], (lams[i],) + lam_hist[:2]), None

  n = ts.shape[0] - 1
  if n < start:   # one step in all, taken above
    return data_prediction(sde, score_fn, x, ts[n]) if denoise else x
  # The last step's data prediction is computed only when it is returned (denoise).
  (x, hist, lam_hist), _ = jax.lax.scan(step, (x, hist, lam_hist), jnp.arange(start, n))
  x = dpm_solver_update(x, hist, (lams[n],) + lam_hist, alphas[n], sigmas[n], sigmas[n - 1],
                        orders[n - 1])
  if denoise:
    x = data_prediction(sde, score_fn, x, ts[n])
  return x


def dpm_solver_sample(key, sde, score_fn, shape, *, num_steps: int = 20, order: int = 2,
                      schedule: str = "logsnr", eps=None, denoise: bool = False,
                      lower_order_final: bool = True, sigma_min=None, sigma_max=None,
                      mesh=None) -> SampleResult:
  """Samples with DPM-Solver++ multistep (``order`` 1 = DDIM, 2, 3) in ``num_steps`` steps.

  Each step costs one score evaluation (the data prediction at the step's start, reused by
  the next steps' extrapolation); the first steps rise in order as history builds up. At
  order 3 the first step is DPM-Solver++(2S) (one evaluation more). Measured on Gaussian data
  (float64, log-SNR grid, 16 -> 32 -> 64 steps, without lower_order_final): with the official
  first-order start the error falls by 2^1.8 and 2^1.5 per halving on VE (sigma_max = 5), where
  the first step's O(h^2) local error dominates; on VP and sub-VP both starts give the same
  errors to three digits (2^3.7-4.0 per halving). The 2S start gives 2^4.2-4.6 on VE.
  ``lower_order_final`` (default, as DPM-Solver) lowers the last steps' orders (at order 3:
  to 2, then 1) when ``num_steps`` is below 10, which steadies the fewest-step samples; from 10
  steps on every step keeps ``order``, as in DPM-Solver's reference (lowered at every count, order
  3 at 20 steps was -0.162 nats from exact on the ring against -0.095 at full order).
  ``schedule``: ``logsnr`` (default), ``time`` or ``edm`` (see the module docstring).
  ``denoise=True``: return the data prediction at ``eps`` (DPM-Solver's ``denoise_to_zero``;
  one evaluation more). ``eps`` defaults to the SDE's ``sampling_eps``.
  ``sigma_min`` / ``sigma_max``: the noise range the steps cover, in units of ``sigma / alpha``
  (see :func:`time_steps`; ``None``: the SDE's own range from ``T`` to ``eps``, 0.0105 .. 152
  for the default VP SDE). A step from ``T`` down to ``sigma_max`` is a DDIM step, after which
  the solver starts afresh (its history and orders, and at order 3 the 2S step, begin at
  ``sigma_max``). The SDE's own range suits images (on digits it matched or beat EDM's 0.002 ..
  80); for low-dimensional data give a range that fits the data's scale: on the ring (radius 2)
  ``sigma_min=0.01, sigma_max=10`` brings order 2 at 21 evaluations 1.7x (VP) and 2.8x
  (sub-VP) closer to the exact probability-flow map (docs/samplers.md). With the SDE's own
  range the ``logsnr`` grid is the better one there (``edm``: 2x farther on VP).

  Returns:
    ``SampleResult(samples, nfe)`` with ``nfe = num_steps (+ 1 at order 3) (+ 1 with
    denoise)``.
  """
  check_order(order)
  shape, eps, ts, capped = checked_grid(key, sde, shape, eps, num_steps, schedule, mesh,
                                         "dpm_solver_sample", sigma_min, sigma_max)
  orders = jnp.asarray(step_orders(num_steps - capped, order, lower_order_final, num_steps))
  first_2s = order == 3
  c = int(capped)
  t_mid = time_of_log_snr(sde, (log_snr(sde, ts[c]) + log_snr(sde, ts[c + 1])) / 2, eps)
  x = _dpm_solver(key, as_pytree_fn(score_fn), jnp.asarray(ts), orders, t_mid, sde=sde,
                  shape=shape, denoise=bool(denoise), first_2s=first_2s, capped=capped, mesh=mesh)
  return checked_result("dpm_solver_sample", x, num_steps + int(first_2s) + int(bool(denoise)))




@dataclasses.dataclass(frozen=True)
class DPMSolverSampler(Sampler):
  """``sampling.method = "dpm_solver"``: :func:`dpm_solver_sample` (DPM-Solver++), fields
  ``sampling.dpm_solver.<field>``."""

  order: int = 2           # 1 (DDIM), 2, 3
  num_steps: int = 20      # steps (one score evaluation each)
  schedule: str = "edm"    # time grid: edm (rho = 7) | logsnr | time
  sigma_min: float = 0.0   # noise range of the steps, as sigma / alpha (0: the SDE's own at eps / T)
  sigma_max: float = 0.0

  section = "dpm_solver"
  uses_flow = True

  def __post_init__(self):
    check_order(self.order)
    check_grid_fields(self.num_steps, self.schedule, self.sigma_min or None, self.sigma_max or None)

  def check(self, sde) -> None:
    grid_for(sde, self.num_steps, sde.sampling_eps, self.schedule, self.sigma_min or None,
             self.sigma_max or None)

  def sample(self, key, sde, score_fn, shape, *, eps=None, denoise=True, mesh=None):
    return dpm_solver_sample(key, sde, score_fn, shape, num_steps=self.num_steps,
                             order=self.order, schedule=self.schedule, eps=eps, denoise=denoise,
                             sigma_min=self.sigma_min or None, sigma_max=self.sigma_max or None,
                             mesh=mesh)

  @property
  def tag(self) -> str:
    return f"dpm{self.order}_{self.schedule}{self.num_steps}" + range_tag(self)


def range_tag(options) -> str:
  """``_sigma<min>-<max>`` of a few-step sampler's noise range (``sde``: the SDE's own)."""
  if not (options.sigma_min or options.sigma_max):
    return ""
  lo, hi = (f"{v:g}" if v else "sde" for v in (options.sigma_min, options.sigma_max))
  return f"_sigma{lo}-{hi}"
