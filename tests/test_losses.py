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
