"""Denoising score matching against closed forms and the exact score."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde_jax.data import GaussianMixture
from score_sde_jax.losses import denoising_score_matching, dsm_losses
from score_sde_jax.sde import VESDE, VPSDE, subVPSDE

SDES = [VPSDE(), subVPSDE(), VESDE(sigma_max=10.0)]
IDS = ["vp", "subvp", "ve"]


@pytest.mark.parametrize("sde", SDES, ids=IDS)
@pytest.mark.parametrize("likelihood_weighting", [False, True])
def test_dsm_loss_of_exact_score_has_closed_form(sde, likelihood_weighting):
  """Data N(0, v0 I) in D dims: with the exact score, E|std s + z|^2 = D a^2 v0 / (a^2 v0 + s^2)."""
  d, v0, b = 3, 0.5, 200_000
  gmm = GaussianMixture([1.0], np.zeros((1, d)), [np.sqrt(v0)])
  score_fn = lambda x, t: gmm.marginal_score(sde, x, t)
  key_x, key_z = jax.random.split(jax.random.PRNGKey(0))
  x0 = jax.random.normal(key_x, (b, d)) * np.sqrt(v0)
  z = jax.random.normal(key_z, (b, d))
  for t_value in (0.05, 0.5):
    t = jnp.full((b,), t_value)
    a, s = (float(v.ravel()[0]) for v in sde.marginal_prob(jnp.ones((1, 1)), t[:1]))
    per_dim = a**2 * v0 / (a**2 * v0 + s**2)
    expected = 0.5 * d * per_dim  # half sum over dimensions (reduce_mean=False)
    if likelihood_weighting:
      g2 = float(sde.sde(jnp.zeros((1, 1)), t[:1])[1][0]) ** 2
      expected *= g2 / s**2
    got = dsm_losses(sde, score_fn, x0, t, z, likelihood_weighting=likelihood_weighting)
    assert got.shape == (b,)
    np.testing.assert_allclose(float(jnp.mean(got)), expected, rtol=0.02)
    mean_red = dsm_losses(sde, score_fn, x0, t, z, reduce_mean=True,
                          likelihood_weighting=likelihood_weighting)
    np.testing.assert_allclose(mean_red, got * 2 / d, rtol=1e-5)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
@pytest.mark.parametrize("likelihood_weighting", [False, True])
def test_exact_score_minimises_the_dsm_loss(sde, likelihood_weighting):
  gmm = GaussianMixture.ring()
  x0 = jnp.asarray(gmm.sample(np.random.default_rng(0), 20000), jnp.float32)
  key = jax.random.PRNGKey(1)
  exact = lambda x, t: gmm.marginal_score(sde, x, t)
  direction = jnp.array([1.0, -0.5])
  perturbed = {
      "scaled up": lambda x, t: 1.1 * exact(x, t),
      "scaled down": lambda x, t: 0.9 * exact(x, t),
      "shifted": lambda x, t: exact(x, t) + 0.5 * direction,
      "smoothed": lambda x, t: gmm.marginal_score(sde, x, jnp.minimum(t * 1.5, 1.0)),
  }
  kw = dict(likelihood_weighting=likelihood_weighting, eps=1e-3)
  best = float(denoising_score_matching(key, sde, exact, x0, **kw))
  for name, fn in perturbed.items():
    assert float(denoising_score_matching(key, sde, fn, x0, **kw)) > best, name


def test_time_floor_and_sampling():
  """t is drawn from U(eps, T): with a score that records t, all t are within bounds."""
  sde = VPSDE()
  seen = []

  def score_fn(x, t):
    seen.append(t)
    return jnp.zeros_like(x)

  denoising_score_matching(jax.random.PRNGKey(0), sde, score_fn, jnp.zeros((4096, 2)), eps=0.3)
  t = np.asarray(seen[0])
  assert t.min() >= 0.3 and t.max() <= 1.0 and abs(t.mean() - 0.65) < 0.02


def test_smld_loss_of_the_exact_score_has_closed_form():
  """Gaussian data N(0, v0 I), x = x0 + sigma_i z: sigma_i^2 |s - target|^2 has mean D v0 / (v0 + sigma_i^2)."""
  from score_sde_jax.losses import discrete_losses
  sde, d, v0, b = VESDE(sigma_min=0.01, sigma_max=10.0, N=100), 3, 0.5, 100_000
  gauss = GaussianMixture([1.0], np.zeros((1, d)), [np.sqrt(v0)])

  def exact_score(x, t):  # the score at the discrete level the label names
    sigma = sde.discrete_sigmas[::-1][sde.chain_index(t)]
    return -x / (v0 + sigma**2)[:, None]

  key_x, key_z = jax.random.split(jax.random.PRNGKey(0))
  x0 = jax.random.normal(key_x, (b, d)) * np.sqrt(v0)
  z = jax.random.normal(key_z, (b, d))
  for i in (0, 40, 99):
    index = jnp.full((b,), i)
    sigma = float(np.exp(np.linspace(np.log(10.0), np.log(0.01), 100))[i])
    got = discrete_losses(sde, exact_score, x0, index, z, reduce_mean=False)
    np.testing.assert_allclose(float(jnp.mean(got)), 0.5 * d * v0 / (v0 + sigma**2), rtol=0.02)
  del gauss


def test_ddpm_loss_of_the_exact_noise_predictor_has_closed_form():
  """x = sqrt(ab) x0 + sqrt(1 - ab) z, x0 ~ N(0, v0 I): the best eps-prediction leaves
  E|eps_hat - z|^2 / D = ab v0 / (ab v0 + 1 - ab)."""
  from score_sde_jax.losses import discrete_losses
  sde, d, v0, b = VPSDE(N=1000), 2, 0.3, 100_000
  abar = np.cumprod(1 - np.linspace(0.1 / 1000, 20 / 1000, 1000))

  def exact_score(x, t):
    ab = jnp.asarray(abar, jnp.float32)[sde.chain_index(t)]
    return -x / (ab * v0 + 1 - ab)[:, None]

  key_x, key_z = jax.random.split(jax.random.PRNGKey(1))
  x0 = jax.random.normal(key_x, (b, d)) * np.sqrt(v0)
  z = jax.random.normal(key_z, (b, d))
  for i in (3, 250, 999):
    got = discrete_losses(sde, exact_score, x0, jnp.full((b,), i), z)  # reduce_mean=True (paper)
    ab = abar[i]
    np.testing.assert_allclose(float(jnp.mean(got)), ab * v0 / (ab * v0 + 1 - ab), rtol=0.02)


def test_discrete_step_index_is_exact_at_grid_times():
  i = jnp.arange(1000)
  np.testing.assert_array_equal(VPSDE().chain_index(i.astype(jnp.float32) / 999), i)
  np.testing.assert_array_equal(VESDE().chain_index(1.0 - i.astype(jnp.float32) / 999), i)


def test_discrete_training_refuses_subvp():
  from score_sde_jax.losses import get_discrete_loss_fn
  with pytest.raises(ValueError, match="VESDE \\(SMLD\\) and VPSDE \\(DDPM\\)"):
    get_discrete_loss_fn(subVPSDE(), None, train=True, reduce_mean=True)
