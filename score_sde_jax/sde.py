"""Forward SDEs of Song et al. (ICLR 2021) and their reverse-time counterparts.

One module over 300 lines on purpose: the base class's contract and the three SDEs of the paper,
each one class owning everything specific to it (a new SDE is one more class).

Each SDE is an immutable value (a frozen dataclass of Python scalars) whose
methods are pure, jit-able functions of their arguments, with the method names
of the paper's code (``sde``, ``marginal_prob``, ``prior_sampling``,
``prior_logp``, ``discretize``, ``reverse``). Shapes: ``x`` is ``(B, ...)``,
``t`` is ``(B,)`` or a scalar (broadcast over the batch); per-example scalars
such as the diffusion are ``(B,)``.

An SDE class owns everything specific to it, so samplers, losses, the
likelihood and ``get_score_fn`` never ask which SDE they hold:

- the continuous coefficients, the perturbation kernel and the prior;
- its discrete chain, if it has one (DDPM for VP, SMLD / NCSN for VE): one
  method maps a time to an index on the chain (``chain_index``, one rounding
  rule per chain), and every chain quantity is looked up through it;
- the reverse-diffusion step (``discretize``), the ancestral step and the
  Langevin corrector's ``alpha``;
- its default smallest sampling time ``sampling_eps``;
- the network parameterisation: the time label a network receives
  (``time_label``) and how its output becomes a score (``output_to_score``),
  as EDM's ``VPPrecond`` / ``VEPrecond`` own ``c_noise`` and ``c_out``.

A new SDE is one subclass of :class:`SDE` that defines ``sde``,
``marginal_prob`` (written for ``t`` of shape ``(B,)``; the base class
broadcasts a scalar ``t`` for them) and ``N``: the defaults (a Gaussian prior from the kernel at
``T``, Euler-Maruyama discretisation, the noise-prediction parameterisation)
make it work with every sampler, the likelihood and ``get_score_fn``.

Discrete chains take an optional ``num_steps``: the number of levels of the
chain a sampler steps through (its time grid). ``None`` means ``N``, the
training chain; an SDE value is never rewritten to change it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from score_sde_jax.checks import check_int, check_number

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]

# DDPM was trained with integer steps 0..999; continuous VP-type models keep that input
# scale (label 999 t) so the sinusoidal embedding sees the same range.
VP_LABEL_SCALE = 999.0


def batch_mul(a: jax.Array, x: jax.Array) -> jax.Array:
  """Multiplies a per-example scalar ``a`` of shape ``(B,)`` into ``x`` ``(B, ...)``."""
  a = jnp.asarray(a)
  return a.reshape(a.shape + (1,) * (x.ndim - a.ndim)) * x


def sum_except_batch(x: jax.Array) -> jax.Array:
  return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def batch_times(t, x: jax.Array) -> jax.Array:
  """``t`` as a ``(B,)`` array for ``x`` of shape ``(B, ...)``: a scalar is broadcast.

  Every SDE method and every score function built here accepts a scalar time
  this way; any other shape than ``()`` or ``(B,)`` is refused.
  """
  t = jnp.asarray(t)
  if not jnp.issubdtype(t.dtype, jnp.floating):
    t = t.astype(jnp.result_type(float))
  b = x.shape[0]
  if t.ndim == 0:
    return jnp.broadcast_to(t, (b,))
  if t.shape != (b,):
    raise ValueError(f"t: shape {t.shape}, expected () or ({b},) for x of shape {x.shape}")
  return t


def _standard_normal_logp(z, var=1.0):
  n = int(np.prod(z.shape[1:]))
  return -0.5 * n * jnp.log(2 * jnp.pi * var) - 0.5 * sum_except_batch(z**2) / var


def _log_expm1(b):
  """``log(e^b - 1)`` for ``b > 0``, without overflow for large ``b``."""
  big = b > 1.0
  return jnp.where(big, b + jnp.log1p(-jnp.exp(-jnp.where(big, b, 1.0))),
                   jnp.log(jnp.expm1(jnp.where(big, 1.0, b))))


def _broadcasting_t(method):
  """Wraps ``method(self, x, t)`` so that ``t`` reaches it as ``(B,)`` (a scalar is broadcast)."""
  @functools.wraps(method)
  def wrapped(self, x, t):
    return method(self, x, batch_times(t, x))
  return wrapped


def _set_fields(obj, **values):
  for name, value in values.items():
    object.__setattr__(obj, name, value)


class SDE:
  """Base class of forward SDEs ``dx = f(x, t) dt + g(t) dw`` on ``[0, T]``.

  Subclasses define ``sde``, ``marginal_prob`` and the field ``N`` (the length
  of the discrete chain a model is trained on; also the default number of
  sampling steps). Every other method has a default that holds for any SDE
  with a Gaussian perturbation kernel ``x_t = a(t) x_0 + s(t) z``.
  """

  N: int
  T: float = 1.0
  # Whether the SDE has a discrete-time chain (ancestral sampling, discrete-time training).
  has_discrete_chain = False
  # Default smallest time of sampling (the paper's 1e-3; VE uses 1e-5).
  sampling_eps = 1e-3
  # Whether networks for it may output the score unscaled and be divided by sigma (VE).
  supports_scale_by_sigma = False
  # The Langevin corrector's signal-to-noise ratio when a sampler is given none (the
  # ``langevin_snr`` property below decides it for SDEs that do not set it).
  VE_TYPE_SNR = 0.16    # the paper's VE value
  VP_TYPE_SNR = 0.05    # measured on VP-type SDEs (docs/samplers.md)

  def __init_subclass__(cls, **kwargs):
    # A subclass writes sde and marginal_prob for t of shape (B,); callers may pass a scalar.
    super().__init_subclass__(**kwargs)
    for name in ("sde", "marginal_prob"):
      if name in cls.__dict__:
        setattr(cls, name, _broadcasting_t(cls.__dict__[name]))

  def __post_init__(self):
    _set_fields(self, N=check_int("N", self.N, 2), T=check_number("T", self.T))
    try:   # the samplers and likelihoods compile per SDE: it is a static (hashed) argument
      hash(self)
    except TypeError as e:
      raise TypeError(
          f"{type(self).__name__}: an SDE must be hashable (the compiled samplers take it as a "
          f"static argument); declare the class @dataclasses.dataclass(frozen=True), with "
          f"fields of numbers, strings or tuples (a plain @dataclass has no hash: {e})") from None

  # --- The continuous process ---------------------------------------------------------------

  def sde(self, x, t):
    """Drift ``f(x, t)`` shaped like ``x`` and diffusion ``g(t)`` ``(B,)``."""
    raise NotImplementedError

  def marginal_prob(self, x, t):
    """Mean ``(B, ...)`` and std ``(B,)`` of the perturbation kernel ``p_0t(x_t | x_0 = x)``."""
    raise NotImplementedError

  def _prior_std(self):
    return self.marginal_prob(jnp.zeros((1, 1)), jnp.full((1,), self.T))[1][0]

  def prior_sampling(self, key, shape):
    """Draws from the prior ``p_T``; by default ``N(0, s(T)^2 I)`` from the kernel at ``T``."""
    return jax.random.normal(key, shape) * self._prior_std()

  def prior_logp(self, z):
    """Log-density of the prior at ``z`` ``(B, ...)``, ``(B,)``."""
    return _standard_normal_logp(z, self._prior_std() ** 2)

  def drift_divergence(self, x, t, probe=None):
    """``div_x f(x, t)`` ``(B,)``: by default Hutchinson's unbiased ``probe . (df/dx) probe``
    (one forward-mode product; ``probe`` shaped like ``x``, Rademacher or Gaussian). The
    paper's SDEs have affine drifts and override this with the exact value."""
    if probe is None:
      raise ValueError(f"{type(self).__name__}.drift_divergence: needs a probe (its drift has "
                       f"no closed-form divergence)")
    t = batch_times(t, x)
    _, jvp = jax.jvp(lambda y: self.sde(y, t)[0], (x,), (probe,))
    return sum_except_batch(probe * jvp)

  # --- Likelihood weighting (Song, Durkan, Murray & Ermon 2021, "ScoreFlow") ---------------

  # Points of the grid in log t on which the default sampler tabulates the weight's integral.
  LIKELIHOOD_TABLE_SIZE = 4097

  def likelihood_weight(self, t):
    """``w(t) = g(t)^2 / s(t)^2``, the density (up to its total) of importance-sampled times.

    Likelihood-weighted DSM, ``g^2 |score + z / s|^2``, is ``w(t) |s score + z|^2``: drawing
    ``t`` in proportion to ``w`` leaves the plain DSM term, without ``w``'s ``1 / t`` spike near
    ``t = 0`` (VP-type SDEs) that makes the uniform-time estimator's variance large.
    """
    t = jnp.asarray(t, jnp.result_type(float))
    flat = t.reshape(-1)
    x = jnp.zeros((flat.shape[0], 1), flat.dtype)
    g = self.sde(x, flat)[1]
    s = self.marginal_prob(x, flat)[1]
    return (jnp.broadcast_to(g, flat.shape) ** 2 / s**2).reshape(t.shape)

  def _likelihood_weight_table(self, eps):
    # The trapezoidal rule in u = log t (dt = t du) on LIKELIHOOD_TABLE_SIZE points.
    u = jnp.linspace(jnp.log(eps), jnp.log(self.T), self.LIKELIHOOD_TABLE_SIZE)
    f = self.likelihood_weight(jnp.exp(u)) * jnp.exp(u)
    steps = 0.5 * (f[1:] + f[:-1]) * jnp.diff(u)
    return u, jnp.concatenate([jnp.zeros(1, steps.dtype), jnp.cumsum(steps)])

  def likelihood_weight_integral(self, t, eps):
    """``W(t) = int_eps^t w(s) ds``, the unnormalised distribution function of the times that
    :meth:`sample_likelihood_time` draws. By default the trapezoidal rule on a grid in ``log t``
    (the distribution that the default sampler draws from exactly); the paper's SDEs have
    closed forms."""
    u, cum = self._likelihood_weight_table(eps)
    return jnp.interp(jnp.log(jnp.asarray(t, jnp.result_type(float))), u, cum)

  def sample_likelihood_time(self, key, shape, eps):
    """Times on ``[eps, T]`` with density ``p(t)`` proportional to :meth:`likelihood_weight`,
    and the ratio ``w(t) / p(t)`` that keeps an estimator unbiased.

    With ``t ~ p``, ``E[ratio(t) h(t)] = int_eps^T w(t) h(t) dt`` for any ``h``: so
    ``ratio |s score + z|^2 / (T - eps)`` estimates the uniform-time likelihood-weighted DSM
    objective. Where ``W`` has a closed-form inverse (VP, sub-VP, VE) ``p = w / W(T)`` exactly
    and the ratio is the constant ``W(T)``. By default (any other SDE) ``W`` is tabulated on a
    grid in ``log t`` and inverted by linear interpolation; the ratio is then computed from the
    density actually sampled (piecewise constant in ``log t``), so the estimator stays unbiased
    however coarse the grid.

    Returns ``(t, ratio)``, both of ``shape``.
    """
    u, cum = self._likelihood_weight_table(eps)
    c = jax.random.uniform(key, shape, cum.dtype) * cum[-1]
    k = jnp.clip(jnp.searchsorted(cum, c, side="right") - 1, 0, cum.shape[0] - 2)
    du, dw = u[k + 1] - u[k], cum[k + 1] - cum[k]
    t = jnp.clip(jnp.exp(u[k] + jnp.clip((c - cum[k]) / dw, 0.0, 1.0) * du), eps, self.T)
    return t, self.likelihood_weight(t) * t * cum[-1] * du / dw

  def _sample_by_inverse(self, key, shape, eps, integral, inverse):
    # W(t) = integral(t) - integral(eps), inverted in closed form: p = w / W(T) exactly.
    start = integral(jnp.asarray(eps, jnp.result_type(float)))
    total = integral(jnp.asarray(self.T, jnp.result_type(float))) - start
    c = jax.random.uniform(key, shape, total.dtype) * total
    return jnp.clip(inverse(start + c), eps, self.T), jnp.full(shape, total)

  def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> "ReverseSDE":
    """The reverse-time SDE (eq. 6), or the probability-flow ODE (eq. 13)."""
    return ReverseSDE(self, score_fn, probability_flow)

  # --- Discretisation ------------------------------------------------------------------------

  def chain_length(self, num_steps=None) -> int:
    return self.N if num_steps is None else num_steps

  def chain_index(self, t, num_steps=None):
    """Index of time ``t`` on a chain of ``num_steps`` levels (default ``N``) over ``[0, T]``.

    The level at or below ``t``: ``floor(t (n - 1) / T)``, as the paper's
    chains truncate, nudged up by 4 float32 ulps so that the chain's own times
    ``i T / (n - 1)`` map to ``i`` despite round-off. Clipped to ``[0, n - 1]``.
    """
    n = self.chain_length(num_steps)
    index = jnp.floor(t * ((n - 1) / self.T) * (1.0 + 2.0**-21))
    return jnp.clip(index, 0, n - 1).astype(jnp.int32)

  def chain_time(self, index, num_steps=None):
    """The time of level ``index`` (the inverse of :meth:`chain_index` on the chain)."""
    n = self.chain_length(num_steps)
    return index.astype(jnp.result_type(float)) / ((n - 1) / self.T)

  def discretize(self, x, t, num_steps=None):
    """One step of the discretised SDE: ``x_{i+1} = x_i + f + G z``.

    Returns ``(f, G)``, with ``f`` shaped like ``x`` and ``G`` ``(B,)``. By
    default one Euler-Maruyama step of size ``T / num_steps`` (``N`` if not given).
    """
    t = batch_times(t, x)
    dt = self.T / self.chain_length(num_steps)
    drift, diffusion = self.sde(x, t)
    return drift * dt, diffusion * jnp.sqrt(dt)

  def _no_chain(self, what):
    return ValueError(f"{what}: needs an SDE with a discrete-time chain (VPSDE and VESDE only), "
                      f"not {type(self).__name__}")

  def ancestral_step(self, x, score, t, num_steps=None):
    """Ancestral sampling's step (eq. 47 / 48) from level ``i`` down to ``i - 1``: ``(x_mean, std)``."""
    raise self._no_chain("predictor='ancestral_sampling'")

  def discrete_marginal(self, x0, index):
    """``(mean, std)`` of the training chain's level ``index`` ``(B,)`` given ``x0``."""
    raise self._no_chain("discrete-time training (continuous=False), defined for VESDE (SMLD) "
                         "and VPSDE (DDPM)")

  @property
  def langevin_snr(self) -> float:
    """The Langevin corrector's default signal-to-noise ratio (``pc_sample(snr=None)``): for an
    SDE that keeps the data's scale (the kernel's mean at ``T`` above half of ``x_0``: VE-type)
    the paper's 0.16, tuned on CIFAR-10 with VE; for one that shrinks the data into its prior
    (VP-type), for which the paper tuned none (its VP configs run no corrector), 0.05. On the
    ring with the exact score, PC-1000's mean log-density at 0.16 is 0.025 (sub-VP), 0.013 (VP
    written on this base class) and 0.020 (VE) nats below exact draws', and within 0.004 of
    them at 0.05 (docs/samplers.md); VP's own DDPM-chain predictor is 0.02-0.03 below at every
    snr. Images were not measured here."""
    mean, _ = self.marginal_prob(jnp.ones((1, 1)), jnp.full((1,), self.T))
    return self.VE_TYPE_SNR if float(mean.reshape(())) > 0.5 else self.VP_TYPE_SNR

  def langevin_alpha(self, t, num_steps=None):
    """The factor ``alpha_i`` of the Langevin corrector's step size (1 without a chain)."""
    return jnp.ones_like(jnp.asarray(t, jnp.result_type(float)))

  def check_chain_length(self, num_steps: int, *, divides_by_alpha: bool = False) -> None:
    """Refuses a chain of ``num_steps`` levels that chain-based steps (reverse diffusion,
    ancestral sampling, the Langevin ``alpha``) cannot use; any length by default.
    ``divides_by_alpha``: a step divides by ``sqrt(alpha_i)`` (ancestral sampling)."""

  # --- Network parameterisation --------------------------------------------------------------

  def time_label(self, t, continuous: bool = True):
    """The label a network receives for time ``t`` ``(B,)``: ``999 t`` by default.

    SDEs without a discrete chain use this label whatever ``continuous`` says
    (as the paper's code does for sub-VP).
    """
    return t * VP_LABEL_SCALE

  def flow_continuous(self, continuous: bool) -> bool:
    """The ``continuous`` convention of the score that the probability-flow ODE uses (ODE
    sampling, likelihood, encode / decode) for a network trained with ``continuous``; by
    default the training one."""
    return continuous

  def check_scale_by_sigma(self, scale_by_sigma: bool) -> None:
    """Refuses ``scale_by_sigma=True`` for a parameterisation that has no such scaling."""
    if scale_by_sigma and not self.supports_scale_by_sigma:
      raise ValueError(f"scale_by_sigma=True: {type(self).__name__}'s network predicts the noise "
                       f"and its output is divided by std(t) already; only VESDE scales by sigma")

  def output_to_score(self, output, t, continuous: bool = True, scale_by_sigma: bool = False):
    """The score from a network output: by default the noise prediction ``-output / std(t)``."""
    self.check_scale_by_sigma(scale_by_sigma)
    std = self.marginal_prob(jnp.zeros_like(output), t)[1]
    return batch_mul(-1.0 / std, output)


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
    t = batch_times(t, x)
    drift, diffusion = self.forward.sde(x, t)
    score = self.score_fn(x, t)
    drift = drift - batch_mul(diffusion**2, score) * self._weight()
    diffusion = jnp.zeros_like(diffusion) if self.probability_flow else diffusion
    return drift, diffusion

  def discretize(self, x, t, num_steps=None):
    t = batch_times(t, x)
    f, G = self.forward.discretize(x, t, num_steps)
    rev_f = f - batch_mul(G**2, self.score_fn(x, t)) * self._weight()
    rev_G = jnp.zeros_like(G) if self.probability_flow else G
    return rev_f, rev_G


class _LinearBeta(SDE):
  """VP and sub-VP: ``beta(t) = beta_min + t (beta_max - beta_min)`` and the N(0, I) prior."""

  beta_min: float
  beta_max: float

  def __post_init__(self):
    super().__post_init__()
    _set_fields(self, beta_min=check_number("beta_min", self.beta_min),
                beta_max=check_number("beta_max", self.beta_max))
    if self.beta_max < self.beta_min:
      raise ValueError(f"beta_max={self.beta_max!r}: must be >= beta_min={self.beta_min!r}")

  def beta(self, t):
    return self.beta_min + t * (self.beta_max - self.beta_min)

  def _log_mean_coeff(self, t):
    return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

  def prior_sampling(self, key, shape):
    return jax.random.normal(key, shape)

  def prior_logp(self, z):
    return _standard_normal_logp(z)

  def drift_divergence(self, x, t, probe=None):
    """Exact: ``-beta(t) D / 2`` (the drift ``-beta x / 2``)."""
    del probe
    d = int(np.prod(x.shape[1:]))
    return -0.5 * d * self.beta(batch_times(t, x))

  def _integrated_beta(self, t):
    """``B(t) = int_0^t beta = beta_min t + (beta_max - beta_min) t^2 / 2``."""
    return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

  def _time_of_integrated_beta(self, b):
    """The inverse of :meth:`_integrated_beta` (the positive root, in its stable form)."""
    d = self.beta_max - self.beta_min
    return 2.0 * b / (self.beta_min + jnp.sqrt(self.beta_min**2 + 2.0 * d * b))

  def likelihood_weight_integral(self, t, eps):
    return self._weight_antiderivative(t) - self._weight_antiderivative(eps)

  def sample_likelihood_time(self, key, shape, eps):
    return self._sample_by_inverse(key, shape, eps, self._weight_antiderivative,
                                   self._weight_antiderivative_inverse)

  langevin_snr = SDE.VP_TYPE_SNR

  def discrete_betas_for(self, num_steps=None):
    """DDPM's ``beta_i = beta(t_i) / n`` on a chain of ``n`` levels (default ``N``)."""
    n = self.chain_length(num_steps)
    return jnp.linspace(self.beta_min / n, self.beta_max / n, n)

  def check_chain_length(self, num_steps: int, *, divides_by_alpha: bool = False) -> None:
    """DDPM's ``alpha_i = 1 - beta_i`` must not be negative, ``beta_max / n <= 1`` (10 levels of
    the default schedule gave NaN samples without a word), and positive where a step divides
    by it (ancestral sampling)."""
    ratio = self.beta_max / num_steps
    if ratio > 1 or (divides_by_alpha and ratio >= 1):
      least = math.floor(self.beta_max) + 1 if divides_by_alpha else math.ceil(self.beta_max)
      raise ValueError(
          f"num_steps={num_steps}: the DDPM chain of {num_steps} levels has beta_max / "
          f"num_steps = {ratio:g}, so alpha = 1 - beta is "
          f"{'not positive' if divides_by_alpha else 'negative'} (NaN samples); use "
          f"num_steps >= {least} for this predictor and corrector, or the euler_maruyama "
          f"predictor without a corrector")

  def langevin_alpha(self, t, num_steps=None):
    """``alpha_i = 1 - beta_i`` of the DDPM chain at ``t``.

    The paper reads ``sde.alphas``, which its sub-VP SDE lacks (its corrector
    crashes there); sub-VP has VP's drift and beta schedule, so it uses the
    same chain here.
    """
    return 1.0 - self.discrete_betas_for(num_steps)[self.chain_index(t, num_steps)]


@dataclasses.dataclass(frozen=True)
class VPSDE(_LinearBeta):
  """Variance-preserving SDE ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw`` (DDPM).

  ``beta(t) = beta_min + t (beta_max - beta_min)``; the discrete chain is
  DDPM's with ``beta_i = beta(t_i) / N``, indexed by step (0 = least noise).
  """

  beta_min: float = 0.1
  beta_max: float = 20.0
  N: int = 1000
  T: float = 1.0

  has_discrete_chain = True

  # Discrete-time quantities of DDPM's training chain, computed on demand so the value stays a
  # tuple of scalars (hashable, a static argument under jit).
  @property
  def discrete_betas(self):
    return self.discrete_betas_for()

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
    std = jnp.sqrt(-jnp.expm1(2.0 * log_mean_coeff))  # 1 - exp(-x) loses digits at tiny t
    return mean, std

  def _weight_antiderivative(self, t):
    # w = beta / (1 - e^-B): in B, int dB / (1 - e^-B) = log(e^B - 1).
    return _log_expm1(self._integrated_beta(jnp.asarray(t, jnp.result_type(float))))

  def _weight_antiderivative_inverse(self, a):
    return self._time_of_integrated_beta(jax.nn.softplus(a))   # B = log(1 + e^a)

  def discretize(self, x, t, num_steps=None):
    """DDPM's step: ``x_{i+1} = sqrt(1 - beta_i) x_i + sqrt(beta_i) z``."""
    beta = self.discrete_betas_for(num_steps)[self.chain_index(batch_times(t, x), num_steps)]
    f = batch_mul(jnp.sqrt(1.0 - beta), x) - x
    return f, jnp.sqrt(beta)

  def ancestral_step(self, x, score, t, num_steps=None):
    """DDPM's ancestral step (eq. 47): ``x_mean = (x + beta_i s) / sqrt(1 - beta_i)``, std ``sqrt(beta_i)``."""
    beta = self.discrete_betas_for(num_steps)[self.chain_index(batch_times(t, x), num_steps)]
    return batch_mul(1.0 / jnp.sqrt(1.0 - beta), x + batch_mul(beta, score)), jnp.sqrt(beta)

  def discrete_marginal(self, x0, index):
    return batch_mul(self.sqrt_alphas_cumprod[index], x0), self.sqrt_1m_alphas_cumprod[index]

  def time_label(self, t, continuous=True):
    """``999 t`` for continuous models; for DDPM ones the step ``(N - 1) t`` (a float, as the paper)."""
    return t * VP_LABEL_SCALE if continuous else t * (self.N - 1)

  def flow_continuous(self, continuous):
    """Always ``True``, as the paper's ODE sampler and likelihood build their score: a DDPM
    network's label ``(N - 1) t`` is smooth in ``t`` (``999 t`` at ``N = 1000``), but DDPM's
    ``sqrt(1 - alphabar_i)`` is piecewise constant, jumping at every chain step (by up to 48%
    in the first steps, and 10x off the kernel's std near ``t = 1e-5``), which an ODE solver
    should not integrate; the kernel's std is smooth."""
    del continuous
    return True

  def output_to_score(self, output, t, continuous=True, scale_by_sigma=False):
    """``-output / std``: the kernel's std, or DDPM's ``sqrt(1 - alphabar_i)`` for discrete models."""
    if continuous or scale_by_sigma:
      return super().output_to_score(output, t, continuous, scale_by_sigma)
    return batch_mul(-1.0 / self.sqrt_1m_alphas_cumprod[self.chain_index(t)], output)


@dataclasses.dataclass(frozen=True)
class subVPSDE(_LinearBeta):
  """Sub-VP SDE ``dx = -beta(t) x / 2 dt + sqrt(beta(t) (1 - e^{-2 int_0^t beta})) dw``.

  Its marginal variance is bounded by the VP SDE's. It has no discrete chain:
  ``discretize`` is the Euler-Maruyama step and networks always get the
  continuous label, as in the paper's code.
  """

  beta_min: float = 0.1
  beta_max: float = 20.0
  N: int = 1000
  T: float = 1.0

  def sde(self, x, t):
    beta_t = self.beta(t)
    discount = -jnp.expm1(-2 * self.beta_min * t - (self.beta_max - self.beta_min) * t**2)
    return -0.5 * batch_mul(beta_t, x), jnp.sqrt(beta_t * discount)

  def marginal_prob(self, x, t):
    log_mean_coeff = self._log_mean_coeff(t)
    mean = batch_mul(jnp.exp(log_mean_coeff), x)
    std = -jnp.expm1(2.0 * log_mean_coeff)
    return mean, std

  def _weight_antiderivative(self, t):
    # w = beta (1 - e^-2B) / (1 - e^-B)^2 = beta (1 + e^-B) / (1 - e^-B):
    # in B, its antiderivative is 2 log(e^B - 1) - B.
    b = self._integrated_beta(jnp.asarray(t, jnp.result_type(float)))
    return 2.0 * _log_expm1(b) - b

  def _weight_antiderivative_inverse(self, a):
    # (v - 1)^2 / v = e^a with v = e^B: v - 1 = e^a (1 + sqrt(1 + 4 e^-a)) / 2.
    return self._time_of_integrated_beta(
        jax.nn.softplus(a + jnp.log(0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * jnp.exp(-a))))))


@dataclasses.dataclass(frozen=True)
class VESDE(SDE):
  """Variance-exploding SDE ``dx = sqrt(d sigma^2(t) / dt) dw`` (SMLD / NCSN).

  ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``. As in the paper,
  ``marginal_prob`` returns ``std = sigma(t)``: the kernel from data already
  perturbed by ``sigma_min`` (the forward SDE started at exact data gives
  ``sqrt(sigma(t)^2 - sigma_min^2)``). The discrete chain is NCSN's geometric
  noise levels, indexed as NCSN does (0 = ``sigma_max``).
  """

  sigma_min: float = 0.01
  sigma_max: float = 50.0
  N: int = 1000
  T: float = 1.0

  has_discrete_chain = True
  sampling_eps = 1e-5
  supports_scale_by_sigma = True
  langevin_snr = SDE.VE_TYPE_SNR

  def __post_init__(self):
    super().__post_init__()
    _set_fields(self, sigma_min=check_number("sigma_min", self.sigma_min),
                sigma_max=check_number("sigma_max", self.sigma_max))
    if self.sigma_max <= self.sigma_min:
      raise ValueError(f"sigma_max={self.sigma_max!r}: must be > sigma_min={self.sigma_min!r}")

  def discrete_sigmas_for(self, num_steps=None):
    """Noise levels ``sigma(i / (n - 1))`` in increasing order, on a chain of ``n`` levels."""
    n = self.chain_length(num_steps)
    return jnp.exp(jnp.linspace(np.log(self.sigma_min), np.log(self.sigma_max), n))

  @property
  def discrete_sigmas(self):
    return self.discrete_sigmas_for()

  def sigma(self, t):
    return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

  def sde(self, x, t):
    sigma = self.sigma(t)
    diffusion = sigma * np.sqrt(2 * (np.log(self.sigma_max) - np.log(self.sigma_min)))
    return jnp.zeros_like(x), diffusion

  def marginal_prob(self, x, t):
    return x, self.sigma(t)

  def drift_divergence(self, x, t, probe=None):
    """Exact: 0 (no drift)."""
    del probe
    return jnp.zeros(x.shape[:1], x.dtype)

  def likelihood_weight_integral(self, t, eps):
    """``w = 2 log(sigma_max / sigma_min)`` is constant: importance sampling is uniform time."""
    return self.likelihood_weight(jnp.asarray(t)) * (jnp.asarray(t) - eps)

  def sample_likelihood_time(self, key, shape, eps):
    t = jax.random.uniform(key, shape, jnp.result_type(float), eps, self.T)
    return t, jnp.full(shape, 2.0 * np.log(self.sigma_max / self.sigma_min) * (self.T - eps))

  def prior_sampling(self, key, shape):
    return jax.random.normal(key, shape) * self.sigma_max

  def prior_logp(self, z):
    return _standard_normal_logp(z, self.sigma_max**2)

  def chain_index(self, t, num_steps=None):
    """NCSN's noise-level index of ``t`` (0 = ``sigma_max``): the nearest level,
    ``round((T - t)(n - 1) / T)``, as the paper's labels. Clipped to ``[0, n - 1]``."""
    n = self.chain_length(num_steps)
    return jnp.clip(jnp.round((self.T - t) * ((n - 1) / self.T)), 0, n - 1).astype(jnp.int32)

  def chain_time(self, index, num_steps=None):
    n = self.chain_length(num_steps)
    return self.T - index.astype(jnp.result_type(float)) / ((n - 1) / self.T)

  def _sigma_and_below(self, t, num_steps):
    """``sigma_i`` at ``t`` and the next smaller level (0 below the smallest)."""
    n = self.chain_length(num_steps)
    up = (n - 1) - self.chain_index(t, num_steps)  # index into the increasing levels
    sigmas = self.discrete_sigmas_for(num_steps)
    return sigmas[up], jnp.where(up == 0, 0.0, sigmas[jnp.maximum(up - 1, 0)])

  def discretize(self, x, t, num_steps=None):
    """SMLD's step: ``x_{i+1} = x_i + sqrt(sigma_{i+1}^2 - sigma_i^2) z``."""
    sigma, below = self._sigma_and_below(batch_times(t, x), num_steps)
    return jnp.zeros_like(x), jnp.sqrt(sigma**2 - below**2)

  def ancestral_step(self, x, score, t, num_steps=None):
    """SMLD's ancestral step (eq. 48)."""
    sigma, below = self._sigma_and_below(batch_times(t, x), num_steps)
    x_mean = x + batch_mul(sigma**2 - below**2, score)
    return x_mean, jnp.sqrt(below**2 * (sigma**2 - below**2) / sigma**2)

  def discrete_marginal(self, x0, index):
    return x0, self.discrete_sigmas[::-1][index]

  def time_label(self, t, continuous=True):
    """``sigma(t)`` for continuous models; NCSN's noise-level index for discrete ones."""
    return self.sigma(t) if continuous else self.chain_index(t)

  def output_to_score(self, output, t, continuous=True, scale_by_sigma=False):
    """The output is the score; divided by ``sigma(t)`` (or ``sigma_i``) with ``scale_by_sigma``."""
    if not scale_by_sigma:
      return output
    sigma = self.sigma(t) if continuous else self.discrete_sigmas[::-1][self.chain_index(t)]
    return batch_mul(1.0 / sigma, output)


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
