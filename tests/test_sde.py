"""SDEs: perturbation kernels against Monte-Carlo simulation, discretisations, reverse SDE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde_jax.data import GaussianMixture
from score_sde_jax.sde import VESDE, VPSDE, simulate_forward, subVPSDE

SDES = [VPSDE(), subVPSDE(), VESDE()]
IDS = ["vp", "subvp", "ve"]


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginal_prob_matches_monte_carlo(sde):
  """Mean and std of simulated forward paths agree with the closed-form kernel."""
  b, x0_value = 20000, 1.5
  x0 = jnp.full((b, 1), x0_value)
  key0, key = jax.random.split(jax.random.PRNGKey(0))
  if isinstance(sde, VESDE):
    # The paper's VE kernel std sigma(t) is from data already perturbed by sigma_min.
    x0 = x0 + sde.sigma_min * jax.random.normal(key0, x0.shape)
  for t in (0.1, 0.5, 1.0):
    _, xs = jax.jit(simulate_forward, static_argnums=(1, 3, 4))(key, sde, x0, t, 2000)
    xt = np.asarray(xs[-1, :, 0], np.float64)
    mean, std = sde.marginal_prob(jnp.full((1, 1), x0_value), jnp.array([t]))
    mean, std = float(mean[0, 0]), float(std[0])
    assert abs(xt.mean() - mean) < 4 * std / np.sqrt(b) + 2e-3 * abs(mean), (t, xt.mean(), mean)
    assert abs(xt.std() / std - 1) < 0.02, (t, xt.std(), std)


@pytest.mark.parametrize("cls", [VPSDE, subVPSDE, VESDE], ids=IDS)
def test_discretize_matches_sde_in_small_step_limit(cls, x64):
  n = 100_000
  sde = cls(N=n)
  x = jnp.array([[0.7, -1.3], [2.0, 0.1], [-0.4, 0.9]])
  t = jnp.array([0.1, 0.5, 0.9])
  drift, diffusion = sde.sde(x, t)
  f, G = sde.discretize(x, t)
  # The discrete chains (DDPM, SMLD) live on the grid t_i = i / (N - 1).
  dt = 1.0 / n if cls is not VESDE else 1.0 / (n - 1)
  if cls is VESDE:
    np.testing.assert_allclose(f, 0.0)
  else:
    np.testing.assert_allclose(f / dt, drift, rtol=2e-3)
  np.testing.assert_allclose(G / np.sqrt(dt), diffusion, rtol=2e-3)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_reverse_sde_and_probability_flow(sde):
  gmm = GaussianMixture.ring()
  score_fn = lambda x, t: gmm.marginal_score(sde, x, t)
  x = jnp.array([[0.3, -1.0], [1.9, 0.2]])
  t = jnp.array([0.2, 0.6])
  drift, g = sde.sde(x, t)
  s = score_fn(x, t)
  rev_drift, rev_g = sde.reverse(score_fn).sde(x, t)
  np.testing.assert_allclose(rev_drift, drift - g[:, None] ** 2 * s, rtol=1e-6)
  np.testing.assert_allclose(rev_g, g)
  ode_drift, ode_g = sde.reverse(score_fn, probability_flow=True).sde(x, t)
  np.testing.assert_allclose(ode_drift, drift - 0.5 * g[:, None] ** 2 * s, rtol=1e-6)
  np.testing.assert_array_equal(ode_g, 0.0)
  f, G = sde.discretize(x, t)
  rev_f, rev_G = sde.reverse(score_fn).discretize(x, t)
  np.testing.assert_allclose(rev_f, f - G[:, None] ** 2 * s, rtol=1e-6)
  np.testing.assert_allclose(rev_G, G)
  _, ode_G = sde.reverse(score_fn, probability_flow=True).discretize(x, t)
  np.testing.assert_array_equal(ode_G, 0.0)


def test_reverse_discretize_matches_reverse_sde_in_small_step_limit(x64):
  sde = VPSDE(N=100_000)
  gmm = GaussianMixture.ring()
  rsde = sde.reverse(lambda x, t: gmm.marginal_score(sde, x, t))
  x, t = jnp.array([[0.3, -1.0]]), jnp.array([0.4])
  f, G = rsde.discretize(x, t)
  drift, g = rsde.sde(x, t)
  np.testing.assert_allclose(f * sde.N, drift, rtol=2e-3)
  np.testing.assert_allclose(G * np.sqrt(sde.N), g, rtol=2e-3)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_prior_logp_is_the_prior_density(sde):
  z = sde.prior_sampling(jax.random.PRNGKey(1), (50000, 3))
  prior_std = sde.marginal_prob(jnp.zeros((1, 1)), jnp.array([1.0]))[1][0]
  # The prior approximates the marginal at T = 1.
  np.testing.assert_allclose(jnp.std(z), prior_std, rtol=0.02)
  logp = sde.prior_logp(z[:4])
  var = sde.sigma_max**2 if isinstance(sde, VESDE) else 1.0
  expected = -1.5 * np.log(2 * np.pi * var) - 0.5 * np.sum(np.asarray(z[:4]) ** 2, -1) / var
  np.testing.assert_allclose(logp, expected, rtol=1e-5)


def test_subvp_variance_is_bounded_by_vp():
  t = jnp.linspace(1e-3, 1.0, 50)
  x = jnp.zeros((50, 1))
  assert jnp.all(subVPSDE().marginal_prob(x, t)[1] ** 2 <= VPSDE().marginal_prob(x, t)[1] ** 2)


def test_sdes_are_immutable_hashable_and_jit_vmap_friendly():
  sde = VPSDE()
  with pytest.raises(Exception):
    sde.beta_min = 1.0
  assert hash(sde) == hash(VPSDE())
  f = jax.jit(lambda s, x, t: s.marginal_prob(x, t), static_argnums=0)
  x, t = jnp.ones((4, 2)), jnp.linspace(0.1, 0.9, 4)
  mean, std = f(sde, x, t)
  # vmap over examples one at a time gives the same answer.
  vm = jax.vmap(lambda xi, ti: sde.marginal_prob(xi[None], ti[None]))(x, t)
  np.testing.assert_allclose(vm[0][:, 0], mean, rtol=1e-6)
  np.testing.assert_allclose(vm[1][:, 0], std, rtol=1e-6)


@pytest.mark.parametrize("kwargs,field", [({"beta_min": -1.0}, "beta_min"),
                                          ({"N": 1}, "N"),
                                          ({"beta_min": 5.0, "beta_max": 1.0}, "beta_max")])
def test_vp_bad_arguments_name_the_field(kwargs, field):
  with pytest.raises(ValueError, match=field):
    VPSDE(**kwargs)


def test_ve_bad_arguments_name_the_field():
  with pytest.raises(ValueError, match="sigma_max"):
    VESDE(sigma_min=1.0, sigma_max=0.5)
