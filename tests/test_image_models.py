"""NCSN++ / DDPM++ / DDPM: parameter counts of the paper's configs, every variant's forward pass,
FIR resampling against an independent numpy computation."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from score_sde_jax.models import DDPM, NCSNpp, param_count
from score_sde_jax.models import up_or_down_sampling as fir

pytestmark = pytest.mark.usefixtures("cheap_compiles")   # conftest.py: compiling is their time

S = jax.ShapeDtypeStruct
CIFAR = dict(nf=128, ch_mult=(1, 2, 2, 2), attn_resolutions=(16,))
NCSNPP_VE = dict(fir=True, resblock_type="biggan", progressive_input="residual", centered=False)

# Parameter counts of the original implementation (shared/fixtures/pytorch_checkpoints/README.md).
PAPER = [
    ("ve/cifar10_ncsnpp", NCSNpp(**CIFAR, **NCSNPP_VE, num_res_blocks=4,
                                 embedding_type="positional"), 32, 62_693_251),
    ("ve/cifar10_ncsnpp_continuous", NCSNpp(**CIFAR, **NCSNPP_VE, num_res_blocks=4,
                                            embedding_type="fourier"), 32, 62_758_915),
    ("ve/cifar10_ncsnpp_deep_continuous", NCSNpp(**CIFAR, **NCSNPP_VE, num_res_blocks=8,
                                                 embedding_type="fourier"), 32, 107_587_075),
    ("vp/cifar10_ddpmpp_continuous", NCSNpp(**CIFAR, num_res_blocks=4), 32, 61_804_419),
    ("vp/cifar10_ddpmpp_deep_continuous", NCSNpp(**CIFAR, num_res_blocks=8), 32, 106_632_579),
    ("vp/ddpm/cifar10", DDPM(**CIFAR, num_res_blocks=2), 32, 35_218_947),
    ("ve/celebahq_256_ncsnpp_continuous",
     NCSNpp(nf=128, ch_mult=(1, 1, 2, 2, 2, 2, 2), num_res_blocks=2,
            attn_resolutions=(16,), fir=True, progressive="output_skip",
            progressive_input="input_skip", embedding_type="fourier", centered=False),
     256, 65_574_549),
]


@pytest.mark.parametrize("name,model,size,expected", PAPER, ids=[p[0] for p in PAPER])
def test_parameter_count_equals_the_original(name, model, size, expected):
  assert param_count(model, S((1, size, size, 3), jnp.float32), S((1,), jnp.float32)) == expected


VARIANTS = [dict(resblock_type=r, progressive=p, progressive_input=pi, progressive_combine=c,
                 fir=f, embedding_type=e)
            for r, p, pi, c, f, e in itertools.product(
                ["biggan", "ddpm"], ["none", "output_skip", "residual"],
                ["none", "input_skip", "residual"], ["sum", "cat"], [True, False],
                ["fourier", "positional"])
            if not (c == "cat" and pi != "input_skip")]


# make test builds every other one of these 21 variants; make test-all builds them all.
@pytest.mark.parametrize("variant", [v if i % 2 == 0 else pytest.param(v, marks=pytest.mark.slow)
                                     for i, v in enumerate(VARIANTS[::5] + [VARIANTS[-1]])],
                         ids=lambda v: "-".join(str(x) for x in v.values()))
def test_ncsnpp_variant_forward_keeps_shape_and_dtype(variant):
  model = NCSNpp(num_channels=3, nf=16, ch_mult=(1, 2), num_res_blocks=1,
                 attn_resolutions=(4,), dropout=0.0, **variant)
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 8, 3))
  labels = jnp.array([0.5, 20.0]) if variant["embedding_type"] == "fourier" else jnp.array([3.0, 700.0])
  params = model.init(jax.random.PRNGKey(1), x, labels)["params"]
  out = model.apply({"params": params}, x, labels)
  assert out.shape == x.shape and out.dtype == x.dtype and bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.slow   # make test: DDPM's forward against the original's, tests/test_convert.py
def test_ddpm_forward_keeps_shape_and_dtype():
  model = DDPM(nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,))
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 8, 1))
  model = model.clone(num_channels=1)
  params = model.init(jax.random.PRNGKey(1), x, jnp.array([1.0, 900.0]))["params"]
  out = model.apply({"params": params}, x, jnp.array([1.0, 900.0]))
  assert out.shape == x.shape and out.dtype == x.dtype


def _numpy_upfirdn(x, k, up, down, pad):
  """Per image and channel: zero-insert, pad, full 2-D convolution (scipy), stride."""
  n, h, w, c = x.shape
  out = []
  for i in range(n):
    chans = []
    for ch in range(c):
      z = np.zeros((h * up, w * up))
      z[::up, ::up] = x[i, :, :, ch]
      z = np.pad(z, ((pad[0], pad[1]), (pad[0], pad[1])))
      chans.append(signal.convolve2d(z, k, mode="valid")[::down, ::down])
    out.append(np.stack(chans, -1))
  return np.stack(out)


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 2, 1), (1, 1)])
def test_fir_resampling_matches_numpy(taps):
  x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
  k = np.outer(taps, taps).astype(np.float64)
  k /= k.sum()
  p = len(taps) - 2
  up_expected = _numpy_upfirdn(x, k * 4, 2, 1, ((p + 1) // 2 + 1, p // 2))
  down_expected = _numpy_upfirdn(x, k, 1, 2, ((p + 1) // 2, p // 2))
  np.testing.assert_allclose(fir.upsample_2d(jnp.asarray(x), taps), up_expected, atol=1e-5)
  np.testing.assert_allclose(fir.downsample_2d(jnp.asarray(x), taps), down_expected, atol=1e-5)
  assert fir.upsample_2d(jnp.asarray(x), taps).shape == (2, 16, 16, 3)
  assert fir.downsample_2d(jnp.asarray(x), taps).shape == (2, 4, 4, 3)


def test_fused_fir_convolutions_match_unfused_numpy():
  """Conv after FIR downsampling and transposed conv before FIR upsampling, against numpy."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(1, 8, 8, 2)).astype(np.float32)
  w = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)  # HWIO
  k = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0
  # Down: FIR filter with pad ((p+1)//2, p//2), p = 4 - 2 + 2, then stride-2 correlation with w.
  filtered = _numpy_upfirdn(x, k, 1, 1, (2, 2))
  expected = np.zeros((1, 4, 4, 4))
  for o in range(4):
    for i in range(2):
      expected[0, :, :, o] += signal.correlate2d(filtered[0, :, :, i], w[:, :, i, o], "valid")[::2, ::2]
  np.testing.assert_allclose(fir.conv_downsample_2d(jnp.asarray(x), jnp.asarray(w)), expected,
                             rtol=1e-4, atol=1e-4)
  # Up: transposed conv (zero insertion, full correlation with w), then FIR with p = 4 - 2 - 2 = 0.
  up = np.zeros((1, 17, 17, 4))
  for o in range(4):
    for i in range(2):
      z = np.zeros((15, 15))
      z[::2, ::2] = x[0, :, :, i]
      up[0, :, :, o] += signal.correlate2d(np.pad(z, 2), w[:, :, i, o], "valid")
  expected = _numpy_upfirdn(up, k * 4, 1, 1, (1, 1))
  got = fir.upsample_conv_2d(jnp.asarray(x), jnp.asarray(w))
  assert got.shape == (1, 16, 16, 4)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape,groups", [((3, 8, 8, 64), 32), ((2, 4, 4, 12), 3), ((5, 6, 16), 4)])
def test_group_norm_matches_its_definition_in_float64(shape, groups):
  """The per-channel-first GroupNorm (layers.GroupNorm) against numpy in float64 on data with a
  large common offset (where a one-pass E[x^2] - E[x]^2 variance would lose digits), and its
  gradient against flax.linen.GroupNorm's (the same two-pass statistics, reduced in another order)."""
  from flax import linen as nn
  from score_sde_jax.models import layers
  rng = np.random.default_rng(0)
  x = rng.normal(20.0, 0.5, shape).astype(np.float32)
  c = shape[-1]
  params = {"scale": rng.normal(1, 0.3, c).astype(np.float32),
            "bias": rng.normal(0, 0.3, c).astype(np.float32)}
  ours = layers.GroupNorm(num_groups=groups, epsilon=1e-6)
  out = np.asarray(ours.apply({"params": params}, jnp.asarray(x)))
  x64 = x.astype(np.float64).reshape(shape[0], -1, groups, c // groups)
  mean = x64.mean(axis=(1, 3), keepdims=True)
  var = np.square(x64 - mean).mean(axis=(1, 3), keepdims=True)
  expected = ((x64 - mean) / np.sqrt(var + 1e-6)).reshape(shape) * params["scale"] + params["bias"]
  # Inputs are exact in float32; the mean and the centered values carry relative errors of a
  # few ulp of 20 (2e-6 each), which after division by std 0.5 are a few 1e-6 in the output.
  np.testing.assert_allclose(out, expected, atol=2e-5, rtol=0)
  theirs = nn.GroupNorm(num_groups=groups, epsilon=1e-6, use_fast_variance=False)
  loss = lambda m: lambda p, x: jnp.sum(jnp.sin(m.apply({"params": p}, x)))
  g_ours = jax.grad(loss(ours), argnums=(0, 1))(params, jnp.asarray(x))
  g_theirs = jax.grad(loss(theirs), argnums=(0, 1))(params, jnp.asarray(x))
  # Measured: at most 1.5e-5 of the largest gradient over these shapes (the offset 20 over std
  # 0.5 amplifies float32 round-off of the mean 40-fold); the bound keeps a factor of 13.
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_theirs)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-4 * float(np.abs(b).max()))
  with pytest.raises(ValueError, match="num_groups=5: must divide the 64 channels"):
    layers.GroupNorm(num_groups=5).init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 64)))


@pytest.mark.parametrize("up,down,pad", [(1, 2, (1, 1)), (2, 1, (2, 1)), (1, 1, (0, 2))])
def test_separable_fir_passes_equal_the_depthwise_convolution(up, down, pad):
  """upfirdn2d runs a rank-one numpy kernel as two 1-D passes; the depthwise convolution it
  replaces (still used for other kernels, here given as a jax array) gives the same result.
  u != v and asymmetric taps, so a flipped or transposed pass would show."""
  u, v = np.array([1.0, 2.0, 5.0, 1.0]), np.array([3.0, 1.0, 0.5, 2.0])
  kernel = np.outer(u, v).astype(np.float32)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 7, 3)), jnp.float32)
  separable = fir.upfirdn2d(x, kernel, up=up, down=down, pad=pad)
  depthwise = fir.upfirdn2d(x, jnp.asarray(kernel), up=up, down=down, pad=pad)
  assert separable.shape == depthwise.shape
  np.testing.assert_allclose(separable, depthwise, rtol=1e-5, atol=1e-5 * float(np.abs(depthwise).max()))
  assert fir._rank_one(np.array([[1.0, 0.0], [0.0, 1.0]])) is None
