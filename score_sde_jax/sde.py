"""Forward SDEs of Song et al. (ICLR 2021) and their reverse-time counterparts.

Each SDE is an immutable value (a frozen dataclass of Python scalars) whose
methods are pure, jit-able functions of their arguments, with the method names
of the paper's code (``sde``, ``marginal_prob``, ``prior_sampling``,
``prior_logp``, ``discretize``, ``reverse``). Shapes: ``x`` is ``(B, ...)``,
``t`` is ``(B,)``; per-example scalars such as the diffusion are ``(B,)``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def batch_mul(a: jax.Array, x: jax.Array) -> jax.Array:
  """Multiplies a per-example scalar ``a`` of shape ``(B,)`` into ``x`` ``(B, ...)``."""
  a = jnp.asarray(a)
  return a.reshape(a.shape + (1,) * (x.ndim - a.ndim)) * x


def _sum_except_batch(x: jax.Array) -> jax.Array:
  return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def _n_dims(x: jax.Array) -> int:
  return int(np.prod(x.shape[1:]))


class SDE:
  """Shared methods. Subclasses define ``sde``, ``marginal_prob``,
  ``prior_sampling`` and ``prior_logp``; ``discretize`` defaults to one
  Euler-Maruyama step of size ``T / N``."""

  N: int
  T: float = 1.0

  def discretize(self, x, t):
    """One step of the discretised SDE: ``x_{i+1} = x_i + f + G z``.

    Returns ``(f, G)``, with ``f`` shaped like ``x`` and ``G`` ``(B,)``.
    """
    dt = self.T / self.N
    drift, diffusion = self.sde(x, t)
    return drift * dt, diffusion * jnp.sqrt(dt)

  def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> "ReverseSDE":
    """The reverse-time SDE (eq. 6), or the probability-flow ODE (eq. 13)."""
    return ReverseSDE(self, score_fn, probability_flow)

  def marginal_mean_coeff_std(self, t):
    """``(a(t), s(t))`` of the linear perturbation kernel ``x_t = a x_0 + s z``."""
    ones = jnp.ones((jnp.shape(t)[0], 1))
    mean, std = self.marginal_prob(ones, t)
    return mean[:, 0], std


@dataclasses.dataclass(frozen=True)
class ReverseSDE:
  """Reverse-time SDE ``dx = [f - g^2 score] dt + g dw`` (time running T -> 0).

  With ``probability_flow=True``: the ODE ``dx = [f - g^2 score / 2] dt``,
  whose diffusion is zero. ``sde`` and ``discretize`` keep the forward
  methods' signatures; the time step is understood as negative.
  """

  forward: SDE
  score_fn: ScoreFn
  probability_flow: bool = False

  @property
  def N(self):
    return self.forward.N

  @property
  def T(self):
    return self.forward.T

  def _weight(self):
    return 0.5 if self.probability_flow else 1.0

  def sde(self, x, t):
    drift, diffusion = self.forward.sde(x, t)
    score = self.score_fn(x, t)
    drift = drift - batch_mul(diffusion**2, score) * self._weight()
    diffusion = jnp.zeros_like(diffusion) if self.probability_flow else diffusion
    return drift, diffusion

  def discretize(self, x, t):
    f, G = self.forward.discretize(x, t)
    rev_f = f - batch_mul(G**2, self.score_fn(x, t)) * self._weight()
    rev_G = jnp.zeros_like(G) if self.probability_flow else G
    return rev_f, rev_G


def _standard_normal_logp(z):
  n = _n_dims(z)
  return -0.5 * n * jnp.log(2 * jnp.pi) - 0.5 * _sum_except_batch(z**2)


def _check_positive(name, value):
  if not (isinstance(value, (int, float)) and value > 0):
    raise ValueError(f"{name}={value!r}: must be a positive number")


def _check_n(N):
  if not (isinstance(N, int) and N >= 2):
    raise ValueError(f"N={N!r}: must be an integer >= 2 (the number of discretisation steps)")


class _LinearBeta(SDE):
  """Shared by VP and sub-VP: ``beta(t) = beta_min + t (beta_max - beta_min)``, N(0, I) prior."""

  beta_min: float
  beta_max: float

  def __post_init__(self):
    _check_positive("beta_min", self.beta_min)
    _check_positive("beta_max", self.beta_max)
    if self.beta_max < self.beta_min:
      raise ValueError(f"beta_max={self.beta_max!r}: must be >= beta_min={self.beta_min!r}")
    _check_n(self.N)

  def beta(self, t):
    return self.beta_min + t * (self.beta_max - self.beta_min)

  def _log_mean_coeff(self, t):
    return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

  def prior_sampling(self, key, shape):
    return jax.random.normal(key, shape)

  def prior_logp(self, z):
    return _standard_normal_logp(z)


@dataclasses.dataclass(frozen=True)
class VPSDE(_LinearBeta):
  """Variance-preserving SDE ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw`` (DDPM).

  ``beta(t) = beta_min + t (beta_max - beta_min)``; the discrete chain uses
  ``beta_i = beta(t_i) / N`` as DDPM does.
  """

  beta_min: float = 0.1
  beta_max: float = 20.0
  N: int = 1000
  T: float = 1.0

  # Discrete-time quantities of DDPM, computed on demand so the value stays a
  # tuple of scalars (hashable, a static argument under jit).
  @property
  def discrete_betas(self):
    return jnp.linspace(self.beta_min / self.N, self.beta_max / self.N, self.N)

  @property
  def alphas(self):
    return 1.0 - self.discrete_betas

  @property
  def alphas_cumprod(self):
    return jnp.cumprod(self.alphas)

  @property
  def sqrt_alphas_cumprod(self):
    return jnp.sqrt(self.alphas_cumprod)

  @property
  def sqrt_1m_alphas_cumprod(self):
    return jnp.sqrt(1.0 - self.alphas_cumprod)

  def sde(self, x, t):
    beta_t = self.beta(t)
    return -0.5 * batch_mul(beta_t, x), jnp.sqrt(beta_t)

  def marginal_prob(self, x, t):
    log_mean_coeff = self._log_mean_coeff(t)
    mean = batch_mul(jnp.exp(log_mean_coeff), x)
    std = jnp.sqrt(1.0 - jnp.exp(2.0 * log_mean_coeff))
    return mean, std

  def discretize(self, x, t):
    """DDPM's step: ``x_{i+1} = sqrt(1 - beta_i) x_i + sqrt(beta_i) z``."""
    timestep = (t * (self.N - 1) / self.T).astype(jnp.int32)
    beta = self.discrete_betas[timestep]
    alpha = self.alphas[timestep]
    f = batch_mul(jnp.sqrt(alpha), x) - x
    return f, jnp.sqrt(beta)


@dataclasses.dataclass(frozen=True)
class subVPSDE(_LinearBeta):
  """Sub-VP SDE ``dx = -beta(t) x / 2 dt + sqrt(beta(t) (1 - e^{-2 int_0^t beta})) dw``.

  Its marginal variance is bounded by the VP SDE's; ``discretize`` is the
  Euler-Maruyama step, as in the paper's code.
  """

  beta_min: float = 0.1
  beta_max: float = 20.0
  N: int = 1000
  T: float = 1.0


  def sde(self, x, t):
    beta_t = self.beta(t)
    discount = 1.0 - jnp.exp(-2 * self.beta_min * t - (self.beta_max - self.beta_min) * t**2)
    return -0.5 * batch_mul(beta_t, x), jnp.sqrt(beta_t * discount)

  def marginal_prob(self, x, t):
    log_mean_coeff = self._log_mean_coeff(t)
    mean = batch_mul(jnp.exp(log_mean_coeff), x)
    std = 1.0 - jnp.exp(2.0 * log_mean_coeff)
    return mean, std



@dataclasses.dataclass(frozen=True)
class VESDE(SDE):
  """Variance-exploding SDE ``dx = sqrt(d sigma^2(t) / dt) dw`` (SMLD / NCSN).

  ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``. As in the paper,
  ``marginal_prob`` returns ``std = sigma(t)``: the kernel from data already
  perturbed by ``sigma_min`` (the forward SDE started at exact data gives
  ``sqrt(sigma(t)^2 - sigma_min^2)``).
  """

  sigma_min: float = 0.01
  sigma_max: float = 50.0
  N: int = 1000
  T: float = 1.0

  def __post_init__(self):
    _check_positive("sigma_min", self.sigma_min)
    _check_positive("sigma_max", self.sigma_max)
    if self.sigma_max <= self.sigma_min:
      raise ValueError(f"sigma_max={self.sigma_max!r}: must be > sigma_min={self.sigma_min!r}")
    _check_n(self.N)

  @property
  def discrete_sigmas(self):
    return jnp.exp(jnp.linspace(np.log(self.sigma_min), np.log(self.sigma_max), self.N))

  def sigma(self, t):
    return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

  def sde(self, x, t):
    sigma = self.sigma(t)
    diffusion = sigma * np.sqrt(2 * (np.log(self.sigma_max) - np.log(self.sigma_min)))
    return jnp.zeros_like(x), diffusion

  def marginal_prob(self, x, t):
    return x, self.sigma(t)

  def prior_sampling(self, key, shape):
    return jax.random.normal(key, shape) * self.sigma_max

  def prior_logp(self, z):
    n = _n_dims(z)
    return (-0.5 * n * jnp.log(2 * jnp.pi * self.sigma_max**2)
            - 0.5 * _sum_except_batch(z**2) / self.sigma_max**2)

  def discretize(self, x, t):
    """SMLD's step: ``x_{i+1} = x_i + sqrt(sigma_{i+1}^2 - sigma_i^2) z``."""
    timestep = (t * (self.N - 1) / self.T).astype(jnp.int32)
    sigmas = self.discrete_sigmas
    sigma = sigmas[timestep]
    adjacent_sigma = jnp.where(timestep == 0, 0.0, sigmas[jnp.maximum(timestep - 1, 0)])
    f = jnp.zeros_like(x)
    G = jnp.sqrt(sigma**2 - adjacent_sigma**2)
    return f, G


SDES = {"vpsde": VPSDE, "subvpsde": subVPSDE, "vesde": VESDE}


def simulate_forward(key, sde: SDE, x0, t_end: float, num_steps: int, *, save_every: int = 1):
  """Euler-Maruyama paths of the forward SDE from ``t = 0`` to ``t_end``.

  Returns ``(ts, xs)`` with ``ts`` of shape ``(K,)`` and ``xs`` ``(K, B, ...)``,
  ``K = num_steps // save_every + 1``. Used for figures and for Monte-Carlo
  checks of ``marginal_prob``.
  """
  if num_steps % save_every:
    raise ValueError(f"num_steps={num_steps} must be a multiple of save_every={save_every}")
  dt = t_end / num_steps
  b = x0.shape[0]

  def step(x, inputs):
    t, k = inputs
    drift, diffusion = sde.sde(x, jnp.full((b,), t))
    z = jax.random.normal(k, x.shape, x.dtype)
    return x + drift * dt + batch_mul(diffusion * jnp.sqrt(dt), z), None

  def chunk(x, inputs):
    ts, ks = inputs
    x, _ = jax.lax.scan(step, x, (ts, ks))
    return x, x

  ts = jnp.arange(num_steps) * dt
  keys = jax.random.split(key, num_steps)
  n_chunks = num_steps // save_every
  _, xs = jax.lax.scan(chunk, x0, (ts.reshape(n_chunks, save_every),
                                   keys.reshape((n_chunks, save_every) + keys.shape[1:])))
  xs = jnp.concatenate([x0[None], xs], axis=0)
  return jnp.linspace(0.0, t_end, n_chunks + 1), xs
