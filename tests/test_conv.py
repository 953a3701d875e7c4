"""The image networks' convolutions (score_sde_jax.models.conv): the kernel gradient by rows
against a float64 numpy oracle, every derivative of conv3x3 / conv2d against XLA's own convolution,
and layers.Conv against flax.linen.Conv (same parameters, same values)."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from score_sde_jax.models import conv, layers

pytestmark = pytest.mark.usefixtures("cheap_compiles")   # conftest.py: compiling is their time


def _xla_conv(x, kernel, stride=1, padding=((1, 1), (1, 1))):
  return lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                  dimension_numbers=conv.DIMENSIONS)


def _data(shape, out_channels, k=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=shape).astype(np.float32)
  kernel = (rng.normal(size=(k, k, shape[-1], out_channels)) / (3 * k)).astype(np.float32)
  g = rng.normal(size=shape[:3] + (out_channels,)).astype(np.float32)
  return x, kernel, g


@pytest.fixture
def rows_everywhere(monkeypatch):
  """The rows formulation for every shape (it is otherwise kept for images >= 32x32)."""
  monkeypatch.setattr(conv, "ROWS_MIN_POSITIONS", 1)
  monkeypatch.setattr(conv, "ROWS_MIN_OUT_CHANNELS", 1)
  monkeypatch.setattr(conv, "cpu_convolutions_by_ynnpack", lambda: True)


@pytest.mark.parametrize("shape,out_channels", [((2, 5, 7, 3), 4), ((3, 4, 4, 6), 2)])
def test_kernel_grad_rows_equals_the_definition_in_float64(shape, out_channels):
  """sum_{n,h,w} x_pad[n, h+i, w+j, c] g[n, h, w, o], H != W and C != O so a transposed or
  flipped axis would show. Each entry sums n*h*w <= 70 float32 products of O(1) numbers: the
  round-off is below 1e-5 of the largest entry (the bound)."""
  x, _, g = _data(shape, out_channels)
  n, h, w, _ = shape
  x_pad = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  expected = np.stack([np.stack([np.einsum("nhwc,nhwo->co", x_pad[:, i:i + h, j:j + w], g)
                                 for j in range(3)]) for i in range(3)])
  got = np.asarray(conv.kernel_grad_rows(jnp.asarray(x), jnp.asarray(g)))
  assert got.shape == (3, 3, shape[-1], out_channels)
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def _upsampled(x):
  """2x nearest upsampling, written independently of conv.upsample."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


@pytest.mark.parametrize("path", ["rows", "xla", "1x1", "upsample"])
def test_conv_derivatives_equal_xla_convolution(path, request):
  """Value, both reverse-mode gradients, forward mode (what the exact / Hutchinson divergences
  use), reverse over forward, and vmap: conv3x3 with and without the rows formulation, the
  1x1 matmul (conv1x1), each also through conv2d, and the 3x3 convolution of a 2x upsampled
  image by phases (upsample_conv3x3). Each computes the same sums as XLA's convolution in
  another order: float32 round-off, bounded by 2e-5 of the largest entry."""
  if path == "rows":
    request.getfixturevalue("rows_everywhere")
  k = 1 if path == "1x1" else 3
  x, kernel, g = _data((2, 6, 5, 3), 4, k=k)
  if path == "upsample":   # the output is 12x10
    g = np.random.default_rng(2).normal(size=(2, 12, 10, 4)).astype(np.float32)
  x, kernel, g = map(jnp.asarray, (x, kernel, g))
  tx = jnp.asarray(np.random.default_rng(1).normal(size=x.shape), jnp.float32)
  pad = ((k // 2, k // 2),) * 2
  ref = lambda x, kern: _xla_conv(x, kern, 1, pad)
  own = (lambda x, kern: conv.conv1x1(x, kern[0, 0])) if k == 1 else conv.conv3x3
  same = lambda x, kern: conv.conv2d(x, kern, 1, pad)
  if path == "upsample":
    ref = lambda x, kern: _xla_conv(_upsampled(x), kern)
    own = same = conv.upsample_conv3x3

  def close(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=0,
                                 atol=2e-5 * float(np.abs(np.asarray(v)).max()))

  for f in dict.fromkeys((own, same)):   # once where they are the same function
    close(f(x, kernel), ref(x, kernel))
    loss = lambda fn: lambda x, k: jnp.sum(jnp.sin(fn(x, k)) * g)
    close(jax.grad(loss(f), (0, 1))(x, kernel), jax.grad(loss(ref), (0, 1))(x, kernel))
    close(jax.jvp(f, (x, kernel), (tx, kernel))[1], jax.jvp(ref, (x, kernel), (tx, kernel))[1])
    close(jax.jvp(lambda y: f(y, kernel), (x,), (tx,))[1],
          jax.jvp(lambda y: ref(y, kernel), (x,), (tx,))[1])
    hutchinson = lambda fn: lambda k: jnp.sum(jax.jvp(lambda y: fn(y, k), (x,), (tx,))[1] * g)
    close(jax.grad(hutchinson(f))(kernel), jax.grad(hutchinson(ref))(kernel))
    per_image = lambda fn: jax.vmap(jax.grad(lambda y, k: jnp.sum(fn(y[None], k) ** 2), (0, 1)),
                                    (0, None))
    close(per_image(f)(x, kernel), per_image(ref)(x, kernel))


def test_kernel_grad_1x1_equals_the_definition_in_float64():
  """sum_{n,h,w} x[n, h, w, c] g[n, h, w, o]; each entry sums 3*4*6 = 72 float32 products of O(1)
  numbers, so the round-off is below 1e-5 of the largest entry."""
  x, _, g = _data((3, 4, 6, 5), 2, k=1)
  expected = np.einsum("nhwc,nhwo->co", x.astype(np.float64), g.astype(np.float64))
  got = np.asarray(conv.kernel_grad_1x1(jnp.asarray(x), jnp.asarray(g)))
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("shape,out_channels", [((2, 3, 4, 3), 2), ((1, 1, 1, 2), 3)])
def test_kernel_grad_upsample_equals_the_definition_in_float64(shape, out_channels):
  """sum_{n,y,x} u_pad[n, y+i, x+j, c] g[n, y, x, o] with u the 2x nearest-upsampled x (a 1x1
  image: every tap reads the padding but the centre 2x2). H != W and C != O so a transposed or
  flipped axis would show. Each entry sums at most 2*6*8 = 96 float32 products of O(1)
  numbers: the round-off is below 1e-5 of the largest entry."""
  x, _, _ = _data(shape, out_channels)
  n, h, w, _ = shape
  g = np.random.default_rng(3).normal(size=(n, 2 * h, 2 * w, out_channels))
  u_pad = np.pad(np.asarray(_upsampled(x), np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
  expected = np.stack([np.stack([np.einsum("nhwc,nhwo->co", u_pad[:, i:i + 2 * h, j:j + 2 * w], g)
                                 for j in range(3)]) for i in range(3)])
  got = np.asarray(conv.kernel_grad_upsample(jnp.asarray(x), jnp.asarray(g, jnp.float32)))
  assert got.shape == (3, 3, shape[-1], out_channels)
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_rows_formulation_is_chosen_by_shape(monkeypatch):
  """The kernel gradient of a 3x3 convolution goes through the rows formulation (a
  platform-dependent choice in the program) only at >= 32x32 and >= 64 output channels, and only
  when XLA:CPU's convolutions are YNNPACK's."""
  monkeypatch.setattr(conv, "cpu_convolutions_by_ynnpack", lambda: True)

  def program(shape, out_channels):
    x, kernel, _ = _data(shape, out_channels)
    return str(jax.make_jaxpr(jax.grad(lambda k: jnp.sum(conv.conv3x3(jnp.asarray(x), k))))(
        jnp.asarray(kernel)))
  assert "platform_index" in program((1, 32, 32, 2), 64)
  assert "platform_index" not in program((1, 32, 32, 2), 32)
  assert "platform_index" not in program((1, 16, 16, 2), 64)
  monkeypatch.setattr(conv, "cpu_convolutions_by_ynnpack", lambda: False)
  assert "platform_index" not in program((1, 32, 32, 2), 64)


def test_convolutions_are_eigens_unless_the_user_keeps_xlas_default():
  """compilation.add_xla_cpu_flags() (run.py's first call) turns YNNPACK's convolutions off
  (compilation.XLA_CPU_FLAGS), and the networks then keep XLA's kernel gradient; a user's own setting of the flag is kept, and then
  the rows formulation serves YNNPACK's convolutions; $SCORE_SDE_JAX_XLA_CPU_FLAGS=0 leaves
  XLA_FLAGS alone. What each process compiled is read from its own HLO (a 32-channel convolution
  as a YNNPACK fusion or not), in fresh processes, since XLA reads XLA_FLAGS once per process."""
  import subprocess
  import sys
  code = ("import os\n"
          "from score_sde_jax import compilation\n"
          "compilation.add_xla_cpu_flags()\n"
          "from score_sde_jax.models import conv\n"
          "print(repr(os.environ.get('XLA_FLAGS', '')), conv.cpu_convolutions_by_ynnpack())")
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "SCORE_SDE_JAX_XLA_CPU_FLAGS")}
  run = lambda **extra: subprocess.run([sys.executable, "-c", code], env=dict(env, **extra),
                                       capture_output=True, text=True, check=True).stdout.split()
  assert run() == ["'--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'", "False"]
  ynn = "--xla_cpu_experimental_ynn_fusion_type=individual_convolution"
  assert run(XLA_FLAGS=ynn) == [repr(ynn), "True"]
  assert run(SCORE_SDE_JAX_XLA_CPU_FLAGS="0")[0] == "''"


@pytest.mark.parametrize("kernel_size,strides,padding", [
    ((3, 3), 1, ((1, 1), (1, 1))), ((1, 1), 1, ((0, 0), (0, 0))), ((3, 3), 2, ((0, 1), (0, 1))),
    ((3, 3), 1, ((0, 0), (0, 0))), ((3, 3), 2, "SAME"), ((1, 1), 1, "VALID")])
def test_conv_module_has_flax_conv_parameters_and_values(kernel_size, strides, padding):
  """Same parameter names, shapes and initial values (same random key), so checkpoints and the
  converter are unaffected; same outputs (a 1x1 matmul may round differently: 1e-6)."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 5))
  init = dict(kernel_init=layers.default_init(1.0), bias_init=nn.initializers.normal())
  ours = layers.Conv(7, kernel_size, strides=strides, padding=padding, **init)
  flax_conv = nn.Conv(7, kernel_size, strides=(strides, strides), padding=padding, **init)
  p_ours, p_flax = ours.init(jax.random.PRNGKey(3), x), flax_conv.init(jax.random.PRNGKey(3), x)
  assert jax.tree.structure(p_ours) == jax.tree.structure(p_flax)
  for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_flax)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(ours.apply(p_ours, x), flax_conv.apply(p_flax, x), rtol=0, atol=1e-5)


def test_conv_module_upsample_is_flax_conv_of_the_upsampled_image():
  """Conv(upsample=True): flax.linen.Conv's parameters (the same as without upsampling) and its
  values on the 2x nearest-upsampled input, to float32 round-off (2e-5 of the largest output);
  any other kernel size, stride or padding is refused with the fields named."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 5, 6))
  init = dict(kernel_init=layers.default_init(1.0), bias_init=nn.initializers.normal())
  ours = layers.Conv(7, (3, 3), padding=((1, 1), (1, 1)), upsample=True, **init)
  flax_conv = nn.Conv(7, (3, 3), padding=((1, 1), (1, 1)), **init)
  p_ours, p_flax = ours.init(jax.random.PRNGKey(3), x), flax_conv.init(jax.random.PRNGKey(3), x)
  for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_flax)):
    np.testing.assert_array_equal(a, b)
  expected = np.asarray(flax_conv.apply(p_flax, _upsampled(x)))
  got = np.asarray(ours.apply(p_ours, x))
  assert got.shape == (2, 8, 10, 7)
  np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * np.abs(expected).max())
  with pytest.raises(ValueError, match=r"upsample=True: needs kernel_size \(3, 3\), strides 1"):
    layers.Conv(7, (1, 1), upsample=True).init(jax.random.PRNGKey(0), x)
