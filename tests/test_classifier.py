"""Noise-conditional classifiers: the noise label, the networks, and training on the mixture to
the exact posterior's accuracy (``GaussianMixture.marginal_log_posterior`` is the Bayes
classifier of every time-t marginal)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde_jax.classifier import (classifier_losses, get_classifier_fn, get_classifier_loss_fn,
                                      get_feature_fn, noise_label)
from score_sde_jax.controllable import guided_score
from score_sde_jax.data import GaussianMixture
from score_sde_jax.models.classifier import ClassifierMLP, WideResNet
from score_sde_jax.sampling import pc_sample
from score_sde_jax.sde import VESDE, VPSDE, subVPSDE
from score_sde_jax.train import init_train_state, make_optimizer, make_train_step

RING = GaussianMixture.ring()


def test_noise_label_is_minus_half_log_snr():
  t = jnp.array([1e-3, 0.3, 1.0])
  ve = VESDE()
  np.testing.assert_allclose(noise_label(ve, t), np.log(0.01 * 5000.0 ** np.asarray(t)), rtol=1e-5)
  vp = VPSDE()
  log_a = -0.25 * np.asarray(t) ** 2 * 19.9 - 0.5 * np.asarray(t) * 0.1
  expected = 0.5 * np.log(1 - np.exp(2 * log_a)) - log_a
  np.testing.assert_allclose(noise_label(vp, t), expected, rtol=1e-4)
  sub = subVPSDE()
  np.testing.assert_allclose(noise_label(sub, t), np.log(1 - np.exp(2 * log_a)) - log_a, rtol=1e-4)


def _wrn_count(c_in, k, blocks, mult, emb=128):
  """Parameters of the original's noise-conditional WRN, counted from its definition."""
  n = 9 * c_in * 16                                               # init_conv, no bias
  n += emb + (2 * emb * 4 * emb + 4 * emb) + (16 * emb * emb + 4 * emb)   # Fourier W, 2 Dense
  c_prev = 16
  for width in (16 * mult, 32 * mult, 64 * mult):
    for _ in range(blocks):
      n += 2 * c_prev + 9 * c_prev * width + (4 * emb * width + width) + 2 * width + 9 * width * width
      c_prev = width
  return n + 2 * c_prev + c_prev * k + k


@pytest.mark.parametrize("blocks,mult", [(1, 1), (4, 10)])
def test_wideresnet_parameter_count(blocks, mult):
  model = WideResNet(num_classes=10, blocks_per_group=blocks, channel_multiplier=mult)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                                             jnp.zeros((1,))))
  count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes))
  assert count == _wrn_count(3, 10, blocks, mult)
  if mult == 10:
    assert 36_000_000 < count < 40_000_000    # WRN-28-10 (36.5 M) plus the noise embeddings


@pytest.mark.slow
def test_wideresnet_logits_depend_on_noise_and_are_per_example():
  model = WideResNet(num_classes=3, blocks_per_group=1, channel_multiplier=1)
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1))
  params = model.init(jax.random.PRNGKey(0), x, jnp.zeros((4,)))["params"]
  fn = get_classifier_fn(VESDE(), model, params)
  logits = fn(x, jnp.full((4,), 0.5))
  assert logits.shape == (4, 3)
  np.testing.assert_allclose(fn(x[1:2], jnp.full((1,), 0.5)), logits[1:2], atol=1e-5)
  assert not np.allclose(fn(x, jnp.full((4,), 0.9)), logits, atol=1e-4)
  with pytest.raises(ValueError, match="num_classes=1: expected an integer >= 2"):
    WideResNet(num_classes=1)


@pytest.mark.parametrize("model,x", [
    (WideResNet(num_classes=3, blocks_per_group=1, channel_multiplier=1), (4, 8, 8, 1)),
    (ClassifierMLP(num_classes=5, hidden=16), (4, 2))], ids=["wrn", "mlp"])
@pytest.mark.usefixtures("cheap_compiles")
def test_features_are_what_the_output_layer_reads(model, x):
  # The logits are one Dense layer of the features: logits = features @ W + b.
  x = jax.random.normal(jax.random.PRNGKey(1), x)
  params = model.init(jax.random.PRNGKey(0), x, jnp.zeros((4,)))["params"]
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
  t = jnp.asarray([0.1, 0.3, 0.5, 0.9])
  features = get_feature_fn(VPSDE(), model, params)(x, t)
  out = params[sorted((k for k in params if k.startswith("Dense_")),
                      key=lambda k: int(k.split("_")[1]))[-1]]
  np.testing.assert_allclose(features @ out["kernel"] + out["bias"],
                             get_classifier_fn(VPSDE(), model, params)(x, t), rtol=1e-5, atol=1e-5)
  assert features.shape == (4, out["kernel"].shape[0])


@pytest.mark.slow
@pytest.mark.parametrize("sde", [VPSDE(), VESDE(sigma_max=5.0)], ids=["vp", "ve"])
def test_mlp_classifier_reaches_the_exact_posterior_accuracy(sde):
  """Trained on forward-diffused mixture samples at t ~ U(eps, 1): on 20,000 held-out noisy points
  the EMA network's accuracy is within 0.01 of the Bayes classifier's (the paired difference
  has a standard error of about 0.002) and its cross-entropy exceeds the exact one (a KL
  divergence, >= 0) by less than 0.02 nats. Then, with the exact score, it guides PC sampling to
  the requested component."""
  model = ClassifierMLP(num_classes=8)
  opt = make_optimizer(1e-3, 100, 1.0)
  state = init_train_state(jax.random.PRNGKey(0), model, jnp.zeros((1, 2)), jnp.zeros((1,)), opt)
  step = make_train_step(get_classifier_loss_fn(sde, model), opt, ema_rate=0.99)
  rng = np.random.default_rng(0)
  for _ in range(2000):
    x, y = RING.sample_with_labels(rng, 256)
    state, _ = step(state, (jnp.asarray(x, jnp.float32), jnp.asarray(y)))
  n = 20000
  x, y = RING.sample_with_labels(np.random.default_rng(5), n)
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y)
  t = jax.random.uniform(jax.random.PRNGKey(1), (n,), minval=1e-5, maxval=1.0)
  z = jax.random.normal(jax.random.PRNGKey(2), (n, 2))
  exact_fn = lambda x, t: RING.marginal_log_posterior(sde, x, t)
  net_fn = get_classifier_fn(sde, model, state.ema_params)
  exact_loss, exact_ok = classifier_losses(sde, exact_fn, x, y, t, z)
  net_loss, net_ok = classifier_losses(sde, net_fn, x, y, t, z)
  assert float(net_ok.mean()) > float(exact_ok.mean()) - 0.01
  excess = float(net_loss.mean() - exact_loss.mean())
  assert -0.005 < excess < 0.02, excess

  k, m = 2, 1000
  score = guided_score(lambda x, t: RING.marginal_score(sde, x, t), net_fn, k, num_classes=8)
  samples, _ = pc_sample(jax.random.PRNGKey(3), sde, score, (m, 2), num_steps=200)
  nearest = np.argmin(((np.asarray(samples)[:, None] - RING.means[None]) ** 2).sum(-1), axis=1)
  assert np.mean(nearest == k) > 0.98
