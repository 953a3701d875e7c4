"""Sample-quality metrics against closed forms: the Frechet (2-Wasserstein) distance of Gaussians."""

import numpy as np
import pytest

from score_sde_jax.metrics import frechet_distance, frechet_distance_from_stats, gaussian_stats


def _random_cov(rng, d, rank=None):
  a = rng.standard_normal((d, rank or d))
  return a @ a.T / d


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
  # Commuting covariances: W2^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
  rng = np.random.default_rng(0)
  a, b = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
  mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
  want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  got = frechet_distance_from_stats(mu1, np.diag(a), mu2, np.diag(b))
  np.testing.assert_allclose(got, want, rtol=1e-12)


# A zero eigenvalue of a covariance comes out of eigh as +-(D eps ||C||^2), and its square root as
# up to sqrt(D eps) ||C|| (about 3e-8 in 2-D, 4e-8 in 8-D, with ||C|| ~ 1): singular covariances
# are exact to that, not to round-off.
def _atol(rank, d):
  return 1e-12 if rank == d else 2 * d * np.sqrt(d * np.finfo(np.float64).eps) * 3


@pytest.mark.parametrize("rank", [2, 1], ids=["full", "rank1"])
def test_frechet_distance_in_2d_matches_the_trace_of_a_2x2_square_root(rank):
  # For 2x2 M = S1 S2 (real eigenvalues l1, l2 >= 0): tr M^1/2 = sqrt(tr M + 2 sqrt(det M)).
  rng = np.random.default_rng(1)
  atol = _atol(rank, 2)
  for _ in range(20):
    s1, s2 = _random_cov(rng, 2, rank), _random_cov(rng, 2)
    m = s1 @ s2
    cross = np.sqrt(np.trace(m) + 2 * np.sqrt(max(np.linalg.det(m), 0.0)))
    mu1, mu2 = rng.standard_normal(2), rng.standard_normal(2)
    want = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross
    got = frechet_distance_from_stats(mu1, s1, mu2, s2)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=atol)
    np.testing.assert_allclose(frechet_distance_from_stats(mu2, s2, mu1, s1), got, rtol=1e-9,
                               atol=atol)   # symmetric


def test_frechet_distance_is_zero_for_one_gaussian_even_when_singular():
  rng = np.random.default_rng(2)
  for rank in (8, 3):
    s = _random_cov(rng, 8, rank)
    assert abs(frechet_distance_from_stats(np.ones(8), s, np.ones(8), s)) < _atol(rank, 8) * 8


def test_frechet_distance_of_samples_converges_to_the_gaussians():
  # Fitted Gaussians of n draws: the estimate's bias is O(D / n); at n = 200,000 in 3-D the
  # sampling error of the statistics is ~ 1e-2 relative at most (measured spread 1e-3).
  rng = np.random.default_rng(3)
  s1, s2 = _random_cov(rng, 3), _random_cov(rng, 3)
  mu1, mu2 = np.zeros(3), np.array([0.5, -0.2, 0.1])
  x = rng.multivariate_normal(mu1, s1, 200_000)
  y = rng.multivariate_normal(mu2, s2, 200_000)
  np.testing.assert_allclose(frechet_distance(x, y), frechet_distance_from_stats(mu1, s1, mu2, s2),
                             rtol=2e-2)
  mean, cov = gaussian_stats(x)
  np.testing.assert_allclose(cov, np.cov(x, rowvar=False), rtol=1e-12)


def test_frechet_distance_refuses_mismatched_shapes():
  with pytest.raises(ValueError, match=r"features: expected an array \(n >= 2, D\), got shape \(1, 3\)"):
    frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
  with pytest.raises(ValueError, match="do not describe two Gaussians of one dimension"):
    frechet_distance(np.zeros((4, 3)), np.zeros((5, 2)))


def test_sample_range_check_counts_values_outside_the_data_range(capsys):
  """Images: values outside [-0.1, 1.1]; uniform on [-1, 2] puts 0.6 outside (6400 values:
  standard error 0.006). Points: outside the held-out range widened by a tenth on each side; draws of the
  data law itself land there with probability below 2 / 601 per coordinate (beyond the largest
  or smallest of 600 held-out points), noise of scale 10 mostly does."""
  import types
  from score_sde_jax.data import GaussianMixture
  from score_sde_jax.modes.sample import range_check
  rng = np.random.default_rng(0)
  images = types.SimpleNamespace(kind="image")
  result = range_check(images, rng.uniform(-1, 2, (100, 8, 8, 1)))   # outside: 1.8 of 3
  assert abs(result["share_outside_data_range"] - 0.6) < 0.03 and result["data_range"] == [-0.1, 1.1]
  err = capsys.readouterr().err
  assert err.startswith("warning: 6") and "% of the sample values lie outside [-0.1, 1.1]" in err
  assert "(range -1" in err
  # A trained model's overshoot at the exact-0 background is not flagged.
  assert range_check(images, rng.uniform(-0.09, 1.09, (10, 8, 8, 1)))["share_outside_data_range"] == 0
  assert err.count("\n") == 1
  assert range_check(images, rng.uniform(0, 1, (10, 8, 8, 1)))["share_outside_data_range"] == 0.0
  assert capsys.readouterr().err == ""
  nan = rng.uniform(0, 1, (10, 8, 8, 1))
  nan[0, 0, 0, 0] = np.nan
  np.testing.assert_allclose(range_check(images, nan)["share_outside_data_range"], 1 / 640, rtol=1e-12)
  ring = GaussianMixture.ring()
  points = types.SimpleNamespace(kind="points")
  held_out = ring.sample(rng, 600)
  good = range_check(points, ring.sample(rng, 2000), held_out)["share_outside_data_range"]
  assert good < 0.02 and capsys.readouterr().err == ""
  noise = range_check(points, 10 * rng.normal(size=(2000, 2)), held_out)
  assert noise["share_outside_data_range"] > 0.5
  assert "of the sample values lie outside the held-out data's range" in capsys.readouterr().err


def test_kid_is_unbiased_against_the_exact_squared_mmd():
  """KID's estimate of the squared MMD with the cubic kernel, on two discrete distributions
  whose exact value is a finite sum: the mean of 2000 estimates from independent draws of 50 is
  within 4 standard errors of it (measured: 3.945 +- 0.049 against 3.935), and two draws of one
  distribution give 0 within 4 of KID's own standard errors."""
  from score_sde_jax.metrics import _polynomial_kernel, kid
  pts = np.array([[1.0, 0, 0, 2], [0, 1, -1, 0], [2, 2, 0, -1]])
  p, q = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.3, 0.5])
  k = _polynomial_kernel(pts, pts)
  exact = p @ k @ p + q @ k @ q - 2 * p @ k @ q
  est = []
  for s in range(2000):
    r = np.random.default_rng(100 + s)
    est.append(kid(pts[r.choice(3, 50, p=p)], pts[r.choice(3, 50, p=q)], subset_size=50,
                   num_subsets=1)[0])
  est = np.asarray(est)
  assert abs(est.mean() - exact) < 4 * est.std() / np.sqrt(len(est))
  r = np.random.default_rng(0)
  same, se = kid(pts[r.choice(3, 4000, p=p)], pts[r.choice(3, 4000, p=p)], subset_size=100,
                 num_subsets=400)
  assert abs(same) < 4 * se and se > 0
  with pytest.raises(ValueError, match="kid: feature sets of shapes"):
    kid(np.zeros((5, 3)), np.zeros((5, 4)))
  with pytest.raises(ValueError, match="at least 2 examples"):
    kid(np.zeros((1, 3)), np.zeros((5, 3)))
