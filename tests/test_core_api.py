"""The core's contracts: SDE-owned chains and time grids, the one probability-flow solve with solver
names or diffrax objects, result shapes, keys, scalar times and the inputs users pass."""

import subprocess
import sys

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import score_sde_jax
from score_sde_jax import likelihood, sampling
from score_sde_jax.data import GaussianMixture, get_data_scaler
from score_sde_jax.sampling import ode_sample, pc_sample, sde_sample
from score_sde_jax.sde import VESDE, VPSDE, subVPSDE

GMM = GaussianMixture.ring()
GAUSS = GaussianMixture([1.0], np.array([[1.0, -0.5]]), [np.sqrt(0.3)])
BROAD = GaussianMixture([1.0], np.zeros((1, 2)), [0.6])  # covers [-1, 1]^2, for bits/dim


def _score(dist, sde):
  return lambda x, t: dist.marginal_score(sde, x, t)


def _counting(score_fn):
  """A score function that counts its (batched) evaluations at run time (also under ``jvp``)."""
  count = {"n": 0}

  def bump(x):
    count["n"] += 1
    return np.zeros(np.shape(x)[:-2], np.float32)

  @jax.custom_jvp
  def tick(x):
    return jax.pure_callback(bump, jax.ShapeDtypeStruct((), jnp.float32), x,
                             vmap_method="broadcast_all")

  @tick.defjvp
  def _(primals, tangents):
    value = tick(*primals)
    return value, jnp.zeros_like(value)

  def counted(x, t):
    return score_fn(x, t) + jnp.reshape(tick(x), (1,) * x.ndim)[..., :1] * 0

  return counted, count


# --- The SDE owns its chain; samplers own their grid -----------------------------------------

GRID_CASES = [(sde, p) for sde in (VPSDE(), subVPSDE(), VESDE(sigma_max=5.0))
              for p in ("reverse_diffusion", "euler_maruyama", "ancestral_sampling")
              if sde.has_discrete_chain or p != "ancestral_sampling"]


@pytest.mark.parametrize("sde,predictor", GRID_CASES,
                         ids=[f"{type(s).__name__}-{p}" for s, p in GRID_CASES])
def test_sampler_grid_is_the_chain_of_num_steps_levels(sde, predictor):
  """pc_sample(num_steps=n) walks the chain of n levels: the same samples, bit for bit, as the
  SDE built with N = n; the SDE given is not changed."""
  import dataclasses
  n, score = 40, _score(GMM, sde)
  key = jax.random.PRNGKey(0)
  x, nfe = pc_sample(key, sde, score, (64, 2), predictor=predictor, num_steps=n)
  short = dataclasses.replace(sde, N=n)
  x_short, nfe_short = pc_sample(key, short, score, (64, 2), predictor=predictor)
  np.testing.assert_array_equal(x, x_short)
  assert nfe == nfe_short == 2 * n and sde.N == 1000


@pytest.mark.parametrize("cls", [VPSDE, subVPSDE, VESDE])
def test_discretize_on_a_grid_equals_the_chain_of_that_length(cls):
  x, t = jnp.array([[0.7, -1.3], [2.0, 0.1]]), jnp.array([0.31, 0.77])
  f, g = cls().discretize(x, t, num_steps=50)
  f50, g50 = cls(N=50).discretize(x, t)
  np.testing.assert_array_equal(f, f50)
  np.testing.assert_array_equal(g, g50)


def test_chain_index_rules():
  """VP: the DDPM step at or below t (exact at the chain's own times despite round-off);
  VE: the nearest NCSN level counted from sigma_max."""
  vp, ve = VPSDE(N=1000), VESDE(N=1000)
  t = jnp.array([0.0, 0.01, 0.5, 0.9995, 1.0])
  np.testing.assert_array_equal(vp.chain_index(t), [0, 9, 499, 998, 999])
  np.testing.assert_array_equal(ve.chain_index(t), [999, 989, 500, 0, 0])
  for sde in (vp, ve, VPSDE(N=2000), VESDE(N=2000)):
    i = jnp.arange(sde.N)
    np.testing.assert_array_equal(sde.chain_index(sde.chain_time(i)), i)


def test_ancestral_sampling_has_no_probability_flow_form():
  with pytest.raises(ValueError, match="ancestral_sampling' with probability_flow=True"):
    pc_sample(jax.random.PRNGKey(0), VPSDE(), _score(GMM, VPSDE()), (4, 2),
              predictor="ancestral_sampling", probability_flow=True)


def test_default_eps_is_the_sdes_own():
  assert VPSDE().sampling_eps == subVPSDE().sampling_eps == 1e-3 and VESDE().sampling_eps == 1e-5
  sde = VESDE(sigma_max=5.0)
  key = jax.random.PRNGKey(0)
  default, _ = pc_sample(key, sde, _score(GMM, sde), (8, 2), num_steps=20)
  explicit, _ = pc_sample(key, sde, _score(GMM, sde), (8, 2), num_steps=20, eps=1e-5)
  np.testing.assert_array_equal(default, explicit)


# --- One probability-flow solve: names or diffrax objects, one NFE rule ------------------------

@pytest.mark.parametrize("solver,controller,num_steps", [
    (diffrax.Bosh3(), None, None),
    ("tsit5", diffrax.PIDController(rtol=1e-6, atol=1e-6), None),
    (diffrax.Ralston(), None, 400)], ids=["bosh3", "tsit5-pid-object", "ralston-fixed"])
def test_solver_objects_give_the_closed_form_flow_and_counted_nfe(solver, controller, num_steps):
  """Gaussian data: the ODE maps a latent to a_e mu + sqrt(v_e / v_T)(z - a_T mu); the reported
  NFE equals the score calls counted at run time."""
  sde, eps, mu, v0 = VPSDE(), 1e-3, np.array([1.0, -0.5]), 0.3
  counted, count = _counting(_score(GAUSS, sde))
  z = sde.prior_sampling(jax.random.PRNGKey(3), (32, 2))
  x, nfe = ode_sample(None, sde, counted, (32, 2), z=z, denoise=False, eps=eps, solver=solver,
                      stepsize_controller=controller, num_steps=num_steps, rtol=1e-5, atol=1e-5)
  jax.block_until_ready(x)
  assert count["n"] == nfe > 0

  def a_v(t):
    a, s = (float(v[0]) if v.ndim == 1 else float(v[0, 0])
            for v in sde.marginal_prob(jnp.ones((1, 1)), t))
    return a, a**2 * v0 + s**2

  (a_t, v_t), (a_e, v_e) = a_v(sde.T), a_v(eps)
  expected = a_e * mu + np.sqrt(v_e / v_t) * (np.asarray(z) - a_t * mu)
  np.testing.assert_allclose(x, expected, atol=2e-4 * max(1.0, np.abs(expected).max()))


def test_likelihood_nfe_follows_the_same_rule():
  """Per-example NFE of the likelihood: the largest equals the batched score calls counted."""
  sde = VPSDE()
  counted, count = _counting(_score(GMM, sde))
  x = jnp.asarray(GMM.sample(np.random.default_rng(0), 16), jnp.float32)
  logp, z, nfe = likelihood.log_likelihood(jax.random.PRNGKey(0), sde, counted, x, rtol=1e-3,
                                           atol=1e-3)
  jax.block_until_ready(logp)
  assert nfe.shape == (16,) and int(jnp.max(nfe)) == count["n"]


def test_decode_is_ode_sample_from_the_latent():
  sde = VESDE(sigma_max=5.0)
  z = sde.prior_sampling(jax.random.PRNGKey(1), (16, 2))
  score = _score(GMM, sde)
  decoded = likelihood.decode(sde, score, z)
  sampled, _ = ode_sample(None, sde, score, z.shape, z=z, eps=1e-5, denoise=False)
  np.testing.assert_array_equal(decoded, sampled)


def test_non_adaptive_solver_without_steps_is_refused():
  with pytest.raises(ValueError, match="not adaptive; give num_steps"):
    ode_sample(jax.random.PRNGKey(0), VPSDE(), _score(GMM, VPSDE()), (4, 2), solver="euler")
  with pytest.raises(ValueError, match="solver='rk45': unknown"):
    likelihood.encode(VPSDE(), _score(GMM, VPSDE()), jnp.zeros((4, 2)), solver="rk45")


# --- Results, keys, inputs ---------------------------------------------------------------------

def test_results_are_named_tuples_that_unpack():
  sde = VPSDE()
  score = _score(GMM, sde)
  res = pc_sample(jax.random.PRNGKey(0), sde, score, (4, 2), num_steps=25)
  assert isinstance(res, score_sde_jax.SampleResult) and res.nfe == 50
  x, nfe = res
  np.testing.assert_array_equal(x, res.samples)
  data = jnp.asarray(GMM.sample(np.random.default_rng(0), 4), jnp.float32)
  lik = likelihood.log_likelihood(None, sde, score, data, divergence="exact")
  assert isinstance(lik, score_sde_jax.LikelihoodResult) and lik.logp.shape == (4,)
  bpd = likelihood.bits_per_dim(jax.random.PRNGKey(1), sde, _score(BROAD, sde),
                                jnp.zeros((4, 2), jnp.int32), num_levels=4)
  assert isinstance(bpd, score_sde_jax.BitsPerDimResult) and bpd.bpd.shape == (4,)


@pytest.mark.parametrize("call,what", [
    (lambda s, f: pc_sample(None, s, f, (4, 2)), "pc_sample"),
    (lambda s, f: ode_sample(None, s, f, (4, 2)), "ode_sample without a latent"),
    (lambda s, f: sde_sample(None, s, f, (4, 2)), "sde_sample"),
    (lambda s, f: likelihood.log_likelihood(None, s, f, jnp.zeros((4, 2))), "the Hutchinson"),
    (lambda s, f: likelihood.bits_per_dim(None, s, f, jnp.zeros((4, 2), jnp.int32)), "bits_per_dim")])
def test_random_functions_require_a_key(call, what):
  with pytest.raises(ValueError, match=f"key=None: {what}"):
    call(VPSDE(), _score(GMM, VPSDE()))


BAD_KEYS = [(0, "got int 0"), (1.5, "got float 1.5"), (np.uint32(7), "got uint32 7"),
            (np.zeros((), np.uint32), "got a uint32 scalar"),
            (np.zeros(2, np.float32), "got an array of float32 with shape (2,)")]


@pytest.mark.parametrize("call,what", [
    (lambda k, s, f: pc_sample(k, s, f, (4, 2)), "pc_sample"),
    (lambda k, s, f: sde_sample(k, s, f, (4, 2)), "sde_sample"),
    (lambda k, s, f: sampling.dpm_solver_sample(k, s, f, (4, 2)), "dpm_solver_sample"),
    (lambda k, s, f: likelihood.log_likelihood(k, s, f, jnp.zeros((4, 2))), "the Hutchinson")])
def test_a_number_or_other_array_given_as_key_is_one_line(call, what):
  """Not JAX's "invalid PRNG key data" from inside a compiled program."""
  for bad, got in BAD_KEYS:
    with pytest.raises(TypeError) as e:
      call(bad, VPSDE(), _score(GMM, VPSDE()))
    message = str(e.value)
    assert message.startswith(f"key: expected a PRNG key (jax.random.key or PRNGKey), {got}"), message
    assert what in message and "\n" not in message


def test_typed_and_raw_keys_both_sample():
  score = _score(GMM, VPSDE())
  x_typed, _ = pc_sample(jax.random.key(0), VPSDE(), score, (4, 2), num_steps=21)
  x_raw, _ = pc_sample(jax.random.PRNGKey(0), VPSDE(), score, (4, 2), num_steps=21)
  np.testing.assert_array_equal(x_typed, x_raw)   # the same threefry key data


def test_bits_per_dim_without_randomness_takes_no_key():
  """No dequantization and the exact trace: nothing is random, and the result is the bound's
  formula at the grid points k / K (the paper's standalone convention)."""
  sde, levels = VPSDE(), 4
  x_int = jnp.array([[0, 3], [1, 2], [2, 2]])
  scaler = get_data_scaler(True)
  score = _score(BROAD, sde)
  bpd, _ = likelihood.bits_per_dim(None, sde, score, x_int, num_levels=levels, scaler=scaler,
                                   dequantize_data=False, divergence="exact")
  logp, _, _ = likelihood.log_likelihood(None, sde, score, scaler(x_int / levels),
                                         divergence="exact")
  np.testing.assert_allclose(bpd, -logp / (2 * np.log(2)) + np.log2(levels) - 1, rtol=1e-6)


def test_bits_per_dim_refuses_levels_outside_the_range():
  sde = VPSDE()
  with pytest.raises(ValueError, match="levels from 0 to 300; expected 0..255"):
    likelihood.bits_per_dim(jax.random.PRNGKey(0), sde, _score(GMM, sde),
                            jnp.array([[0, 300]]), num_levels=256)


def test_scalar_times_broadcast_everywhere():
  sde = VPSDE()
  x = jnp.asarray(GMM.sample(np.random.default_rng(0), 5), jnp.float32)
  tt = jnp.full((5,), 0.5)
  for fn in (lambda t: sde.marginal_prob(x, t), lambda t: sde.sde(x, t),
             lambda t: sde.discretize(x, t), lambda t: sde.reverse(_score(GMM, sde)).sde(x, t),
             lambda t: GMM.marginal_score(sde, x, t), lambda t: GMM.marginal_log_prob(sde, x, t)):
    for a, b in zip(jax.tree.leaves(fn(0.5)), jax.tree.leaves(fn(tt))):
      assert a.shape == b.shape
      np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match=r"t: shape \(3,\), expected \(\) or \(5,\)"):
    sde.marginal_prob(x, jnp.ones(3))
  with pytest.raises(ValueError, match=r"t: shape \(3,\), expected \(\) or \(5,\)"):
    GMM.marginal_score(sde, x, jnp.ones(3))


def test_numpy_scalars_are_accepted():
  sde = VPSDE(beta_min=np.float32(0.1), beta_max=np.float64(20.0), N=np.int64(1000))
  assert isinstance(sde.beta_min, float) and isinstance(sde.N, int)
  assert hash(sde) == hash(VPSDE(beta_min=float(np.float32(0.1))))
  x, nfe = pc_sample(jax.random.PRNGKey(0), sde, _score(GMM, sde), (4, 2),
                     num_steps=np.int64(25), n_steps=np.int32(1), snr=np.float32(0.16))
  assert nfe == 50 and x.shape == (4, 2)


@pytest.mark.parametrize("bad,match", [(500, r"shape=500: expected a tuple \(batch, ...\)"),
                                       ((0, 2), r"shape=\(0, 2\)"), ((4,), r"shape=\(4,\)")])
def test_bad_shapes_get_one_clear_error(bad, match):
  with pytest.raises(ValueError, match=match):
    pc_sample(jax.random.PRNGKey(0), VPSDE(), _score(GMM, VPSDE()), bad)


@pytest.mark.parametrize("kwargs,match", [({"beta_max": float("inf")}, "beta_max=inf"),
                                          ({"beta_min": float("nan")}, "beta_min=nan"),
                                          ({"N": 2.5}, "N=2.5")])
def test_sde_arguments_must_be_finite_numbers(kwargs, match):
  with pytest.raises(ValueError, match=match):
    VPSDE(**kwargs)


def test_interpolate_batched_pairs_one_by_one():
  rng = np.random.default_rng(0)
  z0, z1 = rng.standard_normal((3, 4, 4, 1)), rng.standard_normal((3, 4, 4, 1))
  alphas = np.linspace(0, 1, 5)
  batched = likelihood.interpolate(z0, z1, alphas)
  assert batched.shape == (3, 5, 4, 4, 1)
  for i in range(3):
    single = likelihood.interpolate(z0[i].reshape(-1), z1[i].reshape(-1), alphas)
    np.testing.assert_allclose(batched[i].reshape(5, -1), single, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(batched[:, 0], z0, atol=1e-6)
  np.testing.assert_allclose(batched[:, -1], z1, atol=1e-6)


def test_scale_by_sigma_is_refused_where_the_parameterisation_has_none():
  from score_sde_jax.models import ScoreMLP
  model = ScoreMLP(dim=2, hidden=8, num_layers=1)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.ones(1))["params"]
  with pytest.raises(ValueError, match="scale_by_sigma=True: VPSDE's network predicts the noise"):
    score_sde_jax.get_score_fn(VPSDE(), model, params, scale_by_sigma=True)


def test_importing_the_library_leaves_matplotlib_alone():
  """No backend switch at import (a notebook's inline backend stays); subpackages are attributes."""
  code = ("import matplotlib; matplotlib.use('svg'); import score_sde_jax, score_sde_jax.viz; "
          "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend(); "
          "import sys; assert 'matplotlib.pyplot' not in sys.modules; "
          "print(score_sde_jax.sampling.pc_sample.__name__, score_sde_jax.likelihood.encode.__name__, "
          "score_sde_jax.data.GaussianMixture.__name__)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.split() == ["pc_sample", "encode", "GaussianMixture"]


def test_no_module_dispatches_on_the_sde_type():
  import pathlib
  import re
  root = pathlib.Path(score_sde_jax.__file__).parent
  offenders = [f"{p.relative_to(root)}:{i + 1}" for p in root.rglob("*.py") if p.name != "sde.py"
               for i, line in enumerate(p.read_text().splitlines())
               if re.search(r"isinstance\(\s*(self\.)?sde\b|type\((self\.)?sde\)\s*(==|!=|is|in)\b", line)]
  assert offenders == []
