"""Score conversion (time labels, output scalings) and the score MLP."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde_jax.models import ScoreMLP, get_model_class, param_count
from score_sde_jax.models.layers import GaussianFourierProjection, get_timestep_embedding
from score_sde_jax.score import get_score_fn, time_labels
from score_sde_jax.sde import VESDE, VPSDE, subVPSDE


class EchoLabels(nn.Module):
  """Outputs its time label in every coordinate: exposes what score.py feeds and does."""

  @nn.compact
  def __call__(self, x, labels, train=False):
    self.param("unused", nn.initializers.zeros, (1,))
    return jnp.broadcast_to(labels.astype(jnp.float32)[:, None], x.shape)


def _score(sde, continuous, scale_by_sigma=False):
  model = EchoLabels()
  x = jnp.zeros((3, 2))
  params = model.init(jax.random.PRNGKey(0), x, jnp.ones(3))["params"]
  t = jnp.array([0.01, 0.5, 1.0])
  return t, get_score_fn(sde, model, params, continuous, scale_by_sigma=scale_by_sigma)(x, t)


def test_vp_continuous_labels_and_noise_parameterisation():
  sde = VPSDE()
  t, s = _score(sde, True)
  std = np.sqrt(1 - np.exp(-0.5 * t**2 * 19.9 - t * 0.1))
  np.testing.assert_allclose(s[:, 0], -999 * t / std, rtol=1e-5)


def test_subvp_uses_continuous_labels_even_when_discrete():
  sde = subVPSDE()
  t, s = _score(sde, False)
  std = 1 - np.exp(-0.5 * t**2 * 19.9 - t * 0.1)
  np.testing.assert_allclose(s[:, 0], -999 * t / std, rtol=1e-5)


def test_vp_discrete_labels_and_ddpm_std():
  sde = VPSDE()
  t, s = _score(sde, False)
  labels = t * 999
  betas = np.linspace(0.1 / 1000, 20 / 1000, 1000)
  std = np.sqrt(1 - np.cumprod(1 - betas))[labels.astype(int)]
  np.testing.assert_allclose(s[:, 0], -labels / std, rtol=1e-5)


def test_ve_continuous_labels_are_sigma_and_scale_by_sigma():
  sde = VESDE()
  t, s = _score(sde, True)
  sigma = 0.01 * 5000 ** np.asarray(t)
  np.testing.assert_allclose(s[:, 0], sigma, rtol=1e-5)
  _, scaled = _score(sde, True, scale_by_sigma=True)
  np.testing.assert_allclose(scaled, 1.0, rtol=1e-5)


def test_ve_discrete_labels_index_ncsn_sigmas():
  sde = VESDE()
  t = jnp.array([0.01, 0.5, 1.0])
  labels = np.asarray(time_labels(sde, t, continuous=False))
  np.testing.assert_array_equal(labels, np.round((1 - np.asarray(t)) * 999).astype(int))
  _, scaled = _score(sde, False, scale_by_sigma=True)
  ncsn_sigmas = np.exp(np.linspace(np.log(50.0), np.log(0.01), 1000))
  np.testing.assert_allclose(scaled[:, 0], labels / ncsn_sigmas[labels], rtol=1e-5)


def test_timestep_embedding_values():
  emb = get_timestep_embedding(jnp.array([0.0, 3.0]), 8)
  freqs = np.exp(-np.arange(4) * np.log(10000) / 3)
  np.testing.assert_allclose(emb[1], np.concatenate([np.sin(3 * freqs), np.cos(3 * freqs)]), rtol=1e-6)
  np.testing.assert_allclose(emb[0], [0, 0, 0, 0, 1, 1, 1, 1])


def test_fourier_projection_weights_get_no_gradient():
  layer = GaussianFourierProjection(8, scale=16.0)
  params = layer.init(jax.random.PRNGKey(0), jnp.ones(2))
  assert 8 < float(jnp.std(params["params"]["W"])) * 2 < 64  # drawn with std = scale
  grads = jax.grad(lambda p: jnp.sum(layer.apply(p, jnp.array([0.3, 0.7]))))(params)
  np.testing.assert_array_equal(grads["params"]["W"], 0.0)


@pytest.mark.parametrize("embedding_type,labels", [("positional", jnp.array([1.0, 500.0])),
                                                   ("fourier", jnp.array([0.01, 30.0]))])
def test_mlp_output_depends_on_x_and_time(embedding_type, labels):
  model = ScoreMLP(dim=3, hidden=32, num_layers=2, embedding_type=embedding_type)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 3))
  params = model.init(jax.random.PRNGKey(1), x, labels)["params"]
  out = model.apply({"params": params}, x, labels)
  assert out.shape == x.shape and np.all(np.isfinite(out))
  same_x = model.apply({"params": params}, jnp.stack([x[0], x[0]]), labels)
  assert not np.allclose(same_x[0], same_x[1])  # the label changes the output
  assert param_count(model, x, labels) == sum(v.size for v in jax.tree.leaves(params))


def test_mlp_dropout_only_in_training():
  model = ScoreMLP(dim=2, hidden=32, num_layers=2, dropout=0.5)
  x, labels = jnp.ones((4, 2)), jnp.ones(4)
  params = model.init(jax.random.PRNGKey(0), x, labels)["params"]
  a = model.apply({"params": params}, x, labels, train=False)
  b = model.apply({"params": params}, x, labels, train=False)
  np.testing.assert_array_equal(a, b)
  c = model.apply({"params": params}, x, labels, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
  assert not np.allclose(a, c)


def test_unknown_model_name_lists_known():
  with pytest.raises(ValueError, match="known: \\[.ddpm., .mlp., .ncsn., .ncsnpp., .ncsnv2_128., "
                                      ".ncsnv2_256., .ncsnv2_64.\\]"):
    get_model_class("unet9000")
