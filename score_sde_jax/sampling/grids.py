"""What the few-step probability-flow samplers (:mod:`dpm_solver`, :mod:`edm`) share: the SDE's
kernel coefficients, the data prediction and the time grids.

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

import jax
import jax.numpy as jnp
import numpy as np

from score_sde_jax import checks, parallel

SCHEDULES = ("time", "logsnr", "edm")


# --- The SDE's coefficients and time grids ----------------------------------------------------

def float_dtype():
  return jnp.result_type(float)   # float32, or float64 with jax_enable_x64


def coefficients(sde, t):
  """``(alpha(t), sigma(t))`` of the kernel, for ``t`` of any shape."""
  t = jnp.asarray(t, float_dtype())
  mean, std = sde.marginal_prob(jnp.ones((t.size, 1)), jnp.reshape(t, (-1,)))
  return jnp.reshape(mean[:, 0], t.shape), jnp.reshape(std, t.shape)


def log_snr(sde, t):
  alpha, sigma = coefficients(sde, t)
  return jnp.log(alpha) - jnp.log(sigma)


def time_of_log_snr(sde, lam, eps: float, iters: int = 60):
  """``t`` in ``[eps, T]`` with ``log_snr(t) = lam`` (bisection: the log-SNR decreases in t)."""
  lam = jnp.asarray(lam, float_dtype())
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
    one = jnp.ones((), float_dtype())
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


def check_grid_fields(num_steps, schedule, sigma_min, sigma_max) -> None:
  """The few-step samplers' own settings (``sigma_*`` ``None``: the SDE's own)."""
  checks.check_int("num_steps", num_steps, 1)
  if schedule not in SCHEDULES:
    raise ValueError(f"schedule={schedule!r}: expected one of {list(SCHEDULES)}")
  for name, v in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
    if v is not None:
      checks.check_number(name, v)
  if sigma_min is not None and sigma_max is not None and not sigma_min < sigma_max:
    raise ValueError(f"sigma_max={sigma_max!r}: must be above sigma_min={sigma_min!r}")


def grid_for(sde, num_steps, eps, schedule, sigma_min, sigma_max):
  """The settings checked against ``sde``, then the time grid: ``(ts, capped)``."""
  check_grid_fields(num_steps, schedule, sigma_min, sigma_max)
  check_exponential_form(sde)
  ts = time_steps(sde, num_steps, eps, schedule, sigma_min=sigma_min, sigma_max=sigma_max)
  return ts, is_capped(sde, num_steps, sigma_max)


def checked_grid(key, sde, shape, eps, num_steps, schedule, mesh, what, sigma_min, sigma_max):
  """The checks both samplers share, then their time grid: ``(shape, eps, ts, capped)``."""
  checks.check_key(key, what)
  shape = checks.check_shape(shape)
  eps = checks.check_eps(eps, sde)
  parallel.check_mesh(shape[0], mesh, "shape[0]")
  ts, capped = grid_for(sde, num_steps, eps, schedule, sigma_min, sigma_max)
  return shape, float(ts[-1]), ts, capped


def data_prediction(sde, score_fn, x, t):
  """``x0 = (x + sigma^2 score) / alpha`` at the scalar time ``t``."""
  tb = jnp.full((x.shape[0],), t)
  alpha, sigma = coefficients(sde, t)
  return (x + sigma**2 * score_fn(x, tb)) / alpha


def capped_step(sde, score_fn, x, ts):
  """A capped grid's first step, ``T`` to ``sigma_max`` (one evaluation): a DDIM step, which is
  exact while the data prediction is constant. A higher-order step across a range this wide
  extrapolates the prediction's change instead (measured on the ring, VP, 10 .. 152: EDM's Heun
  step there left -0.16 nats at 49 NFE, this step -0.02)."""
  alphas, sigmas = coefficients(sde, ts[:2])
  h = jnp.log(alphas[1] / sigmas[1]) - jnp.log(alphas[0] / sigmas[0])
  m = data_prediction(sde, score_fn, x, ts[0])
  return (sigmas[1] / sigmas[0]) * x - alphas[1] * jnp.expm1(-h) * m
