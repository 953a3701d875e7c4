"""Log-likelihood, bits/dim and latent codes against closed forms (exact scores, no network)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import ndtr

from score_sde_jax.data import GaussianMixture, get_data_scaler
from score_sde_jax.likelihood import (bits_offset, bits_per_dim, decode, dequantize, encode,
                                      interpolate, log_likelihood)
from score_sde_jax.sde import VESDE, VPSDE, subVPSDE

SDES = {"vp": VPSDE(), "subvp": subVPSDE(), "ve": VESDE()}
GMM = GaussianMixture.ring()
EPS = 1e-5


def _score(dist, sde):
  return lambda x, t: dist.marginal_score(sde, x, t)


def _points(sde, n=12, seed=0):
  return jnp.asarray(GMM.marginal_sample(sde, np.random.default_rng(seed), n, EPS), jnp.float32)


def _exact_flow_logp(dist, sde, logp, z, x):
  """The model's log p_eps(x) with the prior replaced by the exact p_T at the returned latent.

  log_likelihood returns prior_logp(z) + int div; the exact marginal at T differs
  slightly from the prior, so compare like with like.
  """
  t_end = jnp.full((x.shape[0],), sde.T, x.dtype)
  return logp - sde.prior_logp(z) + dist.marginal_log_prob(sde, z, t_end)


@pytest.mark.parametrize("sde_name", SDES)
def test_exact_divergence_matches_the_marginal_density(sde_name):
  sde = SDES[sde_name]
  x = _points(sde)
  logp, z, nfe = log_likelihood(None, sde, _score(GMM, sde), x, divergence="exact")
  exact = GMM.marginal_log_prob(sde, x, jnp.full((x.shape[0],), EPS))
  assert float(jnp.max(jnp.abs(logp - exact))) < 1e-2  # includes prior vs exact p_T
  assert float(jnp.max(jnp.abs(_exact_flow_logp(GMM, sde, logp, z, x) - exact))) < 1e-3
  assert nfe.shape == (x.shape[0],) and int(nfe.min()) > 6


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_exact_divergence_in_float64_is_tighter(sde_name, x64):
  sde = SDES[sde_name]
  x = jnp.asarray(GMM.marginal_sample(sde, np.random.default_rng(0), 6, EPS), jnp.float64)
  logp, z, _ = log_likelihood(None, sde, _score(GMM, sde), x, divergence="exact", rtol=1e-9,
                              atol=1e-9)
  assert logp.dtype == jnp.float64
  exact = GMM.marginal_log_prob(sde, x, jnp.full((6,), EPS))
  assert float(jnp.max(jnp.abs(_exact_flow_logp(GMM, sde, logp, z, x) - exact))) < 1e-6


@pytest.mark.parametrize("divergence", [pytest.param("gaussian", marks=pytest.mark.slow), "rademacher"])
def test_hutchinson_estimates_are_unbiased(divergence):
  sde = SDES["vp"]
  x = _points(sde, n=3)
  reps = 300
  exact, _, _ = log_likelihood(None, sde, _score(GMM, sde), x, divergence="exact")
  # One probe per example: repeat each point `reps` times in one batch.
  xs = jnp.repeat(x, reps, axis=0)
  est, _, _ = log_likelihood(jax.random.PRNGKey(7), sde, _score(GMM, sde), xs,
                             divergence=divergence, rtol=1e-4, atol=1e-4)
  est = np.asarray(est).reshape(3, reps)
  se = est.std(axis=1, ddof=1) / np.sqrt(reps)
  assert np.all(est.std(axis=1) > 0.05)  # a real estimator, not the exact trace
  np.testing.assert_array_less(np.abs(est.mean(axis=1) - np.asarray(exact)), 4 * se + 2e-3)


@pytest.mark.parametrize("sde_name", SDES)
def test_decode_inverts_encode(sde_name):
  sde = SDES[sde_name]
  x = _points(sde)
  z = encode(sde, _score(GMM, sde), x)
  x_back = decode(sde, _score(GMM, sde), z)
  np.testing.assert_allclose(x_back, x, atol=5e-3)
  assert float(jnp.max(jnp.abs(z - x))) > 0.1


@pytest.mark.parametrize("sde_name", SDES)
def test_encode_gaussian_data_gives_the_closed_form_latent(sde_name):
  sde = SDES[sde_name]
  mu, v0 = np.array([1.0, -0.5]), 0.3
  gauss = GaussianMixture([1.0], mu[None], [np.sqrt(v0)])
  x = jnp.asarray(gauss.marginal_sample(sde, np.random.default_rng(1), 32, EPS), jnp.float32)
  z = encode(sde, _score(gauss, sde), x)

  def a_v(t):
    a, s = (float(v.ravel()[0]) for v in sde.marginal_prob(jnp.ones((1, 1)), jnp.array([t])))
    return a, a**2 * v0 + s**2

  (a_e, v_e), (a_t, v_t) = a_v(EPS), a_v(sde.T)
  expected = a_t * mu + np.sqrt(v_t / v_e) * (np.asarray(x) - a_e * mu)
  np.testing.assert_allclose(z, expected, atol=2e-3 * max(1.0, np.abs(expected).max()))


@pytest.mark.parametrize("centered,levels,expected", [(True, 256, 7.0), (False, 256, 8.0),
                                                      (True, 17, math.log2(17) - 1)])
def test_bits_offset_is_log_levels_minus_scaler_log_jacobian(centered, levels, expected):
  scaler = get_data_scaler(centered)
  np.testing.assert_allclose(bits_offset(levels, scaler), expected, rtol=1e-6)
  jac = jax.jacfwd(lambda u: scaler(u))(jnp.full((3,), 0.3))  # direct: diagonal of the Jacobian
  np.testing.assert_allclose(bits_offset(levels, scaler),
                             math.log2(levels) - float(jnp.log2(jnp.abs(jnp.diag(jac)).mean())), rtol=1e-6)


class UniformBox:
  """Each coordinate uniform on [lo, hi]: p_t is a box smoothed by the kernel (closed form with erf)."""

  def __init__(self, lo, hi):
    self.lo, self.hi = lo, hi

  def marginal_log_prob(self, sde, x, t):
    a, s = sde.marginal_prob(jnp.ones((t.shape[0], 1)), t)
    a, s = a[:, 0][:, None], s[:, None]
    # x = a u + s z, u ~ U[lo, hi]: density (Phi((x - a lo)/s) - Phi((x - a hi)/s)) / (a (hi - lo)).
    mass = ndtr((x - a * self.lo) / s) - ndtr((x - a * self.hi) / s)
    return jnp.sum(jnp.log(mass) - jnp.log(a * (self.hi - self.lo)), axis=-1)

  def marginal_score(self, sde, x, t):
    return jax.grad(lambda y: jnp.sum(self.marginal_log_prob(sde, y, t)))(x)


def test_bits_per_dim_of_uniform_discrete_data_is_log2_levels():
  """Uniform K-level data, dequantized and centered, is uniform on [-1, 1]: the exact model gives
  bits/dim = log2 K up to the kernel's smoothing at eps (computed here by quadrature)."""
  levels, n = 4, 400
  sde = VESDE(sigma_min=0.02, sigma_max=5.0)
  box = UniformBox(-1.0, 1.0)
  eps = 1e-5
  x_int = jax.random.randint(jax.random.PRNGKey(0), (n, 2), 0, levels)
  scaler = get_data_scaler(True)
  bpd, nfe = bits_per_dim(jax.random.PRNGKey(1), sde, _score(box, sde), x_int, num_levels=levels,
                          scaler=scaler, divergence="exact", eps=eps, rtol=1e-5, atol=1e-5)
  # The analytic value: E_u[-log2 p_eps(y)] per dimension over y uniform on [-1, 1], plus the offset.
  y = jnp.linspace(-1, 1, 20001)[:, None]
  per_dim = -np.mean(np.asarray(box.marginal_log_prob(sde, y, jnp.full((y.shape[0],), eps)))) / np.log(2)
  analytic = per_dim + bits_offset(levels, scaler)
  assert abs(analytic - math.log2(levels)) < 0.05  # the smoothing costs little
  np.testing.assert_allclose(float(jnp.mean(bpd)), analytic, atol=4 * float(jnp.std(bpd)) / np.sqrt(n) + 5e-3)


def test_bits_per_dim_of_uniform_17_level_images_is_log2_17():
  """Digit-shaped data (2x2x1 images, 17 levels) uniform over levels: the exact model gives the
  analytic bits/dim (log2 17 up to the kernel's smoothing at eps, computed by quadrature)."""
  levels, n = 17, 200
  sde = VESDE(sigma_min=0.02, sigma_max=5.0)
  box = UniformBox(-1.0, 1.0)
  flat_score = _score(box, sde)
  score = lambda x, t: flat_score(x.reshape(x.shape[0], -1), t).reshape(x.shape)
  x_int = jax.random.randint(jax.random.PRNGKey(5), (n, 2, 2, 1), 0, levels)
  scaler = get_data_scaler(True)
  bpd, _ = bits_per_dim(jax.random.PRNGKey(6), sde, score, x_int, num_levels=levels, scaler=scaler,
                        divergence="exact", eps=1e-5)
  y = jnp.linspace(-1, 1, 20001)[:, None]
  per_dim = -np.mean(np.asarray(box.marginal_log_prob(sde, y, jnp.full((y.shape[0],), 1e-5)))) / np.log(2)
  analytic = per_dim + bits_offset(levels, scaler)
  assert abs(analytic - math.log2(levels)) < 0.05
  np.testing.assert_allclose(float(jnp.mean(bpd)), analytic,
                             atol=4 * float(jnp.std(bpd)) / np.sqrt(n) + 5e-3)


def test_bits_per_dim_bookkeeping_with_a_gaussian_model():
  """Same dequantization noise, closed-form density: bits_per_dim is exactly the bound's formula."""
  sde, levels = VPSDE(), 17
  gauss = GaussianMixture([1.0], np.zeros((1, 3)), [0.6])
  x_int = jax.random.randint(jax.random.PRNGKey(2), (5, 3), 0, levels)
  scaler = get_data_scaler(True)
  key, score = jax.random.PRNGKey(3), _score(gauss, sde)  # one function: encode compiles once
  bpd, _ = bits_per_dim(key, sde, score, x_int, num_levels=levels, scaler=scaler,
                        n_repeats=2, divergence="exact")
  expected = 0.0
  for _ in range(2):  # replay the keys bits_per_dim draws
    key, key_noise, _ = jax.random.split(key, 3)
    y = scaler(dequantize(key_noise, x_int, levels))
    z = encode(sde, score, y)
    logp = (gauss.marginal_log_prob(sde, y, jnp.full((5,), EPS))
            - gauss.marginal_log_prob(sde, z, jnp.ones(5)) + sde.prior_logp(z))
    expected = expected + (-logp / (3 * np.log(2)) + math.log2(levels) - 1)
  np.testing.assert_allclose(bpd, expected / 2, atol=2e-3)


def test_bits_per_dim_refuses_float_data():
  with pytest.raises(ValueError, match="integer levels"):
    bits_per_dim(None, VPSDE(), lambda x, t: x, jnp.zeros((2, 2)))


def test_interpolation_is_spherical_between_endpoints():
  z0, z1 = jnp.array([1.0, 0.0, 0.0]), jnp.array([0.0, 2.0, 0.0])
  path = interpolate(z0, z1, jnp.linspace(0, 1, 5))
  np.testing.assert_allclose(path[0], z0, atol=1e-6)
  np.testing.assert_allclose(path[-1], z1, atol=1e-6)
  # Midpoint between orthogonal vectors of norms 1 and 2: the bisecting direction, norm 1.5.
  np.testing.assert_allclose(path[2], np.array([1.0, 1.0, 0.0]) * 1.5 / np.sqrt(2), rtol=1e-5)
  norms = np.linalg.norm(np.asarray(path), axis=1)
  np.testing.assert_allclose(norms, np.linspace(1, 2, 5), rtol=1e-5)
  # Nearly antipodal 2-D latents of different norms stay between the endpoint norms.
  path = interpolate(jnp.array([1.0, 0.0]), jnp.array([-3.0, 0.01]), jnp.linspace(0, 1, 11))
  assert float(np.max(np.linalg.norm(np.asarray(path), axis=1))) <= 3.0 + 1e-4


def test_a_progress_stage_shows_diffrax_bar_and_changes_no_value(capsys):
  """Inside ``sampling.progress.stage`` (``--mode eval``'s likelihood batches) diffrax's progress
  bar follows each solve to 100 %; the log-densities are bit for bit those without it."""
  from score_sde_jax.likelihood import log_likelihood
  from score_sde_jax.sampling import progress
  sde = SDES["vp"]
  x = _points(sde, n=4)
  plain = np.asarray(log_likelihood(None, sde, _score(GMM, sde), x, divergence="exact").logp)
  assert "%" not in capsys.readouterr().err
  with progress.stage("likelihood"):
    shown = np.asarray(log_likelihood(None, sde, _score(GMM, sde), x, divergence="exact").logp)
  np.testing.assert_array_equal(shown, plain)
  assert "100.00%" in capsys.readouterr().err
