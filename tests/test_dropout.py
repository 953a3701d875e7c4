"""Dropout's random bits (score_sde_jax.models.dropout): Threefry-2x32 against the published
known-answer vectors, random bits and Bernoulli draws bit for bit against jax.random, layers'
Dropout against flax.linen.Dropout, and the networks' train-mode outputs unchanged by it."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde_jax.models import DDPM, NCSNpp, ScoreMLP, dropout, layers

pytestmark = pytest.mark.usefixtures("cheap_compiles")   # conftest.py: compiling is their time

KEYS = {"typed": lambda: jax.random.key(0), "typed, large seed": lambda: jax.random.key(2**31 - 5),
        "raw uint32": lambda: jax.random.PRNGKey(7),
        "split": lambda: jax.random.split(jax.random.key(3))[1],
        "folded": lambda: jax.random.fold_in(jax.random.key(11), 99)}
SHAPES = [(), (0, 3), (1,), (7,), (3, 5), (2, 3, 4, 5, 6), (4, 16, 16, 32)]


@pytest.mark.parametrize("key, counter, expected", [
    # Random123's known-answer vectors for threefry2x32_20 (also in JAX's random tests).
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
])
def test_threefry_known_answers(key, counter, expected):
  u32 = lambda v: jnp.asarray(v, jnp.uint32)
  out = jax.jit(dropout.threefry2x32)(*map(u32, key), *map(u32, counter))
  assert tuple(int(o) for o in out) == expected


@pytest.mark.parametrize("key_name", sorted(KEYS))
def test_bits_and_bernoulli_equal_jax_random(key_name):
  key = KEYS[key_name]()
  for shape in SHAPES:
    np.testing.assert_array_equal(dropout.random_bits(key, shape), jax.random.bits(key, shape))
    for p in (0.9, 0.5, 0.1, 1e-7):
      got = jax.jit(dropout.bernoulli, static_argnums=2)(key, p, shape)
      np.testing.assert_array_equal(got, jax.random.bernoulli(key, p, shape))


def test_bernoulli_under_vmap_and_other_key_kinds():
  keys = jax.random.split(jax.random.key(0), 3)
  got = jax.jit(jax.vmap(lambda k: dropout.bernoulli(k, 0.9, (5, 6))))(keys)
  np.testing.assert_array_equal(got, jax.vmap(lambda k: jax.random.bernoulli(k, 0.9, (5, 6)))(keys))
  # Another implementation's key takes jax.random.bernoulli itself.
  rbg = jax.random.key(1, impl="rbg")
  np.testing.assert_array_equal(dropout.bernoulli(rbg, 0.7, (4, 9)),
                                jax.random.bernoulli(rbg, 0.7, (4, 9)))


def test_bernoulli_is_one_fused_pass_on_cpu():
  """The reason the module exists: no Threefry loop in the compiled program."""
  text = jax.jit(lambda k: dropout.bernoulli(k, 0.9, (8, 16, 16, 32))).lower(
      jax.random.key(0)).compile().as_text()
  assert " while(" not in text
  reference = jax.jit(lambda k: jax.random.bernoulli(k, 0.9, (8, 16, 16, 32))).lower(
      jax.random.key(0)).compile().as_text()
  if jax.default_backend() == "cpu":
    assert " while(" in reference, ("JAX's CPU lowering of Threefry no longer loops: "
                                    "models.dropout may no longer be needed")


@pytest.mark.parametrize("rate, broadcast_dims", [(0.1, ()), (0.5, (1, 2)), (0.0, ()), (1.0, ())])
def test_dropout_equals_flax(rate, broadcast_dims):
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 8, 8, 16)), jnp.float32)
  rngs = {"dropout": jax.random.key(1)}
  ours = layers.Dropout(rate, broadcast_dims=broadcast_dims)
  ref = nn.Dropout(rate, broadcast_dims=broadcast_dims)
  got = ours.apply({}, x, deterministic=False, rngs=rngs)
  np.testing.assert_array_equal(got, ref.apply({}, x, deterministic=False, rngs=rngs))
  np.testing.assert_array_equal(ours.apply({}, x, deterministic=True), x)
  if 0 < rate < 1:   # the kept fraction: binomial, 4 standard deviations
    kept = float(jnp.mean(got != 0))
    n = x.size // (64 if broadcast_dims else 1)
    assert abs(kept - (1 - rate)) < 4 * np.sqrt(rate * (1 - rate) / n)
    np.testing.assert_allclose(got[got != 0], (x / (1 - rate))[got != 0], rtol=0)


NETWORKS = {
    "DDPM++ (BigGAN blocks)": lambda: NCSNpp(num_channels=3, nf=16, ch_mult=(1, 2), num_res_blocks=1,
                                            attn_resolutions=(4,), dropout=0.3, fir=False),
    "DDPM": lambda: DDPM(num_channels=3, nf=32, ch_mult=(1, 2), num_res_blocks=1,
                         attn_resolutions=(4,), dropout=0.3),
    "MLP": lambda: ScoreMLP(dim=6, hidden=32, num_layers=2, dropout=0.3),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_networks_in_train_mode_unchanged(name, monkeypatch):
  """Each network in train mode gives, bit for bit, what it gave with flax.linen.Dropout: the
  module keeps flax's name (Dropout_0), so the same key, and draws the same mask."""
  model = NETWORKS[name]()
  shape = (3, 6) if name == "MLP" else (2, 8, 8, 3)
  x = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32)
  labels = jnp.array([3.0, 700.0, 50.0])[:shape[0]]
  # Random weights everywhere (the blocks' last convolutions start at zero, which would hide the
  # masks), in the shapes init gives.
  leaves, tree = jax.tree_util.tree_flatten(jax.eval_shape(model.init, jax.random.key(0), x, labels))
  rng = np.random.default_rng(2)
  variables = tree.unflatten([0.2 * rng.normal(size=l.shape).astype(l.dtype) for l in leaves])
  apply = lambda key: model.apply(variables, x, labels, train=True, rngs={"dropout": key})
  ours = apply(jax.random.key(5))
  monkeypatch.setattr(layers, "Dropout", nn.Dropout)
  np.testing.assert_array_equal(ours, apply(jax.random.key(5)))
  # The masks matter: another key gives another output.
  assert np.abs(ours - apply(jax.random.key(6))).max() > 0.01 * np.abs(ours).max()
