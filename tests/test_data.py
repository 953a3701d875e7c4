"""Toy data: exact densities and marginal scores of Gaussian mixtures, deterministic batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from score_sde_jax.data import (Checkerboard, ConcentricRings, GaussianMixture, SwissRoll, TwoMoons,
                                get_data_inverse_scaler, get_data_scaler)
from score_sde_jax.sde import VESDE, VPSDE, subVPSDE

SDES = [VPSDE(), subVPSDE(), VESDE(sigma_max=10.0)]
IDS = ["vp", "subvp", "ve"]


def _random_gmm(dim=3, k=4, seed=0):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(k, dim, dim)) * 0.5
  covs = a @ np.swapaxes(a, 1, 2) + 0.1 * np.eye(dim)
  return GaussianMixture(rng.uniform(0.5, 2.0, k), rng.normal(size=(k, dim)) * 2, covs)


def test_log_prob_matches_scipy():
  gmm = _random_gmm()
  x = np.random.default_rng(1).normal(size=(20, 3)) * 2
  expected = np.log(sum(w * stats.multivariate_normal(m, c).pdf(x)
                        for w, m, c in zip(gmm.weights, gmm.means, gmm.covs)))
  np.testing.assert_allclose(gmm.log_prob(jnp.asarray(x, jnp.float32)), expected, rtol=1e-4)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginal_score_is_gradient_of_marginal_log_prob(sde, x64):
  gmm = _random_gmm()
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(16, 3)) * 2)
  t = jnp.asarray(rng.uniform(1e-3, 1.0, 16))
  grad = jax.grad(lambda x: jnp.sum(gmm.marginal_log_prob(sde, x, t)))(x)
  np.testing.assert_allclose(gmm.marginal_score(sde, x, t), grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginal_log_prob_is_the_convolved_density(sde):
  """p_t(x) = sum_k w_k N(x; a mu_k, a^2 Sigma_k + s^2 I), checked with scipy at one t."""
  gmm = _random_gmm()
  t = 0.3
  a = float(sde.marginal_prob(jnp.ones((1, 1)), jnp.array([t]))[0][0, 0])
  s = float(sde.marginal_prob(jnp.ones((1, 1)), jnp.array([t]))[1][0])
  x = np.random.default_rng(3).normal(size=(10, 3)) * 2
  expected = np.log(sum(w * stats.multivariate_normal(a * m, a**2 * c + s**2 * np.eye(3)).pdf(x)
                        for w, m, c in zip(gmm.weights, gmm.means, gmm.covs)))
  got = gmm.marginal_log_prob(sde, jnp.asarray(x, jnp.float32), jnp.full((10,), t))
  np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_samples_have_the_mixture_moments():
  gmm = _random_gmm(dim=2, k=3)
  x = gmm.sample(np.random.default_rng(4), 200_000)
  mean = gmm.weights @ gmm.means
  second = sum(w * (c + np.outer(m, m)) for w, m, c in zip(gmm.weights, gmm.means, gmm.covs))
  np.testing.assert_allclose(x.mean(0), mean, atol=0.02)
  np.testing.assert_allclose(np.cov(x.T), second - np.outer(mean, mean), atol=0.05)


def test_marginal_sample_has_the_marginal_moments():
  gmm = GaussianMixture.ring()
  sde = VPSDE()
  x = gmm.marginal_sample(sde, np.random.default_rng(5), 200_000, 0.4)
  a, s = (float(v.ravel()[0]) for v in sde.marginal_prob(jnp.ones((1, 1)), jnp.array([0.4])))
  var = a**2 * (gmm.means[:, 0] ** 2).mean() + a**2 * 0.15**2 + s**2
  np.testing.assert_allclose(x.var(0), [var, var], rtol=0.02)


def test_ring_default():
  gmm = GaussianMixture.ring()
  assert gmm.means.shape == (8, 2)
  np.testing.assert_allclose(np.linalg.norm(gmm.means, axis=1), 2.0)
  np.testing.assert_allclose(gmm.weights, 1 / 8)


def test_bad_mixture_arguments():
  with pytest.raises(ValueError, match="weights"):
    GaussianMixture([1.0, -1.0], np.zeros((2, 2)), [1.0, 1.0])
  with pytest.raises(ValueError, match="covs"):
    GaussianMixture([1.0], np.zeros((1, 2)), np.array([[[1.0, 2.0], [2.0, 1.0]]]))


@pytest.mark.parametrize("dist", [GaussianMixture.ring(), SwissRoll(), TwoMoons(), Checkerboard(),
                                  ConcentricRings()], ids=["gmm", "swissroll", "moons", "checker", "rings"])
def test_batches_are_deterministic_and_resumable(dist):
  it = dist.batches(64, seed=7)
  first = [next(it) for _ in range(5)]
  assert first[0].shape == (64, 2) and first[0].dtype == np.float32
  assert not np.allclose(first[0], first[1])
  again = [next(dist.batches(64, seed=7, start_step=3))]
  np.testing.assert_array_equal(again[0], first[3])
  stacked = next(dist.batches(64, seed=7, start_step=1, steps_per_batch=3))
  np.testing.assert_array_equal(stacked, np.stack(first[1:4]))
  other = next(dist.batches(64, seed=7, split="eval"))
  assert not np.allclose(other, first[0])


def test_checkerboard_samples_lie_on_dark_squares():
  x = Checkerboard().sample(np.random.default_rng(0), 10000)
  lp = np.asarray(Checkerboard().log_prob(jnp.asarray(x)))
  np.testing.assert_allclose(lp, -np.log(8), rtol=1e-6)
  # Every one of the 8 dark squares is used about equally.
  cells = np.floor(x).astype(int)
  _, counts = np.unique(cells, axis=0, return_counts=True)
  assert len(counts) == 8 and counts.min() > 0.9 * 10000 / 8


def test_rings_radii():
  dist = ConcentricRings(noise=0.0)
  r = np.linalg.norm(dist.sample(np.random.default_rng(0), 1000), axis=1)
  assert np.all(np.min(np.abs(r[:, None] - np.array(dist.radii)[None]), axis=1) < 1e-9)


def test_moons_and_swissroll_ranges():
  for dist in (TwoMoons(), SwissRoll()):
    x = dist.sample(np.random.default_rng(0), 5000)
    assert np.abs(x.mean(0)).max() < 0.6 and 0.5 < np.abs(x).max() < 3.5


@pytest.mark.parametrize("centered", [True, False])
def test_scaler_round_trip(centered):
  x = np.linspace(0, 1, 11)
  y = get_data_scaler(centered)(x)
  np.testing.assert_allclose(get_data_inverse_scaler(centered)(y), x)
  assert (y.min(), y.max()) == ((-1.0, 1.0) if centered else (0.0, 1.0))


def test_mixture_batches_with_labels_are_the_same_points_with_their_components():
  """``labels=True`` gives the points of the unlabelled batch and the component each was drawn
  from: with well-separated modes, the nearest mean is the component (8 modes 0.15 wide on a ring
  of radius 2: neighbours 1.53 apart, more than 5 std from the midpoint)."""
  gmm = GaussianMixture.ring()
  assert gmm.num_classes == 8
  x, y = next(gmm.batches(2000, seed=4, start_step=7, labels=True))
  np.testing.assert_array_equal(x, next(gmm.batches(2000, seed=4, start_step=7)))
  nearest = np.argmin(((x[:, None] - np.asarray(gmm.means)[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_array_equal(nearest, y)
  assert y.dtype == np.int32 and np.bincount(y).min() > 180
  np.testing.assert_array_equal(gmm.held_out_labels(50, 3), next(gmm.batches(50, 3, split="test",
                                                                             labels=True))[1])
  with pytest.raises(ValueError, match="TwoMoons: has no class labels"):
    next(TwoMoons().batches(4, seed=0, labels=True))
