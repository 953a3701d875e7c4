"""EDM's second-order Heun sampler (Karras et al. 2022, Algorithm 2) of the probability-flow ODE,
with optional churn, for any SDE of the library (:mod:`grids`)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from score_sde_jax import checks, parallel
from score_sde_jax.sampling.common import SampleResult, Sampler, checked_result
from score_sde_jax.sampling.dpm_solver import range_tag
from score_sde_jax.sampling.grids import (capped_step, check_grid_fields, checked_grid,
                                          coefficients, data_prediction, float_dtype, grid_for,
                                          log_snr, time_of_log_snr)
from score_sde_jax.score import as_pytree_fn


def check_churn(churn, s_tmin, s_tmax, s_noise) -> None:
  """EDM's churn settings: ``churn``, ``s_noise`` and ``s_tmin`` finite and >= 0, ``s_tmax >=
  s_tmin`` (``inf``: no upper end)."""
  for name, value in (("churn", churn), ("s_tmin", s_tmin), ("s_noise", s_noise)):
    checks.check_value(name, value, checks.NON_NEGATIVE)
  if not (isinstance(s_tmax, (int, float)) and not isinstance(s_tmax, bool) and s_tmax >= s_tmin):
    raise ValueError(f"s_tmax={s_tmax!r}: must be a number >= s_tmin={s_tmin!r} (inf: no upper "
                     f"end)")


def edm_churn_times(sde, ts, *, churn: float, s_tmin: float, s_tmax: float, eps: float):
  """``(hat_t, noise_std)`` (numpy): the times at which each step's ``sigma / alpha`` has grown by
  EDM's churn to ``(1 + gamma_i)`` times its value, ``gamma_i = min(churn / n, sqrt 2 - 1)``
  inside ``[s_tmin, s_tmax]``, and the std of the noise each step adds to ``x / alpha``,
  ``sqrt(hat_s^2 - s^2)``, computed here in float64 and exactly 0 at steps without churn (in a
  float32 program the difference of two equal squares is not always 0: about 2e-4 s per step,
  enough to move a sample to another mode)."""
  n = len(ts) - 1
  alpha, sigma = (np.asarray(v, np.float64) for v in coefficients(sde, ts))
  s = sigma / alpha
  gammas = np.where((s[:-1] >= s_tmin) & (s[:-1] <= s_tmax),
                    min(churn / n, np.sqrt(2.0) - 1.0), 0.0)
  hat = s[:-1] * (1.0 + gammas)
  lam_max = float(log_snr(sde, sde.T))
  lams = np.maximum(-np.log(hat), lam_max)   # beyond T: held at T (gamma then shrinks)
  hat_t = np.where(gammas > 0, np.asarray(time_of_log_snr(sde, jnp.asarray(lams), eps)), ts[:-1])
  hat_alpha, hat_sigma = (np.asarray(v, np.float64) for v in coefficients(sde, hat_t))
  grown = (hat_sigma / hat_alpha) ** 2 - s[:-1] ** 2
  return hat_t, np.where(gammas > 0, np.sqrt(np.maximum(grown, 0.0)), 0.0)


@functools.partial(jax.jit, static_argnames=("sde", "shape", "denoise", "capped", "stochastic",
                                             "mesh"))
def _edm_heun(key, score_fn, ts, hat_ts, noise_std, *, sde, shape, denoise, capped, stochastic,
              mesh):
  key_prior, key_churn = jax.random.split(key)
  x = parallel.constrain_batch(sde.prior_sampling(key_prior, shape), mesh)
  if capped:   # the Heun steps start at sigma_max
    x, ts = parallel.constrain_batch(capped_step(sde, score_fn, x, ts), mesh), ts[1:]
  alphas, sigmas = coefficients(sde, ts)
  hat_alphas, hat_sigmas = coefficients(sde, hat_ts)
  s, hat_s = sigmas / alphas, hat_sigmas / hat_alphas
  y = x / alphas[0]                      # the scaled variable x / alpha

  def denoised(y, t, alpha):
    return data_prediction(sde, score_fn, alpha * y, t)

  def step(y, i):
    y_hat = y
    if stochastic:   # churn > 0 and s_noise > 0; otherwise the ODE sampler, no noise at all
      y_hat = y + noise_std[i] * jax.random.normal(jax.random.fold_in(key_churn, i), shape)
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
  ``sigma = 0`` (one more): EDM's own ``num_steps = 18`` (noise levels: 17 Heun steps and
  that Euler step, 35 evaluations) is ``num_steps = 17`` here, and its ``S_churn`` is
  ``churn = S_churn * 17 / 18``. ``churn`` (S_churn) adds noise ``gamma = min(churn / num_steps,
  sqrt 2 - 1)`` at steps whose ``sigma / alpha`` lies in ``[s_tmin, s_tmax]``, scaled by
  ``s_noise``; without churn (or with ``s_noise = 0``) no noise is added at all, and the
  sampler is the deterministic ODE sampler (the key draws only the prior). ``schedule``, ``sigma_min`` and ``sigma_max``
  as :func:`dpm_solver_sample`, ``schedule="edm"`` by default; a first step from ``T`` down to
  ``sigma_max`` is one DDIM step (EDM's samplers start at ``sigma_max``), the others Heun steps.
  Give low-dimensional data a range that fits its scale: on the ring (radius 2) ``sigma_min=0.01,
  sigma_max=10`` brings 9 Heun steps 3.9x (VP) and 5.4x (sub-VP) closer to the exact
  probability-flow map than the SDE's own range (docs/samplers.md).

  Returns:
    ``SampleResult(samples, nfe)`` with ``nfe = 2 num_steps (+ 1 with denoise)``, one less
    with a step down to ``sigma_max``.
  """
  check_churn(churn, s_tmin, s_tmax, s_noise)
  shape, eps, ts, capped = checked_grid(key, sde, shape, eps, num_steps, schedule, mesh,
                                         "edm_sample", sigma_min, sigma_max)
  hat_ts, noise_std = edm_churn_times(sde, ts[int(capped):], churn=churn, s_tmin=s_tmin,
                                      s_tmax=s_tmax, eps=eps)
  noise_std = noise_std * s_noise
  x = _edm_heun(key, as_pytree_fn(score_fn), jnp.asarray(ts), jnp.asarray(hat_ts),
                jnp.asarray(noise_std, float_dtype()), sde=sde, shape=shape,
                denoise=bool(denoise), capped=capped, stochastic=bool(np.any(noise_std > 0)),
                mesh=mesh)
  return checked_result("edm_sample", x, 2 * num_steps - int(capped) + int(bool(denoise)))


@dataclasses.dataclass(frozen=True)
class EDMSampler(Sampler):
  """``sampling.method = "edm"``: :func:`edm_sample` (EDM's Heun), fields ``sampling.edm.<field>``."""

  num_steps: int = 20      # Heun steps (two score evaluations each)
  schedule: str = "edm"    # time grid: edm (rho = 7) | logsnr | time
  sigma_min: float = 0.0   # noise range of the steps, as sigma / alpha (0: the SDE's own at eps / T)
  sigma_max: float = 0.0
  churn: float = 0.0       # S_churn (0: deterministic)
  s_tmin: float = 0.0      # churn only where sigma / alpha is in [S_tmin, S_tmax]
  s_tmax: float = 1e6
  s_noise: float = 1.0     # S_noise

  section = "edm"
  uses_flow = True

  def __post_init__(self):
    check_grid_fields(self.num_steps, self.schedule, self.sigma_min or None, self.sigma_max or None)
    check_churn(self.churn, self.s_tmin, self.s_tmax, self.s_noise)

  def check(self, sde) -> None:
    grid_for(sde, self.num_steps, sde.sampling_eps, self.schedule, self.sigma_min or None,
             self.sigma_max or None)

  def sample(self, key, sde, score_fn, shape, *, eps=None, denoise=True, mesh=None):
    return edm_sample(key, sde, score_fn, shape, num_steps=self.num_steps,
                      schedule=self.schedule, churn=self.churn, s_tmin=self.s_tmin,
                      s_tmax=self.s_tmax, s_noise=self.s_noise, eps=eps, denoise=denoise,
                      sigma_min=self.sigma_min or None, sigma_max=self.sigma_max or None,
                      mesh=mesh)

  @property
  def tag(self) -> str:
    return (f"edm_{self.schedule}{self.num_steps}" + range_tag(self)
            + (f"_churn{self.churn:g}" if self.churn else ""))
