"""Few-step samplers of the probability-flow ODE for any SDE of the library: DPM-Solver++
(multistep, orders 1-3; order 1 is DDIM) and EDM's Heun sampler with optional churn.

Every SDE here has a Gaussian kernel ``x_t = alpha(t) x_0 + sigma(t) z`` (``marginal_prob``),
and its probability-flow ODE ``dx = [f(t) x - g(t)^2 score / 2] dt`` has
``f = d log alpha / dt`` and ``g^2 = d sigma^2 / dt - 2 f sigma^2`` (VE, VP and sub-VP all do;
:func:`check_exponential_form` checks a custom SDE). In log-SNR time
``lambda = log(alpha / sigma)`` and with the data prediction
``x0(x, t) = (x + sigma^2 score) / alpha`` the ODE's exact solution is

    x_t = sigma_t / sigma_s x_s + sigma_t * integral_{lambda_s}^{lambda_t} e^lambda x0 dlambda

(Lu et al. 2022, DPM-Solver++), which these solvers integrate with ``x0`` extrapolated from
the last one to three steps; EDM's Heun (Karras et al. 2022, Algorithm 2) integrates
``d(x / alpha) / d(sigma / alpha) = (x / alpha - x0) / (sigma / alpha)``.

Time grids (decreasing from ``T`` to ``eps``, computed on the host from the SDE's own
``marginal_prob``): ``time`` (uniform in t), ``logsnr`` (uniform in lambda, DPM-Solver's
choice) and ``edm`` (``sigma / alpha`` spaced as ``rho = 7`` powers, EDM's choice).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from score_sde_jax import checks, parallel
from score_sde_jax.sampling.common import SampleResult
from score_sde_jax.score import as_pytree_fn

SCHEDULES = ("time", "logsnr", "edm")


# --- The SDE's coefficients and time grids ----------------------------------------------------

def _float():
  return jnp.result_type(float)   # float32, or float64 with jax_enable_x64


def coefficients(sde, t):
  """``(alpha(t), sigma(t))`` of the kernel, for ``t`` of any shape."""
  t = jnp.asarray(t, _float())
  mean, std = sde.marginal_prob(jnp.ones((t.size, 1)), jnp.reshape(t, (-1,)))
  return jnp.reshape(mean[:, 0], t.shape), jnp.reshape(std, t.shape)


def log_snr(sde, t):
  alpha, sigma = coefficients(sde, t)
  return jnp.log(alpha) - jnp.log(sigma)


def time_of_log_snr(sde, lam, eps: float, iters: int = 60):
  """``t`` in ``[eps, T]`` with ``log_snr(t) = lam`` (bisection: the log-SNR decreases in t)."""
  lam = jnp.asarray(lam, _float())
  lo, hi = jnp.full(lam.shape, eps, lam.dtype), jnp.full(lam.shape, sde.T, lam.dtype)
  for _ in range(iters):
    mid = (lo + hi) / 2
    above = log_snr(sde, mid) > lam      # mid is too early: the answer is later
    lo, hi = jnp.where(above, mid, lo), jnp.where(above, hi, mid)
  return (lo + hi) / 2


def is_capped(sde, num_steps: int, sigma_max) -> bool:
  """Whether :func:`time_steps`' first step jumps from ``T`` to ``sigma_max`` (below the SDE's
  ``sigma / alpha`` at ``T``, with more than one step)."""
  return bool(sigma_max is not None and num_steps > 1
              and -np.log(sigma_max) > float(log_snr(sde, sde.T)))


def time_steps(sde, num_steps: int, eps: float, schedule: str = "logsnr", rho: float = 7.0,
               sigma_min=None, sigma_max=None):
  """``num_steps + 1`` decreasing times from ``T`` to ``eps`` (numpy).

  ``sigma_min`` / ``sigma_max`` (EDM's noise range, in units of ``sigma / alpha``; ``None``: the
  SDE's own at ``eps`` / ``T``): the grid ends at the later of ``eps`` and the time where
  ``sigma / alpha = sigma_min``; with ``sigma_max`` below the SDE's ``sigma / alpha`` at ``T``
  the first step goes from ``T`` straight to ``sigma_max`` (exact there while the data
  prediction is constant) and the schedule spreads the other steps over the range."""
  lam_T, lam_eps = (float(log_snr(sde, t)) for t in (sde.T, eps))
  if sigma_min is not None and -np.log(sigma_min) < lam_eps:
    eps = float(time_of_log_snr(sde, jnp.asarray(-np.log(sigma_min)), eps))
    lam_eps = -np.log(sigma_min)
  capped = is_capped(sde, num_steps, sigma_max)
  lam_hi = -np.log(sigma_max) if capped else lam_T
  if capped and lam_hi >= lam_eps:
    raise ValueError(f"sigma_max={sigma_max!r}: must be above the noise level where the steps end "
                     f"(sigma / alpha = {np.exp(-lam_eps):.4g})")
  n = num_steps - int(capped)
  if schedule == "time":
    t_hi = float(time_of_log_snr(sde, jnp.asarray(lam_hi), eps)) if capped else sde.T
    ts = np.linspace(t_hi, eps, n + 1)
    return np.concatenate([[sde.T], ts]) if capped else ts
  if schedule == "logsnr":
    lams = np.linspace(lam_hi, lam_eps, n + 1)
  elif schedule == "edm":
    # sigma / alpha = exp(-lambda), spaced uniformly in its 1/rho power.
    hi, lo = np.exp(-lam_hi) ** (1 / rho), np.exp(-lam_eps) ** (1 / rho)
    lams = -rho * np.log(hi + np.linspace(0.0, 1.0, n + 1) * (lo - hi))
  else:
    raise ValueError(f"schedule={schedule!r}: expected one of {list(SCHEDULES)}")
  inner = lams[:-1] if capped else lams[1:-1]
  t = np.asarray(time_of_log_snr(sde, jnp.asarray(inner), eps), np.float64)
  return np.concatenate([[sde.T], t, [eps]])


def check_exponential_form(sde, ts=(0.05, 0.3, 0.7, 0.95), rtol: float = 1e-3) -> None:
  """Refuses an SDE whose diffusion is not ``g^2 = d sigma^2/dt - 2 f sigma^2`` with
  ``f = d log alpha / dt`` (its probability-flow ODE would not be the one solved here)."""
  for t in ts:
    t = float(t) * sde.T
    one = jnp.ones((), _float())
    alpha, dalpha = jax.jvp(lambda u: coefficients(sde, u)[0], (one * t,), (one,))
    sigma, dsigma = jax.jvp(lambda u: coefficients(sde, u)[1], (one * t,), (one,))
    f_expected = dalpha / alpha
    drift, g = sde.sde(jnp.ones((1, 1)), jnp.full((1,), t))
    g2_expected = 2 * sigma * dsigma - 2 * f_expected * sigma**2
    if not (np.isclose(float(drift[0, 0]), float(f_expected), rtol=rtol, atol=1e-6) and
            np.isclose(float(g[0] ** 2), float(g2_expected), rtol=rtol, atol=1e-6)):
      raise ValueError(f"sde={type(sde).__name__}: its drift and diffusion at t={t:g} are not "
                       f"those of a linear SDE with its marginal_prob (f = d log alpha/dt, "
                       f"g^2 = d sigma^2/dt - 2 f sigma^2); the exponential-integrator samplers "
                       f"need that form")


def _checked_grid(key, sde, shape, eps, num_steps, schedule, mesh, what, sigma_min, sigma_max):
  """The checks both samplers share, then their time grid: ``(shape, eps, ts, capped)``."""
  checks.check_key(key, what)
  shape = checks.check_shape(shape)
  eps = checks.check_eps(eps, sde)
  num_steps = checks.check_int("num_steps", num_steps, 1)
  if schedule not in SCHEDULES:
    raise ValueError(f"schedule={schedule!r}: expected one of {list(SCHEDULES)}")
  for name, v in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
    if v is not None:
      checks.check_number(name, v)
  if sigma_min is not None and sigma_max is not None and not sigma_min < sigma_max:
    raise ValueError(f"sigma_min={sigma_min!r}, sigma_max={sigma_max!r}: need sigma_min < sigma_max")
  check_exponential_form(sde)
  parallel.check_mesh(shape[0], mesh, "shape[0]")
  ts = time_steps(sde, num_steps, eps, schedule, sigma_min=sigma_min, sigma_max=sigma_max)
  return shape, float(ts[-1]), ts, is_capped(sde, num_steps, sigma_max)


def _data_prediction(sde, score_fn, x, t):
  """``x0 = (x + sigma^2 score) / alpha`` at the scalar time ``t``."""
  tb = jnp.full((x.shape[0],), t)
  alpha, sigma = coefficients(sde, t)
  return (x + sigma**2 * score_fn(x, tb)) / alpha


def _capped_step(sde, score_fn, x, ts):
  """A capped grid's first step, ``T`` to ``sigma_max`` (one evaluation): a DDIM step, which is
  exact while the data prediction is constant. A higher-order step across a range this wide
  extrapolates the prediction's change instead (measured on the ring, VP, 10 .. 152: EDM's Heun
  step there left -0.16 nats at 49 NFE, this step -0.02)."""
  alphas, sigmas = coefficients(sde, ts[:2])
  h = jnp.log(alphas[1] / sigmas[1]) - jnp.log(alphas[0] / sigmas[0])
  m = _data_prediction(sde, score_fn, x, ts[0])
  return (sigmas[1] / sigmas[0]) * x - alphas[1] * jnp.expm1(-h) * m


# --- DPM-Solver++ -----------------------------------------------------------------------------

def step_orders(num_steps: int, order: int, lower_order_final: bool) -> np.ndarray:
  """The order of each step: rising from 1 while history builds up, and with
  ``lower_order_final`` falling to 1 at the last steps (DPM-Solver's choice for few steps)."""
  orders = np.minimum(order, np.arange(1, num_steps + 1))
  if lower_order_final:
    orders = np.minimum(orders, np.arange(num_steps, 0, -1))
  return orders.astype(np.int32)


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
    x, ts = parallel.constrain_batch(_capped_step(sde, score_fn, x, ts), mesh), ts[1:]
  alphas, sigmas = coefficients(sde, ts)
  lams = jnp.log(alphas) - jnp.log(sigmas)
  m = _data_prediction(sde, score_fn, x, ts[0])
  hist = (m, m, m)
  lam_hist = (lams[0], lams[0] + 1.0, lams[0] + 2.0)   # placeholders: unused at orders 1, 2
  start = 1
  if first_2s:   # order 3: a second-order first step, so that the global order is 3
    a_mid, s_mid = coefficients(sde, t_mid)
    x_mid = (s_mid / sigmas[0]) * x - a_mid * jnp.expm1(-(lams[1] - lams[0]) / 2) * m
    m_mid = _data_prediction(sde, score_fn, x_mid, t_mid)
    x = singlestep_2s_update(x, m, m_mid, lams[1] - lams[0], alphas[1], sigmas[1], sigmas[0])
    m = _data_prediction(sde, score_fn, x, ts[1])
    hist, lam_hist = (m, hist[0], hist[0]), (lams[1], lams[0], lams[0] + 1.0)
    start = 2

  def step(carry, i):
    x, hist, lam_hist = carry
    x = dpm_solver_update(x, hist, (lams[i],) + lam_hist, alphas[i], sigmas[i], sigmas[i - 1],
                          orders[i - 1])
    x = parallel.constrain_batch(x, mesh)
    m = _data_prediction(sde, score_fn, x, ts[i])
    return (x, (m,) + hist[:2], (lams[i],) + lam_hist[:2]), None

  n = ts.shape[0] - 1
  if n < start:   # one step in all, taken above
    return _data_prediction(sde, score_fn, x, ts[n]) if denoise else x
  # The last step's data prediction is computed only when it is returned (denoise).
  (x, hist, lam_hist), _ = jax.lax.scan(step, (x, hist, lam_hist), jnp.arange(start, n))
  x = dpm_solver_update(x, hist, (lams[n],) + lam_hist, alphas[n], sigmas[n], sigmas[n - 1],
                        orders[n - 1])
  if denoise:
    x = _data_prediction(sde, score_fn, x, ts[n])
  return x


def dpm_solver_sample(key, sde, score_fn, shape, *, num_steps: int = 20, order: int = 2,
                      schedule: str = "logsnr", eps=None, denoise: bool = False,
                      lower_order_final: bool = True, sigma_min=None, sigma_max=None,
                      mesh=None) -> SampleResult:
  """Samples with DPM-Solver++ multistep (``order`` 1 = DDIM, 2, 3) in ``num_steps`` steps.

  Each step costs one score evaluation (the data prediction at the step's start, reused by
  the next steps' extrapolation); the first steps rise in order as history builds up. At
  order 3 the first step is DPM-Solver++(2S) (one evaluation more): with the official
  first-order start, the one O(h^2) local error of that step limits the global order to 2
  (measured on Gaussian data: error ratios 2^2.0 per halving instead of 2^3).
  ``lower_order_final`` (default, as DPM-Solver for few steps) lowers the last two steps'
  orders to 2 and 1, which is steadier at 10-20 steps and of global order 2.
  ``schedule``: ``logsnr`` (default), ``time`` or ``edm`` (see the module docstring).
  ``denoise=True``: return the data prediction at ``eps`` (DPM-Solver's ``denoise_to_zero``;
  one evaluation more). ``eps`` defaults to the SDE's ``sampling_eps``.
  ``sigma_min`` / ``sigma_max``: the noise range the steps cover, in units of ``sigma / alpha``
  (see :func:`time_steps`; ``None``: the SDE's own range from ``T`` to ``eps``). A step from
  ``T`` down to ``sigma_max`` is a DDIM step, after which the solver starts afresh (its
  history and orders, and at order 3 the 2S step, begin at ``sigma_max``).

  Returns:
    ``SampleResult(samples, nfe)`` with ``nfe = num_steps (+ 1 at order 3) (+ 1 with
    denoise)``.
  """
  if order not in (1, 2, 3):
    raise ValueError(f"order={order!r}: expected 1, 2 or 3")
  shape, eps, ts, capped = _checked_grid(key, sde, shape, eps, num_steps, schedule, mesh,
                                         "dpm_solver_sample", sigma_min, sigma_max)
  orders = jnp.asarray(step_orders(num_steps - capped, order, lower_order_final))
  first_2s = order == 3
  c = int(capped)
  t_mid = time_of_log_snr(sde, (log_snr(sde, ts[c]) + log_snr(sde, ts[c + 1])) / 2, eps)
  x = _dpm_solver(key, as_pytree_fn(score_fn), jnp.asarray(ts), orders, t_mid, sde=sde,
                  shape=shape, denoise=bool(denoise), first_2s=first_2s, capped=capped, mesh=mesh)
  return SampleResult(x, num_steps + int(first_2s) + int(bool(denoise)))


# --- EDM's Heun sampler -------------------------------------------------------------------------

def edm_churn_times(sde, ts, *, churn: float, s_tmin: float, s_tmax: float, eps: float):
  """The times at which each step's ``sigma / alpha`` has grown by EDM's churn to ``(1 + gamma_i)``
  times its value, ``gamma_i = min(churn / n, sqrt 2 - 1)`` inside ``[s_tmin, s_tmax]`` (numpy)."""
  n = len(ts) - 1
  alpha, sigma = (np.asarray(v, np.float64) for v in coefficients(sde, ts))
  s = sigma / alpha
  gammas = np.where((s[:-1] >= s_tmin) & (s[:-1] <= s_tmax),
                    min(churn / n, np.sqrt(2.0) - 1.0), 0.0)
  hat = s[:-1] * (1.0 + gammas)
  lam_max = float(log_snr(sde, sde.T))
  lams = np.maximum(-np.log(hat), lam_max)   # beyond T: held at T (gamma then shrinks)
  hat_t = np.where(gammas > 0, np.asarray(time_of_log_snr(sde, jnp.asarray(lams), eps)), ts[:-1])
  return hat_t


@functools.partial(jax.jit, static_argnames=("sde", "shape", "denoise", "capped", "mesh"))
def _edm_heun(key, score_fn, ts, hat_ts, s_noise, *, sde, shape, denoise, capped, mesh):
  key_prior, key_churn = jax.random.split(key)
  x = parallel.constrain_batch(sde.prior_sampling(key_prior, shape), mesh)
  if capped:   # the Heun steps start at sigma_max
    x, ts = parallel.constrain_batch(_capped_step(sde, score_fn, x, ts), mesh), ts[1:]
  alphas, sigmas = coefficients(sde, ts)
  hat_alphas, hat_sigmas = coefficients(sde, hat_ts)
  s, hat_s = sigmas / alphas, hat_sigmas / hat_alphas
  y = x / alphas[0]                      # the scaled variable x / alpha

  def denoised(y, t, alpha):
    return _data_prediction(sde, score_fn, alpha * y, t)

  def step(y, i):
    z = jax.random.normal(jax.random.fold_in(key_churn, i), shape)
    y_hat = y + jnp.sqrt(jnp.maximum(hat_s[i] ** 2 - s[i] ** 2, 0.0)) * s_noise * z
    d = (y_hat - denoised(y_hat, hat_ts[i], hat_alphas[i])) / hat_s[i]
    y_next = y_hat + (s[i + 1] - hat_s[i]) * d
    d_next = (y_next - denoised(y_next, ts[i + 1], alphas[i + 1])) / s[i + 1]
    y_next = y_hat + (s[i + 1] - hat_s[i]) * (d + d_next) / 2
    return parallel.constrain_batch(y_next, mesh), None

  y, _ = jax.lax.scan(step, y, jnp.arange(ts.shape[0] - 1))
  n = ts.shape[0] - 1
  if denoise:   # EDM's last step to sigma = 0 (an Euler step, which lands on the prediction)
    return denoised(y, ts[n], alphas[n])
  return alphas[n] * y


def edm_sample(key, sde, score_fn, shape, *, num_steps: int = 18, schedule: str = "edm",
               churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
               s_noise: float = 1.0, eps=None, denoise: bool = True, sigma_min=None,
               sigma_max=None, mesh=None) -> SampleResult:
  """Samples with EDM's second-order Heun sampler (Karras et al. 2022, Algorithm 2) on the
  SDE's ``sigma / alpha`` parameterisation: ``num_steps`` Heun steps from ``T`` to ``eps``
  (two score evaluations each) and, with ``denoise``, EDM's final Euler step to
  ``sigma = 0`` (one more). ``churn`` (S_churn) adds noise ``gamma = min(churn / num_steps,
  sqrt 2 - 1)`` at steps whose ``sigma / alpha`` lies in ``[s_tmin, s_tmax]``, scaled by
  ``s_noise`` (0: the deterministic ODE sampler). ``schedule``, ``sigma_min`` and ``sigma_max``
  as :func:`dpm_solver_sample`, ``schedule="edm"`` by default; a first step from ``T`` down to
  ``sigma_max`` is one DDIM step (EDM's samplers start at ``sigma_max``), the others Heun steps.

  Returns:
    ``SampleResult(samples, nfe)`` with ``nfe = 2 num_steps (+ 1 with denoise)``, one less
    with a step down to ``sigma_max``.
  """
  churn = checks.check_number("churn", churn, positive=False)
  s_noise = checks.check_number("s_noise", s_noise, positive=False)
  if churn < 0 or s_noise < 0:
    raise ValueError(f"churn={churn!r}, s_noise={s_noise!r}: must be >= 0")
  if not (s_tmin >= 0 and s_tmax >= s_tmin):
    raise ValueError(f"s_tmin={s_tmin!r}, s_tmax={s_tmax!r}: need 0 <= s_tmin <= s_tmax")
  shape, eps, ts, capped = _checked_grid(key, sde, shape, eps, num_steps, schedule, mesh,
                                         "edm_sample", sigma_min, sigma_max)
  hat_ts = edm_churn_times(sde, ts[int(capped):], churn=churn, s_tmin=s_tmin, s_tmax=s_tmax,
                           eps=eps)
  x = _edm_heun(key, as_pytree_fn(score_fn), jnp.asarray(ts), jnp.asarray(hat_ts),
                jnp.asarray(s_noise, _float()), sde=sde, shape=shape, denoise=bool(denoise),
                capped=capped, mesh=mesh)
  return SampleResult(x, 2 * num_steps - int(capped) + int(bool(denoise)))
