"""Likelihood weighting with importance-sampled time and ScoreFlow's bound on -log p(x), against
quadrature and the closed forms of Gaussian data (Song, Durkan, Murray & Ermon 2021).

Tolerances: Monte-Carlo comparisons allow 5 standard errors, estimated from the draws themselves
(so they hold on any machine and summation order); closed forms against quadrature (Gauss-Legendre
in log t, 4,000 nodes: exact to well below float32's round-off) allow 2e-6 relative, the
tabulated default (trapezoidal rule, its error ~h^2) 1e-5."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde_jax import likelihood, likelihood_bound
from score_sde_jax.data import GaussianMixture
from score_sde_jax.experiment import Objective
from score_sde_jax.losses import denoising_score_matching, dsm_losses
from score_sde_jax.sde import SDE, VESDE, VPSDE, batch_mul, subVPSDE

SDES = [VPSDE(), subVPSDE(), VESDE(sigma_max=10.0)]
IDS = ["vp", "subvp", "ve"]


def _quadrature(lo, hi, panels=200, order=20):
  """Nodes ``t`` and weights of Gauss-Legendre quadrature in ``u = log t`` on ``[lo, hi]`` (the
  integrands here vary like ``1 / t``: smooth in ``u``), as weights of ``dt``."""
  x, w = np.polynomial.legendre.leggauss(order)
  edges = np.linspace(np.log(lo), np.log(hi), panels + 1)
  half = 0.5 * np.diff(edges)[:, None]
  u = (0.5 * (edges[1:] + edges[:-1]))[:, None] + half * x
  t = np.exp(u).ravel()
  return t, (half * w).ravel() * t


def _coefficient_arrays(sde, t):
  """``a(t)``, ``std(t)``, ``g(t)^2`` at the times ``t`` (float64 copies of float32 values)."""
  tt = jnp.asarray(t, jnp.float32)
  ones = jnp.ones((len(t), 1))
  a, s = sde.marginal_prob(ones, tt)
  g = sde.sde(ones, tt)[1]
  return (np.asarray(a, np.float64)[:, 0], np.asarray(s, np.float64),
          np.asarray(g, np.float64) ** 2)


def _quad_weight(sde, lo, hi, h=lambda t: 1.0):
  """``int_lo^hi w(t) h(t) dt`` with the library's ``likelihood_weight``."""
  t, weights = _quadrature(lo, hi)
  return float(np.sum(np.asarray(sde.likelihood_weight(jnp.asarray(t, jnp.float32)),
                                 np.float64) * h(t) * weights))


@pytest.mark.parametrize("sde", SDES, ids=IDS)
@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_weight_integral_closed_form_and_default_match_quadrature(sde, eps):
  for t in (2 * eps, 0.01, 0.3, 1.0):
    exact = _quad_weight(sde, eps, t)
    np.testing.assert_allclose(float(sde.likelihood_weight_integral(t, eps)), exact, rtol=2e-6)
    # The base class's tabulated integral (what a user-defined SDE gets): trapezoidal rule on
    # 4097 points in log t, error O(h^2) with h = log(T / eps) / 4096.
    np.testing.assert_allclose(float(SDE.likelihood_weight_integral(sde, t, eps)), exact,
                               rtol=1e-5)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
@pytest.mark.parametrize("default", [False, True], ids=["closed_form", "tabulated"])
def test_sampled_times_follow_the_weight(sde, default):
  """Kolmogorov-Smirnov distance of 100,000 draws from W(t) / W(T) (the 0.1% critical value is
  1.95 / sqrt(n)), and E[ratio h(t)] = int w h dt for h = 1 and h = t (5 standard errors)."""
  eps, n = 1e-5, 100_000
  sample = SDE.sample_likelihood_time if default else type(sde).sample_likelihood_time
  t, ratio = sample(sde, jax.random.PRNGKey(3), (n,), eps)
  t, ratio = np.asarray(t, np.float64), np.asarray(ratio, np.float64)
  assert t.min() >= eps and t.max() <= sde.T
  total = _quad_weight(sde, eps, sde.T)
  cdf = np.asarray(sde.likelihood_weight_integral(jnp.asarray(np.sort(t), jnp.float32), eps))
  ks = np.max(np.abs(cdf / total - np.arange(1, n + 1) / n))
  assert ks < 1.95 / np.sqrt(n), ks
  if not default:   # exact density: the ratio is the constant W(T)
    np.testing.assert_allclose(ratio, total, rtol=2e-6)
  for h, expected in ((lambda s: 1.0, total), (lambda s: s, _quad_weight(sde, eps, sde.T,
                                                                         lambda s: s))):
    values = ratio * h(t)
    se = values.std() / np.sqrt(n)
    assert abs(values.mean() - expected) < 5 * se + 1e-6 * expected, (values.mean(), expected, se)


def _gaussian_objective(sde, mu, v0, mu_m, v_m, eps, reduce_mean=False):
  """The likelihood-weighted DSM objective E_{t~U(eps,T)} E g^2 |s(x_t) + z / std|^2 (half sum)
  for data N(mu, v0 I) and the model score s of N(mu_m, v_m I)'s marginals, by quadrature.

  Per dimension, with x_t = a x0 + std z: s + z / std = -(a x0 + std z - a mu_m) / V + z / std,
  V = a^2 v_m + std^2, whose second moment is (a (mu - mu_m) / V)^2 + (a / V)^2 v0
  + (1 / std - std / V)^2."""
  t, weights = _quadrature(eps, sde.T)
  a, s, g2 = _coefficient_arrays(sde, t)
  big_v = a**2 * v_m + s**2
  second = sum((a * (m - mm) / big_v) ** 2 + (a / big_v) ** 2 * v + (1 / s - s / big_v) ** 2
               for m, mm, v in zip(mu, mu_m, v0))
  per_example = second / (len(mu) if reduce_mean else 2.0)
  return float(np.sum(g2 * per_example * weights)) / (sde.T - eps)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_importance_sampled_dsm_is_unbiased_with_lower_variance(sde):
  """Gaussian data and a wrong Gaussian model score: both estimators' means equal the objective
  computed by quadrature (5 standard errors); importance sampling's per-example variance is
  lower (VE: equal, its weight is constant)."""
  mu, v0 = np.array([0.5, -1.0]), np.array([0.3, 0.3])
  mu_m, v_m = np.array([0.3, -0.8]), np.array([0.5, 0.5])
  model = GaussianMixture([1.0], mu_m[None], [np.sqrt(v_m[0])])
  score_fn = lambda x, t: model.marginal_score(sde, x, t)
  eps, n = 1e-3, 200_000
  x0 = jnp.asarray(mu + np.sqrt(v0) * np.random.default_rng(0).standard_normal((n, 2)),
                   jnp.float32)
  expected = _gaussian_objective(sde, mu, v0, mu_m, v_m[0], eps)
  per_example = {}
  for importance in (False, True):
    # The per-example values of denoising_score_matching (its mean over a batch of one).
    key_t, key_z = jax.random.split(jax.random.PRNGKey(7))
    z = jax.random.normal(key_z, x0.shape)
    if importance:
      t, ratio = sde.sample_likelihood_time(key_t, (n,), eps)
      values = dsm_losses(sde, score_fn, x0, t, z) * ratio / (sde.T - eps)
    else:
      t = jax.random.uniform(key_t, (n,), minval=eps, maxval=sde.T)
      values = dsm_losses(sde, score_fn, x0, t, z, likelihood_weighting=True)
    values = np.asarray(values, np.float64)
    se = values.std() / np.sqrt(n)
    assert abs(values.mean() - expected) < 5 * se, (importance, values.mean(), expected, se)
    per_example[importance] = values
    # The library's estimator on a batch is the mean of such values.
    batch = float(denoising_score_matching(jax.random.PRNGKey(8), sde, score_fn, x0[:50_000],
                                           likelihood_weighting=True,
                                           importance_sampling=importance, eps=eps))
    assert abs(batch - expected) < 5 * values.std() / np.sqrt(50_000)
  var_uniform, var_importance = per_example[False].var(), per_example[True].var()
  if isinstance(sde, VESDE):
    np.testing.assert_allclose(var_importance, var_uniform, rtol=0.05)
  else:
    assert var_importance < 0.2 * var_uniform, (var_importance, var_uniform)


def test_importance_sampling_needs_likelihood_weighting():
  gauss = GaussianMixture([1.0], np.zeros((1, 2)), [1.0])
  with pytest.raises(ValueError, match="likelihood_weighting"):
    denoising_score_matching(jax.random.PRNGKey(0), VPSDE(), lambda x, t: -x, jnp.zeros((4, 2)),
                             importance_sampling=True)
  with pytest.raises(ValueError, match="training.likelihood_weighting=True"):
    Objective(importance_sampling=True)
  del gauss


# --- The bound -------------------------------------------------------------------------------

def _coefficients(sde, t):
  a, s = (float(np.asarray(v).ravel()[0]) for v in sde.marginal_prob(jnp.ones((1, 1)),
                                                                      jnp.full((1,), t)))
  return a, s


def _gaussian_logpdf(x, mean, var):
  return -0.5 * np.log(2 * np.pi * var) - 0.5 * (x - mean) ** 2 / var


def expected_bound(sde, x, mu, v0, eps, prior_var):
  """E of ScoreFlow's estimator for data N(mu, v0 I) with the exact score, per point ``x`` (D,).

  The bound on -log p_eps(y) from y is exact up to the prior's mismatch:
  -log p_eps(y) + E[log p_T(x_T) / pi(x_T) | y] (the exact reverse SDE conditioned on its end is
  the forward bridge). Averaged over y ~ q = N(a_e x, s_e^2) and with the offset,
      E_q[-log p_eps(y)] + E[log p_T(x_T) - log pi(x_T) | x]
      + E_q[-log N(x; x_hat(y), (s_e / a_e)^2)] - H(q),
  x_hat(y) = (y + s_e^2 grad log p_eps(y)) / a_e, so x - x_hat = (s_e^2 / V_e)(x - mu)
  - (s_e / a_e)(a_e^2 v0 / V_e) z with V_e = a_e^2 v0 + s_e^2; every term is Gaussian."""
  a_e, s_e = _coefficients(sde, eps)
  a_t, s_t = _coefficients(sde, sde.T)
  v_e, v_t = a_e**2 * v0 + s_e**2, a_t**2 * v0 + s_t**2
  # E_q[-log p_eps(y)], y ~ N(a_e x, s_e^2)
  marginal = 0.5 * np.log(2 * np.pi * v_e) + ((a_e * (x - mu)) ** 2 + s_e**2) / (2 * v_e)
  # x_T ~ N(a_t x, s_t^2): E[log p_T(x_T)] - E[log pi(x_T)]
  prior_gap = (-0.5 * np.log(2 * np.pi * v_t) - ((a_t * (x - mu)) ** 2 + s_t**2) / (2 * v_t)
               + 0.5 * np.log(2 * np.pi * prior_var) + ((a_t * x) ** 2 + s_t**2) / (2 * prior_var))
  r2 = (s_e / a_e) ** 2
  mse = (s_e**2 / v_e) ** 2 * (x - mu) ** 2 + r2 * (a_e**2 * v0 / v_e) ** 2
  decoder = 0.5 * np.log(2 * np.pi * r2) + mse / (2 * r2)
  entropy = 0.5 * np.log(2 * np.pi * np.e * s_e**2)
  return float(np.sum(marginal + prior_gap + decoder - entropy)), float(np.sum(prior_gap))


PRIOR_VAR = {"vp": 1.0, "subvp": 1.0, "ve": 100.0}


@pytest.mark.parametrize("sde,name", list(zip(SDES, IDS)), ids=IDS)
@pytest.mark.parametrize("importance", [True, False], ids=["importance", "uniform"])
def test_nll_bound_matches_its_closed_form_with_the_exact_score(sde, name, importance):
  """256 independent estimates of the bound at each of two points (1,000 times each)."""
  mu, v0, eps = np.array([0.5, -1.0]), 0.3, 1e-3
  gauss = GaussianMixture([1.0], mu[None], [np.sqrt(v0)])
  score_fn = lambda x, t: gauss.marginal_score(sde, x, t)
  for x in (np.array([0.4, -0.7]), np.array([1.5, 0.2])):
    batch = jnp.asarray(np.tile(x, (256, 1)), jnp.float32)
    result = likelihood_bound.nll_bound(jax.random.PRNGKey(11), sde, score_fn, batch,
                                        num_times=1000, importance_sampling=importance, eps=eps)
    values = np.asarray(result.nll, np.float64)
    se = values.std() / np.sqrt(len(values))
    expected, _ = expected_bound(sde, x, mu, v0, eps, PRIOR_VAR[name])
    assert abs(values.mean() - expected) < 5 * se + 1e-4, (x, values.mean(), expected, se)
    assert result.nfe == 1001


@pytest.mark.parametrize("sde,name", list(zip(SDES, IDS)), ids=IDS)
def test_bound_is_tight_up_to_eps_and_prior_terms(sde, name):
  """The closed form above tends to -log p_0(x) + E[log p_T / pi] as eps -> 0: with the exact
  score the bound has no other slack than the prior's mismatch and the eps terms."""
  mu, v0 = np.array([0.5, -1.0]), 0.3
  x = np.array([0.4, -0.7])
  exact = -np.sum(_gaussian_logpdf(x, mu, v0))
  gaps = []
  for eps in (1e-2, 1e-3, 1e-4, 1e-5):
    bound, prior_gap = expected_bound(sde, x, mu, v0, eps, PRIOR_VAR[name])
    gaps.append(bound - exact - prior_gap)
  assert abs(gaps[-1]) < 1e-3 and np.all(np.diff(np.abs(gaps)) <= 1e-12), gaps


def test_bits_per_dim_bound_uses_the_same_dequantization():
  """8-level data whose dequantized density is a known Gaussian's: the bound in bits/dim is the
  nats bound of the same dequantized points over D log 2, plus bits_offset."""
  sde = VPSDE()
  gauss = GaussianMixture([1.0], np.zeros((1, 3)), [0.5])
  score_fn = lambda x, t: gauss.marginal_score(sde, x, t)
  x_int = jnp.asarray(np.random.default_rng(0).integers(0, 8, (64, 3)), jnp.int32)
  scaler = lambda u: 2 * u - 1
  key = jax.random.PRNGKey(5)
  bpd = likelihood_bound.bits_per_dim_bound(key, sde, score_fn, x_int, num_levels=8,
                                            scaler=scaler, num_times=50)
  key, key_noise, key_probe = jax.random.split(key, 3)
  y = scaler(likelihood.dequantize(key_noise, x_int, 8))
  nats = likelihood_bound.nll_bound(key_probe, sde, score_fn, y, num_times=50).nll
  expected = nats / (3 * np.log(2)) + likelihood.bits_offset(8, scaler)
  np.testing.assert_allclose(bpd.bpd, expected, rtol=1e-5)
  np.testing.assert_array_equal(bpd.nfe, 51)


@dataclasses.dataclass(frozen=True)
class ConstantBetaSDE(SDE):
  """A user-defined SDE with the base class's defaults: VP with constant beta, written here.
  Its times come from the tabulated sampler and its drift's divergence from Hutchinson's probe."""

  beta: float = 8.0
  N: int = 1000

  def sde(self, x, t):
    return -0.5 * self.beta * x, jnp.sqrt(self.beta) * jnp.ones_like(t)

  def marginal_prob(self, x, t):
    a = jnp.exp(-0.5 * self.beta * t)
    return batch_mul(a, x), jnp.sqrt(-jnp.expm1(-self.beta * t))


def test_a_user_defined_sde_gets_importance_sampling_and_the_bound():
  sde = ConstantBetaSDE()
  eps, n = 1e-4, 100_000
  total = _quad_weight(sde, eps, sde.T)
  np.testing.assert_allclose(float(sde.likelihood_weight_integral(sde.T, eps)), total, rtol=1e-5)
  t, ratio = sde.sample_likelihood_time(jax.random.PRNGKey(0), (n,), eps)
  ratio = np.asarray(ratio, np.float64)
  assert abs(ratio.mean() - total) < 5 * ratio.std() / np.sqrt(n) + 1e-6 * total
  # The bound with the exact score against its closed form (prior N(0, s_T^2), the default).
  mu, v0, x = np.array([0.5, -1.0]), 0.3, np.array([0.4, -0.7])
  gauss = GaussianMixture([1.0], mu[None], [np.sqrt(v0)])
  batch = jnp.asarray(np.tile(x, (256, 1)), jnp.float32)
  exact_score = lambda y, s: gauss.marginal_score(sde, y, s)
  result = likelihood_bound.nll_bound(jax.random.PRNGKey(2), sde, exact_score, batch,
                                      num_times=1000, eps=1e-3)
  values = np.asarray(result.nll, np.float64)
  expected, _ = expected_bound(sde, x, mu, v0, 1e-3, _coefficients(sde, sde.T)[1] ** 2)
  assert abs(values.mean() - expected) < 5 * values.std() / np.sqrt(256) + 1e-4


def test_the_documentation_page_runs():
  """docs/likelihood-training.md's examples, with the numbers they state: the bound of the exact
  score on the ring is its entropy log 8 + log(2 pi e 0.15^2) (VP's prior mismatch and the eps
  terms are below 1e-3 nats) within 5 standard errors over the 256 points."""
  import os
  import re
  text = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                           "likelihood-training.md")).read()
  namespace = {}
  for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
    exec(block, namespace)
  nll = np.asarray(namespace["nll"], np.float64)
  entropy = np.log(8) + np.log(2 * np.pi * np.e * 0.15**2)
  assert abs(nll.mean() - entropy) < 5 * nll.std() / np.sqrt(len(nll)), (nll.mean(), entropy)
  assert round(entropy, 2) == 1.12 and namespace["nfe"].shape == (16,)
  assert np.all(np.isfinite(namespace["bpd"])) and np.isfinite(float(namespace["loss"]))
