"""Samplers against the exact Gaussian-mixture score (the network is out of the loop)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde_jax.data import GaussianMixture
from score_sde_jax.metrics import mmd, sliced_wasserstein
from score_sde_jax.sampling import (annealed_langevin_sample, langevin_sample, ode_sample, pc_sample,
                                    sde_sample)
from score_sde_jax.sampling import flow, reverse_sde
from score_sde_jax.sampling import pc as pc_module
from score_sde_jax.sde import VESDE, VPSDE, subVPSDE

N = 2000
SDES = {"vp": VPSDE(), "subvp": subVPSDE(), "ve": VESDE(sigma_max=5.0)}
GMM = GaussianMixture.ring()


@pytest.fixture(scope="module")
def reference():
  """Exact samples and the MMD noise level between two exact sets of size N."""
  ref = GMM.sample(np.random.default_rng(1), N)
  nulls = [mmd(GMM.sample(np.random.default_rng(100 + i), N), ref) for i in range(8)]
  return ref, float(np.mean(nulls) + 5 * np.std(nulls))


def _check_matches_mixture(x, reference):
  ref, threshold = reference
  x = np.asarray(x)
  assert np.all(np.isfinite(x))
  assert mmd(x, ref) < threshold, (mmd(x, ref), threshold)
  nearest = np.argmin(((x[:, None, :] - GMM.means[None]) ** 2).sum(-1), axis=1)
  counts = np.bincount(nearest, minlength=8)
  sd = np.sqrt(N * (1 / 8) * (7 / 8))
  assert np.all(np.abs(counts - N / 8) < 4.5 * sd), counts


def _score(sde):
  return lambda x, t: GMM.marginal_score(sde, x, t)


PC_CASES = [(s, p, c) for s, p, c in itertools.product(SDES, ["euler_maruyama", "reverse_diffusion",
                                                               "ancestral_sampling", "none"],
                                                       ["langevin", "ald", "none"])
            if not (p == "none" and c == "none") and not (p == "ancestral_sampling" and s == "subvp")]


# make test: each predictor and each corrector once, on VP; the rest are slow (make test-all).
FAST_PC = {("vp", "euler_maruyama", "langevin"), ("vp", "reverse_diffusion", "ald"),
           ("vp", "ancestral_sampling", "none"), ("vp", "none", "langevin"),
           ("ve", "none", "ald")}   # NCSN's annealed Langevin dynamics, as its configs set it


@pytest.mark.parametrize("sde_name,predictor,corrector", [
    case if case in FAST_PC else pytest.param(*case, marks=pytest.mark.slow) for case in PC_CASES])
def test_pc_samples_match_the_mixture(sde_name, predictor, corrector, reference):
  sde = SDES[sde_name]
  kw = dict(num_steps=200)
  if predictor == "none":  # corrector-only sampling needs larger Langevin steps
    kw.update(n_steps=2, snr=0.5 if corrector == "langevin" else 1.0)
  x, nfe = pc_sample(jax.random.PRNGKey(0), sde, _score(sde), (N, 2), predictor=predictor,
                     corrector=corrector, **kw)
  _check_matches_mixture(x, reference)


@pytest.mark.parametrize("sde_name", SDES)
def test_ode_and_diffrax_sde_samples_match_the_mixture(sde_name, reference):
  sde = SDES[sde_name]
  x, _ = ode_sample(jax.random.PRNGKey(0), sde, _score(sde), (N, 2))
  _check_matches_mixture(x, reference)
  x, _ = sde_sample(jax.random.PRNGKey(0), sde, _score(sde), (N, 2), num_steps=200)
  _check_matches_mixture(x, reference)


def test_ancestral_sampling_refuses_subvp():
  with pytest.raises(ValueError, match="VPSDE and VESDE only"):
    pc_sample(jax.random.PRNGKey(0), subVPSDE(), _score(subVPSDE()), (4, 2),
              predictor="ancestral_sampling")


def test_unknown_predictor_or_corrector_lists_known():
  with pytest.raises(ValueError, match="predictor='heun'.*known: \\['ancestral_sampling'"):
    pc_sample(jax.random.PRNGKey(0), VPSDE(), _score(VPSDE()), (4, 2), predictor="heun")
  with pytest.raises(ValueError, match="corrector='hmc'.*known: \\['ald', 'langevin', 'none'\\]"):
    pc_sample(jax.random.PRNGKey(0), VPSDE(), _score(VPSDE()), (4, 2), corrector="hmc")


@pytest.mark.parametrize("sde_name", SDES)
def test_ode_maps_prior_latent_of_gaussian_data_in_closed_form(sde_name):
  """Gaussian data N(mu, v0 I): the flow is x_t = a mu + sqrt(v(t) / v(T)) (x_T - a(T) mu)."""
  sde = SDES[sde_name]
  mu, v0, eps = np.array([1.0, -0.5]), 0.3, 1e-3
  gauss = GaussianMixture([1.0], mu[None], [np.sqrt(v0)])
  z = sde.prior_sampling(jax.random.PRNGKey(3), (64, 2))
  x, _ = ode_sample(None, sde, lambda x, t: gauss.marginal_score(sde, x, t), (64, 2), z=z,
                    denoise=False, eps=eps)

  def a_v(t):
    a, s = (float(v.ravel()[0]) for v in sde.marginal_prob(jnp.ones((1, 1)), jnp.array([t])))
    return a, a**2 * v0 + s**2

  a_t, v_t = a_v(sde.T)
  a_e, v_e = a_v(eps)
  expected = a_e * mu + np.sqrt(v_e / v_t) * (np.asarray(z) - a_t * mu)
  np.testing.assert_allclose(x, expected, atol=2e-4 * max(1.0, np.abs(expected).max()))


@pytest.mark.slow
@pytest.mark.parametrize("sde_name", SDES)
def test_reverse_sde_solvers_reach_the_exact_gaussian_marginal(sde_name):
  """Gaussian data N(mu, v0 I): samples at eps have mean a(eps) mu and variance v(eps) exactly.

  Checks the diffrax solve backwards in time (Brownian motion on [eps, T]) and
  the scan predictors against the closed form, to Monte-Carlo error.
  """
  sde = SDES[sde_name]
  mu, v0, eps, n = np.array([1.0, -0.5]), 0.3, 1e-3, 20000
  gauss = GaussianMixture([1.0], mu[None], [np.sqrt(v0)])
  score = lambda x, t: gauss.marginal_score(sde, x, t)
  a, s = (float(v.ravel()[0]) for v in sde.marginal_prob(jnp.ones((1, 1)), jnp.array([eps])))
  mean, var = a * mu, a**2 * v0 + s**2
  key = jax.random.PRNGKey(4)
  runs = {"diffrax": sde_sample(key, sde, score, (n, 2), num_steps=500, eps=eps, denoise=False)[0],
          "em": pc_sample(key, sde, score, (n, 2), predictor="euler_maruyama", corrector="none",
                          num_steps=500, eps=eps, denoise=False)[0]}
  for name, x in runs.items():
    x = np.asarray(x, np.float64)
    np.testing.assert_allclose(x.mean(0), mean, atol=4 * np.sqrt(var / n) + 0.01, err_msg=name)
    np.testing.assert_allclose(x.var(0), [var, var], rtol=4 * np.sqrt(2 / n) + 0.02, err_msg=name)


def test_ode_with_given_latent_is_deterministic_and_per_example():
  sde = SDES["vp"]
  score = _score(sde)   # one function: the three calls share one compiled program
  z = jax.random.normal(jax.random.PRNGKey(0), (16, 2))
  x1, _ = ode_sample(jax.random.PRNGKey(1), sde, score, (16, 2), z=z)
  x2, _ = ode_sample(jax.random.PRNGKey(2), sde, score, (16, 2), z=z)
  np.testing.assert_array_equal(x1, x2)
  # Per-example step sizes: the first 4 examples decode the same beside other companions.
  x3, _ = ode_sample(None, sde, score, (16, 2), z=jnp.concatenate([z[:4], 3 * z[4:]]))
  np.testing.assert_allclose(x3[:4], x1[:4], rtol=1e-5, atol=1e-5)


def _counting(score_fn):
  """A score function that counts its (batched) evaluations at run time."""
  count = {"n": 0}

  def bump(x):  # under vmap (per-example ODE solves) x gains a leading axis
    count["n"] += 1
    return np.zeros(np.shape(x)[:-2], np.float32)

  def counted(x, t):
    tick = jax.pure_callback(bump, jax.ShapeDtypeStruct((), jnp.float32), x,
                             vmap_method="broadcast_all")
    return score_fn(x, t) + jnp.reshape(tick, (1,) * x.ndim)[..., :1] * 0

  return counted, count


@pytest.mark.parametrize("case", [
    dict(kind="pc", predictor="reverse_diffusion", corrector="langevin", n_steps=2),
    dict(kind="pc", predictor="none", corrector="ald", n_steps=3),
    dict(kind="pc", predictor="euler_maruyama", corrector="none", n_steps=1),
    dict(kind="ode", solver="tsit5"), dict(kind="ode", solver="dopri5", denoise=False),
    dict(kind="ode", solver="euler", num_steps=17), dict(kind="ode", solver="heun", num_steps=9),
    dict(kind="sde")], ids=lambda c: "-".join(str(v) for v in c.values()))
def test_reported_nfe_equals_score_calls(case):
  case = dict(case)
  sde = SDES["vp"]
  counted, count = _counting(_score(sde))
  key = jax.random.PRNGKey(0)
  kind = case.pop("kind")
  if kind == "pc":
    x, nfe = pc_sample(key, sde, counted, (32, 2), num_steps=25, **case)
  elif kind == "ode":
    x, nfe = ode_sample(key, sde, counted, (32, 2), rtol=1e-3, atol=1e-3, **case)
  else:
    x, nfe = sde_sample(key, sde, counted, (32, 2), num_steps=30)
  jax.block_until_ready(x)
  assert count["n"] == nfe > 0


def test_samplers_compile_once_per_shape():
  sde = SDES["vp"]
  score = _score(sde)
  for fn, jitted in [(lambda k: pc_sample(k, sde, score, (8, 2), num_steps=25), pc_module._pc_sample),
                     (lambda k: ode_sample(k, sde, score, (8, 2)), flow._ode_sample),
                     (lambda k: sde_sample(k, sde, score, (8, 2), num_steps=10), reverse_sde._sde_sample)]:
    fn(jax.random.PRNGKey(0))
    size = jitted._cache_size()
    fn(jax.random.PRNGKey(1))
    fn(jax.random.PRNGKey(2))
    assert jitted._cache_size() == size


def test_network_score_with_new_parameters_reuses_compiled_sampler():
  from score_sde_jax import get_score_fn
  from score_sde_jax.models import ScoreMLP
  sde = SDES["vp"]
  model = ScoreMLP(dim=2, hidden=16, num_layers=1)
  init = lambda k: model.init(k, jnp.zeros((1, 2)), jnp.ones(1))["params"]
  x1, _ = pc_sample(jax.random.PRNGKey(0), sde, get_score_fn(sde, model, init(jax.random.PRNGKey(0))),
                    (8, 2), num_steps=25)
  size = pc_module._pc_sample._cache_size()
  x2, _ = pc_sample(jax.random.PRNGKey(0), sde, get_score_fn(sde, model, init(jax.random.PRNGKey(1))),
                    (8, 2), num_steps=25)
  assert pc_module._pc_sample._cache_size() == size
  assert not np.allclose(x1, x2)


def test_langevin_sample_targets_a_fixed_gaussian():
  """ULA on N(m, s^2): stationary law N(m, s^2 / (1 - eps / (2 s^2))) (exact for the Gaussian)."""
  m, s2, step = 1.5, 0.5, 0.05
  x, nfe = langevin_sample(jax.random.PRNGKey(0), lambda x: -(x - m) / s2, jnp.zeros((20000, 1)),
                           step_size=step, n_steps=300)
  assert nfe == 300
  np.testing.assert_allclose(float(jnp.mean(x)), m, atol=0.02)
  np.testing.assert_allclose(float(jnp.var(x)), s2 / (1 - step / (2 * s2)), rtol=0.03)


def test_annealed_langevin_samples_the_mixture(reference):
  sde = SDES["ve"]
  x, nfe = annealed_langevin_sample(jax.random.PRNGKey(0), sde, _score(sde), (N, 2),
                                    n_steps_each=5, step_lr=1e-4, num_scales=100)
  assert nfe == 501   # 100 levels x 5 steps, and the final denoising step
  _check_matches_mixture(x, reference)


def _gaussian_score(sde, mu, s2):
  """Exact score of the time-t marginal of data N(mu, s2 I): N(a mu, a^2 s2 + std^2)."""
  def score(x, t):
    a = sde.marginal_prob(jnp.ones((x.shape[0], 1)), t)[0]
    std = sde.marginal_prob(x, t)[1][:, None]
    return -(x - a * mu) / (a**2 * s2 + std**2)
  return score


@pytest.mark.parametrize("sde_name", SDES)
def test_tweedie_denoising_is_the_gaussian_posterior_mean(sde_name):
  """``(x + std^2 s) / a`` = E[x0 | x_t] = mu + a s2 / (a^2 s2 + std^2) (x - a mu) for N(mu, s2)."""
  from score_sde_jax.sampling.common import tweedie_denoise
  sde, mu, s2 = SDES[sde_name], 0.7, 0.3
  x = jax.random.normal(jax.random.PRNGKey(0), (64, 3))
  t = jnp.linspace(0.01, 0.9, 64)
  a = sde.marginal_prob(jnp.ones((64, 1)), t)[0]
  std = sde.marginal_prob(x, t)[1][:, None]
  posterior_mean = mu + a * s2 / (a**2 * s2 + std**2) * (x - a * mu)
  np.testing.assert_allclose(tweedie_denoise(sde, _gaussian_score(sde, mu, s2), x, t),
                             posterior_mean, rtol=1e-4, atol=1e-5)   # float32, two routes


def test_annealed_langevin_ends_with_ncsnv2s_denoising_step():
  """NCSN's sampler (predictor none, corrector ald) and annealed_langevin_sample: with the same
  key, the denoised sample is E[x0 | x_L] of the undenoised one, mu + s2 / (s2 + sigma_L^2)
  (x_L - mu) for Gaussian data, one more score evaluation."""
  sde, mu, s2 = VESDE(sigma_min=0.05, sigma_max=5.0, N=50), 0.5, 0.05**2
  score = _gaussian_score(sde, mu, s2)
  key = jax.random.PRNGKey(3)
  for sample in (lambda denoise: pc_sample(key, sde, score, (512, 2), predictor="none",
                                           corrector="ald", snr=0.16, n_steps=2, denoise=denoise),
                 lambda denoise: annealed_langevin_sample(key, sde, score, (512, 2), n_steps_each=2,
                                                          step_lr=2e-5, denoise=denoise)):
    (raw, nfe_raw), (denoised, nfe) = sample(False), sample(True)
    sigma_l = float(sde.marginal_prob(jnp.zeros((1, 1)), jnp.array([sde.sampling_eps]))[1][0])
    np.testing.assert_allclose(denoised, mu + s2 / (s2 + sigma_l**2) * (raw - mu), rtol=1e-5,
                               atol=1e-6)
    assert nfe == nfe_raw + 1


def test_annealed_langevin_refuses_divergent_steps():
  with pytest.raises(ValueError, match="step_lr=0.0001: must be <= 2 sigma"):
    annealed_langevin_sample(jax.random.PRNGKey(0), SDES["subvp"], _score(SDES["subvp"]), (4, 2),
                             step_lr=1e-4, num_scales=10)


def test_sliced_wasserstein_of_shifted_gaussians():
  """Projections of N(0, I) and N(d, I) differ by a shift u.d: SW2^2 = |d|^2 / D."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal((20000, 2))
  d = np.array([0.6, -0.8])
  sw = sliced_wasserstein(x, x + d, n_projections=2000)
  np.testing.assert_allclose(sw, np.sqrt(1.0 / 2), rtol=0.03)
  assert sliced_wasserstein(x, x) == 0.0


def test_mmd_is_small_for_same_law_and_large_for_a_shift():
  rng = np.random.default_rng(0)
  x, y = rng.standard_normal((1000, 2)), rng.standard_normal((1000, 2))
  assert abs(mmd(x, y)) < 0.01 < mmd(x, y + 0.5)


def test_a_progress_bar_follows_the_steps_and_changes_no_sample(monkeypatch):
  """``pc_sample(progress=...)`` and a ``progress.stage`` around the call show a bar over the
  steps, fed from inside the compiled scan (about once per percent, and at the last step); the
  samples are bit for bit those without it."""
  from score_sde_jax.sampling import progress
  bars = []

  class Recording(progress.tqdm):
    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      self.updates = 0
      bars.append(self)

    def update(self, n=1):
      self.updates += 1
      return super().update(n)

  monkeypatch.setattr(progress, "tqdm", Recording)
  sde = VPSDE()
  gmm = GaussianMixture.ring()
  score = lambda x, t: gmm.marginal_score(sde, x, t)
  run = lambda **kw: np.asarray(pc_sample(jax.random.PRNGKey(0), sde, score, (64, 2),
                                          num_steps=250, **kw)[0])
  plain = run()
  assert bars == []
  np.testing.assert_array_equal(run(progress="named"), plain)
  with progress.stage("staged"):
    np.testing.assert_array_equal(run(), plain)
  assert [(b.desc, b.n, b.total) for b in bars] == [("named", 250, 250), ("staged", 250, 250)]
  assert all(100 <= b.updates <= 126 for b in bars), [b.updates for b in bars]  # every 2 steps
