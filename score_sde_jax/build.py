"""Config -> objects: SDE, dataset, model, optimizer, loss.

The only place (with ``loop`` and ``run.py``) that reads a ConfigDict. Every
check here runs before anything is compiled, and each failure is one
``ConfigError`` naming the field, its value and what is allowed.
"""

from __future__ import annotations

import numbers

import jax.numpy as jnp

from score_sde_jax import data as data_lib
from score_sde_jax import losses, models, train
from score_sde_jax.sde import SDES, VESDE


class ConfigError(ValueError):
  """A config field has a value that is not allowed."""


def _get(config, path):
  node = config
  for part in path.split("."):
    if part not in node:
      raise ConfigError(f"config.{path}: missing (required)")
    node = node[part]
  return node


def _is_int(v):
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v):
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


_POSITIVE_INT = (lambda v: _is_int(v) and v > 0, "a positive integer")
_NON_NEG_INT = (lambda v: _is_int(v) and v >= 0, "an integer >= 0")
_POSITIVE = (lambda v: _is_number(v) and v > 0, "a positive number")
_BOOL = (lambda v: isinstance(v, bool), "True or False")
_RATE = (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)")
_NUMBER = (lambda v: _is_number(v), "a number")


def _one_of(options):
  return (lambda v: v in options, f"one of {sorted(options)}")


TOY_DATASETS = ("gmm", "swissroll", "moons", "checkerboard", "rings")
IMAGE_DATASETS = ("digits", "cifar10", "image_folder", "npz")  # case-insensitive ("CIFAR10")

_SPEC = {
    "training.sde": _one_of(SDES),
    "training.continuous": _BOOL,
    "training.reduce_mean": _BOOL,
    "training.likelihood_weighting": _BOOL,
    "training.batch_size": _POSITIVE_INT,
    "training.n_iters": _POSITIVE_INT,
    "training.n_jitted_steps": _POSITIVE_INT,
    "training.log_freq": _POSITIVE_INT,
    "training.eval_freq": _POSITIVE_INT,
    "training.snapshot_freq": _POSITIVE_INT,
    "training.snapshot_freq_for_preemption": _POSITIVE_INT,
    "training.max_to_keep": _POSITIVE_INT,
    "training.eps": (lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "eval.batch_size": _POSITIVE_INT,
    "eval.num_samples": _POSITIVE_INT,
    "eval.enable_bpd": _BOOL,
    "eval.num_eval_examples": _POSITIVE_INT,
    "eval.divergence": _one_of(("exact", "gaussian", "rademacher")),
    "eval.rtol": _POSITIVE,
    "eval.atol": _POSITIVE,
    "eval.likelihood_eps": (lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "sampling.method": _one_of(("pc", "ode", "sde")),
    "sampling.predictor": _one_of(("euler_maruyama", "reverse_diffusion", "ancestral_sampling", "none")),
    "sampling.corrector": _one_of(("langevin", "ald", "none")),
    "sampling.snr": _POSITIVE,
    "sampling.n_steps_each": _POSITIVE_INT,
    "sampling.noise_removal": _BOOL,
    "sampling.probability_flow": _BOOL,
    "sampling.ode_solver": _one_of(("tsit5", "dopri5", "euler", "heun")),
    "sampling.rtol": _POSITIVE,
    "sampling.atol": _POSITIVE,
    "sampling.ode_num_steps": _NON_NEG_INT,
    "sampling.sde_num_steps": _POSITIVE_INT,
    "eval.num_batches": _NON_NEG_INT,
    "data.dataset": _one_of(TOY_DATASETS),
    "data.dim": _POSITIVE_INT,
    "data.centered": _BOOL,
    "model.name": _one_of(models.MODELS),
    "model.ema_rate": _RATE,
    "model.dropout": _RATE,
    "model.scale_by_sigma": _BOOL,
    "model.beta_min": _POSITIVE,
    "model.beta_max": _POSITIVE,
    "model.sigma_min": _POSITIVE,
    "model.sigma_max": _POSITIVE,
    "model.num_scales": (lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
    "optim.optimizer": _one_of(("Adam",)),
    "optim.lr": _POSITIVE,
    "optim.beta1": _RATE,
    "optim.eps": _POSITIVE,
    "optim.weight_decay": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "optim.warmup": _NON_NEG_INT,
    "optim.grad_clip": _NUMBER,
    "seed": (lambda v: _is_int(v), "an integer"),
}

_MLP_SPEC = {
    "model.hidden": _POSITIVE_INT,
    "model.num_layers": _NON_NEG_INT,
    "model.activation": _one_of(models.layers.ACTIVATIONS),
    "model.embedding_type": _one_of(("fourier", "positional")),
    "model.embedding_dim": (lambda v: _is_int(v) and v >= 4 and v % 2 == 0, "an even integer >= 4"),
    "model.fourier_scale": _POSITIVE,
}


_RESOLUTIONS = (lambda v: isinstance(v, (tuple, list)) and all(_is_int(r) and r > 0 for r in v),
                "a sequence of positive integers")

_IMAGE_SPEC = {
    "data.image_size": _POSITIVE_INT,
    "data.num_channels": _POSITIVE_INT,
    "data.centered": _BOOL,
    "model.nf": _POSITIVE_INT,
    "model.ch_mult": _RESOLUTIONS,
    "model.num_res_blocks": _POSITIVE_INT,
    "model.attn_resolutions": (lambda v: isinstance(v, (tuple, list)) and all(
        _is_int(r) and r > 0 for r in v), "a sequence of positive integers (may be empty)"),
    "model.dropout": _RATE,
    "model.resamp_with_conv": _BOOL,
    "model.conditional": _BOOL,
    "model.nonlinearity": _one_of(tuple(models.layers.ACTIVATIONS)),
}

_NCSNPP_SPEC = {
    "model.fir": _BOOL,
    "model.fir_kernel": _RESOLUTIONS,
    "model.skip_rescale": _BOOL,
    "model.resblock_type": _one_of(("ddpm", "biggan")),
    "model.progressive": _one_of(("none", "output_skip", "residual")),
    "model.progressive_input": _one_of(("none", "input_skip", "residual")),
    "model.progressive_combine": _one_of(("sum", "cat")),
    "model.embedding_type": _one_of(("fourier", "positional")),
    "model.fourier_scale": _POSITIVE,
    "model.init_scale": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
}


def _check_spec(config, spec):
  for path, (ok, allowed) in spec.items():
    value = _get(config, path)
    if not ok(value):
      raise ConfigError(f"config.{path}={value!r}: expected {allowed}")


def validate_model_config(config) -> None:
  """Checks what building the SDE and the network needs (enough for ``convert`` and ``info``)."""
  _check_spec(config, {"training.sde": _one_of(SDES), "training.continuous": _BOOL,
                       "model.name": _one_of(models.MODELS), "model.scale_by_sigma": _BOOL,
                       "model.num_scales": _SPEC["model.num_scales"]})
  name = config.model.name
  if name == "mlp":
    _check_spec(config, {k: v for k, v in {**_SPEC, **_MLP_SPEC}.items()
                         if k.startswith(("model.", "data.dim"))})
  else:
    _check_spec(config, _IMAGE_SPEC)
    if name == "ncsnpp":
      _check_spec(config, _NCSNPP_SPEC)
      if config.model.embedding_type == "fourier" and not config.training.continuous:
        raise ConfigError("config.model.embedding_type='fourier': needs training.continuous=True "
                          "(it embeds log sigma(t))")
    size = config.data.image_size
    if size % 2 ** (len(config.model.ch_mult) - 1):
      raise ConfigError(f"config.data.image_size={size}: must be divisible by "
                        f"2^(len(model.ch_mult) - 1) = {2 ** (len(config.model.ch_mult) - 1)}")


def validate_config(config) -> None:
  """Raises :class:`ConfigError` for the first field whose value is not allowed."""
  validate_model_config(config)
  spec = dict(_SPEC)
  if _get(config, "model.name") == "mlp":
    spec.update(_MLP_SPEC)
  else:
    spec.pop("data.dim")
    spec["data.dataset"] = (lambda v: isinstance(v, str) and v.lower() in IMAGE_DATASETS,
                            f"one of {list(IMAGE_DATASETS)}")
  _check_spec(config, spec)
  t = config.training
  if t.snapshot_freq_for_preemption % t.n_jitted_steps or t.snapshot_freq % t.n_jitted_steps:
    raise ConfigError(
        f"config.training.snapshot_freq_for_preemption={t.snapshot_freq_for_preemption} and "
        f"snapshot_freq={t.snapshot_freq}: must be multiples of training.n_jitted_steps="
        f"{t.n_jitted_steps} (checkpoints are taken between jitted calls)")
  m = config.model
  if m.beta_max < m.beta_min:
    raise ConfigError(f"config.model.beta_max={m.beta_max}: must be >= model.beta_min={m.beta_min}")
  if m.sigma_max <= m.sigma_min:
    raise ConfigError(f"config.model.sigma_max={m.sigma_max}: must be > model.sigma_min={m.sigma_min}")
  s = config.sampling
  if s.method == "ode" and (s.ode_solver in ("euler", "heun")) != (s.ode_num_steps > 0):
    raise ConfigError(f"config.sampling.ode_solver={s.ode_solver!r} with sampling.ode_num_steps="
                      f"{s.ode_num_steps}: euler / heun need ode_num_steps > 0, tsit5 / dopri5 "
                      f"need 0 (adaptive)")
  if s.method == "pc" and s.predictor == "ancestral_sampling" and t.sde == "subvpsde":
    raise ConfigError("config.sampling.predictor='ancestral_sampling': defined for vpsde and "
                      "vesde only, not training.sde='subvpsde'")
  if not t.continuous and t.sde == "subvpsde":
    raise ConfigError("config.training.continuous=False: discrete-time training is defined for "
                      "vesde (SMLD) and vpsde (DDPM), not training.sde='subvpsde'")
  if m.scale_by_sigma and t.sde != "vesde":
    raise ConfigError(f"config.model.scale_by_sigma=True: only allowed with training.sde='vesde' "
                      f"(got {t.sde!r}); VP / sub-VP outputs are divided by the std already")
  if m.name == "mlp" and config.data.dataset != "gmm" and config.data.dim != 2:
    raise ConfigError(f"config.data.dim={config.data.dim}: dataset {config.data.dataset!r} is 2-D")


def sampling_eps(config) -> float:
  """Smallest sampling time: the SDE's own (the paper's 1e-3 for VP / sub-VP, 1e-5 for VE)."""
  return get_sde(config).sampling_eps


def sampling_tag(config) -> str:
  """A short name of the configured sampler, for file names."""
  s = config.sampling
  if s.method == "pc":
    return f"pc_{s.predictor}_{s.corrector}"
  if s.method == "ode":
    return f"ode_{s.ode_solver}" + (f"{s.ode_num_steps}" if s.ode_num_steps else "")
  return f"sde_em{s.sde_num_steps}"


def get_sde(config):
  """The forward SDE named by ``training.sde``, with ``model.num_scales`` steps."""
  name, m = config.training.sde, config.model
  if name == "vesde":
    return VESDE(sigma_min=float(m.sigma_min), sigma_max=float(m.sigma_max), N=int(m.num_scales))
  if name in SDES:
    return SDES[name](beta_min=float(m.beta_min), beta_max=float(m.beta_max), N=int(m.num_scales))
  raise ConfigError(f"config.training.sde={name!r}: unknown SDE; known: {sorted(SDES)}")


def get_dataset(config):
  """The toy distribution or image data set named by ``data.dataset``."""
  d = config.data
  name = d.dataset.lower() if isinstance(d.dataset, str) else d.dataset
  if name in IMAGE_DATASETS:
    from score_sde_jax.data import images
    common = dict(random_flip=d.get("random_flip", False),
                  uniform_dequantization=d.get("uniform_dequantization", False))
    if name == "digits":
      data = images.digits(eval_fraction=d.get("eval_fraction", 0.1), **common)
      return images._checked_shape(data, "digits", d.image_size, d.num_channels)
    if not d.get("path"):
      raise ConfigError(f"config.data.path={d.get('path')!r}: data set {d.dataset!r} is read from "
                        f"a path you give (nothing is downloaded)")
    if name == "cifar10":
      return images._checked_shape(images.cifar10(d.path, **common), d.path, d.image_size,
                                   d.num_channels)
    if name == "image_folder":
      return images.image_folder(d.path, image_size=d.image_size, num_channels=d.num_channels,
                                 num_levels=256, eval_fraction=d.get("eval_fraction", 0.1), **common)
    return data_lib.ImageArrays.from_npz(
        d.path, image_size=d.image_size, num_channels=d.num_channels, key=d.get("npz_key") or None,
        num_levels=d.get("num_levels", 256), eval_fraction=d.get("eval_fraction", 0.1), **common)
  if d.dataset == "gmm":
    if d.dim == 2:
      return data_lib.GaussianMixture.ring(d.n_modes, d.radius, d.mode_std)
    # Higher dimensions: the ring in the first two coordinates, zero elsewhere.
    ring = data_lib.GaussianMixture.ring(d.n_modes, d.radius, d.mode_std)
    means = jnp.zeros((d.n_modes, d.dim)).at[:, :2].set(ring.means)
    return data_lib.GaussianMixture(ring.weights, means, [d.mode_std] * d.n_modes)
  if d.dataset == "swissroll":
    return data_lib.SwissRoll(noise=d.noise)
  if d.dataset == "moons":
    return data_lib.TwoMoons(noise=d.noise)
  if d.dataset == "checkerboard":
    return data_lib.Checkerboard()
  if d.dataset == "rings":
    return data_lib.ConcentricRings(noise=d.noise)
  raise ConfigError(f"config.data.dataset={d.dataset!r}: unknown dataset; known: {list(TOY_DATASETS)}")


def get_model(config):
  """The score network named by ``model.name`` with fields translated from the config."""
  m = config.model
  cls = models.get_model_class(m.name)
  d = config.data
  if m.name == "mlp":
    return cls(dim=d.dim, hidden=m.hidden, num_layers=m.num_layers,
               embedding_type=m.embedding_type, embedding_dim=m.embedding_dim,
               fourier_scale=m.fourier_scale, activation=m.activation, dropout=m.dropout)
  common = dict(num_channels=d.num_channels, nf=m.nf,
                ch_mult=tuple(m.ch_mult), num_res_blocks=m.num_res_blocks,
                attn_resolutions=tuple(m.attn_resolutions), dropout=m.dropout,
                resamp_with_conv=m.resamp_with_conv, conditional=m.conditional,
                centered=d.centered, activation=m.nonlinearity)
  if m.name == "ddpm":
    return cls(**common)
  if m.name == "ncsnpp":
    return cls(**common, fir=m.fir, fir_kernel=tuple(m.fir_kernel), skip_rescale=m.skip_rescale,
               resblock_type=m.resblock_type, progressive=m.progressive,
               progressive_input=m.progressive_input, progressive_combine=m.progressive_combine,
               embedding_type=m.embedding_type, fourier_scale=float(m.fourier_scale),
               init_scale=float(m.init_scale))
  raise ConfigError(f"config.model.name={m.name!r}: no config translation")


def data_shape(config):
  """Shape of one example: ``(dim,)`` for vector data, ``(H, W, C)`` for images."""
  if config.model.name == "mlp":
    return (config.data.dim,)
  return (config.data.image_size, config.data.image_size, config.data.num_channels)


def get_optimizer(config):
  o = config.optim
  return train.make_optimizer(o.lr, o.warmup, o.grad_clip, beta1=o.beta1, eps=o.eps,
                              weight_decay=o.weight_decay)


def get_lr_schedule(config):
  return train.learning_rate_schedule(config.optim.lr, config.optim.warmup)


def get_loss_fn(config, sde, model, *, train_mode: bool):
  t = config.training
  if not t.continuous:
    return losses.get_discrete_loss_fn(sde, model, train=train_mode, reduce_mean=t.reduce_mean,
                                       scale_by_sigma=config.model.scale_by_sigma)
  return losses.get_sde_loss_fn(sde, model, train=train_mode, reduce_mean=t.reduce_mean,
                                continuous=t.continuous,
                                likelihood_weighting=t.likelihood_weighting, eps=t.eps,
                                scale_by_sigma=config.model.scale_by_sigma)


# Fields that fix the parameter tree or what the network's output means: a
# checkpoint written under other values cannot be resumed.
COMPATIBILITY_FIELDS = ("training.sde", "training.continuous", "data.dim", "data.centered",
                        "model")


def _plain(value):
  """Tuples as lists, recursively: a config saved as JSON comes back with lists."""
  if isinstance(value, (tuple, list)):
    return [_plain(v) for v in value]
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  return value


def compatibility_view(config_dict: dict) -> dict:
  """The part of a config (as a plain dict) that a checkpoint must agree with."""
  config_dict = _plain(config_dict)
  view = {}
  for path in COMPATIBILITY_FIELDS:
    node = config_dict
    for part in path.split("."):
      node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
      # EMA rate does not change the parameter tree or its meaning.
      node = {k: v for k, v in node.items() if k != "ema_rate"}
    view[path] = node
  return view


def check_compatible(saved: dict, current: dict, where: str) -> None:
  """Raises :class:`ConfigError` naming the first field where a saved config differs."""
  a, b = compatibility_view(saved), compatibility_view(current)
  for path in COMPATIBILITY_FIELDS:
    sa, sb = a[path], b[path]
    if isinstance(sa, dict) and isinstance(sb, dict):
      for k in sorted(set(sa) | set(sb)):
        if sa.get(k) != sb.get(k):
          raise ConfigError(
              f"config.{path}.{k}={sb.get(k)!r}: the checkpoint in {where} was written with "
              f"{path}.{k}={sa.get(k)!r}; use that value or a new workdir")
    elif sa != sb:
      raise ConfigError(f"config.{path}={sb!r}: the checkpoint in {where} was written with "
                        f"{path}={sa!r}; use that value or a new workdir")
