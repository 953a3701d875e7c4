"""Config -> objects: the wiring between ml_collections configs and the library.

With the host-side modes and ``run.py``, the only code that reads a ConfigDict.
Allowed values come from the registries (``sde.SDES``, ``models.MODELS``,
``sampling.PREDICTORS`` / ``CORRECTORS`` / ``SOLVERS``, ``likelihood.DIVERGENCES``
and the data sets and sampling methods here), and the constructors check the
values they are given: the SDE and the network read exactly their own fields
(their dataclass fields, so a field a network never reads neither needs to be
there nor decides anything). Every failure becomes one :class:`ConfigError`
naming the config field, its value and what is allowed, before anything compiles.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re

import jax
import jax.numpy as jnp

from score_sde_jax import data as data_lib
from score_sde_jax import keys, likelihood, losses, models, parallel, sampling, train
from score_sde_jax.data import images
from score_sde_jax.models import layers
from score_sde_jax.score import get_score_fn as _score_fn
from score_sde_jax.sde import SDES


class ConfigError(ValueError):
  """A config field has a value that is not allowed."""


# --- Reading fields -----------------------------------------------------------------------------

_MISSING = object()  # no default: a missing field is an error
_ABSENT = object()   # a default meaning "not in the config"


def _get(config, path, default=_MISSING):
  node = config
  for part in path.split("."):
    if not hasattr(node, "keys") or part not in node:
      if default is not _MISSING:
        return default
      raise ConfigError(f"config.{path}: missing (required)")
    node = node[part]
  return node


def _as_tuple(value):
  return tuple(value) if isinstance(value, list) else value


_ARG = re.compile(r"^(\w+)=")


@contextlib.contextmanager
def _config_paths(paths: dict, section: str):
  """Turns a constructor's ``ValueError('arg=value: ...')`` into ``ConfigError('config.<path>=value: ...')``."""
  try:
    yield
  except ConfigError:
    raise
  except ValueError as e:
    message = str(e)
    match = _ARG.match(message)
    if match and match.group(1) in paths:
      raise ConfigError(f"config.{paths[match.group(1)]}{message[len(match.group(1)):]}") from None
    raise ConfigError(f"config.{section}: {message}") from None


# --- Field checks of the loops' own settings ------------------------------------------------------

# The networks' own field checks (models.layers), reused for the loops' settings.
_POSITIVE_INT, _NON_NEG_INT, _POSITIVE, _BOOL, _RATE, _one_of = (
    layers.POSITIVE_INT, layers.NON_NEGATIVE_INT, layers.POSITIVE, layers.BOOL, layers.RATE,
    layers.one_of)
_TIME = (lambda v: _POSITIVE[0](v) and v < 1, "a number in (0, 1)")
_GRAD_CLIP = (lambda v: layers.FINITE[0](v) and v != 0,
              "a finite number > 0, or < 0 for no clipping (0 would zero every update)")


_LOOP_SPEC = {
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
    "training.eps": _TIME,
    "eval.batch_size": _POSITIVE_INT,
    "eval.num_batches": _NON_NEG_INT,
    "eval.num_samples": _POSITIVE_INT,
    "eval.enable_bpd": _BOOL,
    "eval.num_eval_examples": _POSITIVE_INT,
    "eval.divergence": _one_of(likelihood.DIVERGENCES),
    "eval.rtol": _POSITIVE,
    "eval.atol": _POSITIVE,
    "eval.likelihood_eps": _TIME,
    "model.ema_rate": _RATE,
    "model.scale_by_sigma": _BOOL,
    "optim.optimizer": _one_of(("Adam",)),
    "optim.lr": _POSITIVE,
    "optim.beta1": _RATE,
    "optim.eps": _POSITIVE,
    "optim.weight_decay": layers.NON_NEGATIVE,
    "optim.warmup": _NON_NEG_INT,
    "optim.grad_clip": _GRAD_CLIP,
    "seed": _NON_NEG_INT,
}

_SAMPLING_SPEC = {
    "sampling.predictor": _one_of(sampling.PREDICTORS),
    "sampling.corrector": _one_of(sampling.CORRECTORS),
    "sampling.snr": _POSITIVE,
    "sampling.n_steps_each": _POSITIVE_INT,
    "sampling.noise_removal": _BOOL,
    "sampling.probability_flow": _BOOL,
    "sampling.ode_solver": _one_of(sampling.SOLVERS),
    "sampling.rtol": _POSITIVE,
    "sampling.atol": _POSITIVE,
    "sampling.ode_num_steps": _NON_NEG_INT,
    "sampling.sde_num_steps": _POSITIVE_INT,
}

# Fields of the few-step samplers, checked when sampling.method names one of them.
_FAST_SPEC = {
    "sampling.fast_num_steps": _POSITIVE_INT,
    "sampling.fast_schedule": _one_of(sampling.SCHEDULES),
    "sampling.fast_sigma_min": layers.NON_NEGATIVE,
    "sampling.fast_sigma_max": layers.NON_NEGATIVE,
}
_METHOD_SPEC = {
    "dpm_solver": {"sampling.dpm_order": (lambda v: _POSITIVE_INT[0](v) and v <= 3,
                                          "1 (DDIM), 2 or 3")},
    "edm": {"sampling.edm_churn": layers.NON_NEGATIVE, "sampling.edm_s_tmin": layers.NON_NEGATIVE,
            "sampling.edm_s_tmax": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                                    and v >= 0, "a number >= 0 (inf: no upper end)"),
            "sampling.edm_s_noise": layers.NON_NEGATIVE},
}


INPAINT_TASKS = ("inpaint", "colorize")
INPAINT_MASKS = ("half", "center", "random")
_INPAINT_SPEC = {
    "inpaint.task": _one_of(INPAINT_TASKS),
    "inpaint.mask": _one_of(INPAINT_MASKS),
    "inpaint.num_examples": _POSITIVE_INT,
    "inpaint.samples_per_example": _POSITIVE_INT,
    "inpaint.refine_steps": _NON_NEG_INT,
    "inpaint.refine_snr": _POSITIVE,
}


def validate_inpaint_config(config) -> None:
  """The ``inpaint`` section (``--mode inpaint``) against the data it will complete."""
  _check_spec(config, _INPAINT_SPEC)
  c, shape = config.inpaint, tuple(data_shape(config))
  if c.task == "colorize" and (len(shape) != 3 or shape[-1] != 3):
    raise ConfigError(f"config.inpaint.task='colorize': needs RGB images (data.num_channels=3), "
                      f"not data of shape {shape}")
  if c.mask == "center" and len(shape) != 3:
    raise ConfigError(f"config.inpaint.mask='center': for images; data of shape {shape} take "
                      f"'half' or 'random'")
  if c.mask == "half" and len(shape) == 1 and shape[0] < 2:
    raise ConfigError(f"config.inpaint.mask='half': needs at least 2 coordinates, data.dim={shape[0]}")


def _check_spec(config, spec):
  for path, (ok, allowed) in spec.items():
    value = _get(config, path)
    if not ok(value):
      raise ConfigError(f"config.{path}={value!r}: expected {allowed}")


def _choice(config, path, registry):
  value = _get(config, path)
  if not (isinstance(value, str) and value in registry):
    raise ConfigError(f"config.{path}={value!r}: expected one of {sorted(registry)}")
  return value


# --- The SDE --------------------------------------------------------------------------------------

def _sde_paths(cls) -> dict:
  """Constructor argument -> config path: ``N`` is ``model.num_scales``, the rest ``model.<arg>``."""
  return {f.name: "model.num_scales" if f.name == "N" else f"model.{f.name}"
          for f in dataclasses.fields(cls) if f.name != "T"}


def get_sde(config):
  """The forward SDE named by ``training.sde``, built from the fields it has (``model.beta_min``, ...)."""
  cls = SDES[_choice(config, "training.sde", SDES)]
  paths = _sde_paths(cls)
  with _config_paths(paths, "model"):
    return cls(**{arg: _get(config, path) for arg, path in paths.items()})


def sampling_eps(config) -> float:
  """Smallest sampling time: the SDE's own (the paper's 1e-3 for VP / sub-VP, 1e-5 for VE)."""
  return get_sde(config).sampling_eps


# --- The network ----------------------------------------------------------------------------------

# Network fields that live outside ``model.<field>`` (one config name per idea).
_MODEL_FIELD_PATHS = {"dim": "data.dim", "num_channels": "data.num_channels",
                      "centered": "data.centered", "activation": "model.nonlinearity"}


def _model_paths(cls) -> dict:
  return {f.name: _MODEL_FIELD_PATHS.get(f.name, f"model.{f.name}")
          for f in dataclasses.fields(cls) if f.name not in ("parent", "name")}


def _model_args(config):
  """``(class, {arg: config path}, {arg: value})`` of the network; a field the network does not
  read under the others' values (``fourier_scale`` without a Fourier embedding) may be absent."""
  cls = models.MODELS[_choice(config, "model.name", models.MODELS)]
  paths = _model_paths(cls)
  values = {arg: _as_tuple(_get(config, path, _ABSENT)) for arg, path in paths.items()}
  values = {arg: v for arg, v in values.items() if v is not _ABSENT}
  unused = cls.unused_fields(values)
  for arg, path in paths.items():
    if arg not in values and arg not in unused:
      raise ConfigError(f"config.{path}: missing (required by the {cls.__name__} network)")
  return cls, paths, values


def get_model(config):
  """The score network named by ``model.name``, from exactly the fields it reads."""
  cls, paths, values = _model_args(config)
  with _config_paths(paths, "model"):
    return cls(**values)


def is_vector_model(config) -> bool:
  """Whether the network takes vectors ``(dim,)`` (rather than images ``(H, W, C)``)."""
  return "dim" in _model_paths(models.MODELS[_choice(config, "model.name", models.MODELS)])


def steps_loop(config) -> str:
  """``make_train_step``'s ``loop`` for this config on this process's backend
  (:func:`score_sde_jax.train.steps_loop`: image networks on a CPU loop on the host)."""
  return train.steps_loop(jax.default_backend(), image_data=not is_vector_model(config))


def data_shape(config):
  """Shape of one example: ``(dim,)`` for vector data, ``(H, W, C)`` for images."""
  if is_vector_model(config):
    return (_get(config, "data.dim"),)
  size = _get(config, "data.image_size")
  return (size, size, _get(config, "data.num_channels"))


# --- Data -----------------------------------------------------------------------------------------

def _gmm(d):
  ring = data_lib.GaussianMixture.ring(d.n_modes, d.radius, d.mode_std)
  if d.dim == 2:
    return ring
  # Higher dimensions: the ring in the first two coordinates, zero elsewhere.
  means = jnp.zeros((d.n_modes, d.dim)).at[:, :2].set(ring.means)
  return data_lib.GaussianMixture(ring.weights, means, [d.mode_std] * d.n_modes)


TOY_DATASETS = {
    "gmm": _gmm,
    "swissroll": lambda d: data_lib.SwissRoll(noise=d.noise),
    "moons": lambda d: data_lib.TwoMoons(noise=d.noise),
    "checkerboard": lambda d: data_lib.Checkerboard(),
    "rings": lambda d: data_lib.ConcentricRings(noise=d.noise),
}


def _image_options(d):
  return dict(random_flip=d.get("random_flip", False),
              uniform_dequantization=d.get("uniform_dequantization", False))


def _path(d):
  if not d.get("path"):
    raise ConfigError(f"config.data.path={d.get('path')!r}: data set {d.dataset!r} is read from a "
                      f"path you give (nothing is downloaded)")
  return d.path


def _from_path(name):
  """A data set read from ``data.path`` (a folder of images, or an npz) with ``name``'s preprocessing."""
  return lambda d: images.from_path(
      _path(d), image_size=d.image_size, num_channels=d.num_channels,
      preprocess=images.PREPROCESS[name], eval_path=d.get("eval_path", ""),
      npz_key=d.get("npz_key") or None, eval_fraction=d.get("eval_fraction", 0.1),
      **_image_options(d))


IMAGE_DATASETS = {  # names are case-insensitive ("CIFAR10", "CelebAHQ")
    "digits": lambda d: images.digits(eval_fraction=d.get("eval_fraction", 0.1),
                                      **_image_options(d)),
    "cifar10": lambda d: images.cifar10(_path(d), **_image_options(d)),
    **{name: _from_path(name) for name in images.PREPROCESS},
    "npz": lambda d: data_lib.ImageArrays.from_npz(
        _path(d), image_size=d.image_size, num_channels=d.num_channels,
        key=d.get("npz_key") or None, num_levels=d.get("num_levels", 256),
        eval_fraction=d.get("eval_fraction", 0.1), **_image_options(d)),
}


def _dataset_name(config):
  name = _get(config, "data.dataset")
  key = name.lower() if isinstance(name, str) else name
  if key not in TOY_DATASETS and key not in IMAGE_DATASETS:
    raise ConfigError(f"config.data.dataset={name!r}: expected one of "
                      f"{sorted(TOY_DATASETS) + sorted(IMAGE_DATASETS)}")
  return key


def get_dataset(config):
  """The toy distribution or image data set named by ``data.dataset``, of the config's shape."""
  d = config.data
  key = _dataset_name(config)
  if key in TOY_DATASETS:
    return TOY_DATASETS[key](d)
  try:
    dataset = IMAGE_DATASETS[key](d)
  except data_lib.DataError as e:
    raise data_lib.DataError(f"config.data.dataset={d.dataset!r}: {e}") from None
  if dataset.example_shape != data_shape(config):
    raise ConfigError(f"config.data.image_size={d.image_size}, data.num_channels="
                      f"{d.num_channels}: data set {d.dataset!r} has images of shape "
                      f"{dataset.example_shape}")
  return dataset


def setup(config):
  """Validates ``config`` and builds ``(sde, model, dataset)``."""
  validate_config(config)
  return get_sde(config), get_model(config), get_dataset(config)


# --- Validation -----------------------------------------------------------------------------------

# Fields whose value may be infinite (EDM's S_tmax: no upper end of the churn range).
_INFINITE_ALLOWED = frozenset({"sampling.edm_s_tmax"})


def _check_finite(value, path: str = "") -> None:
  """No NaN anywhere in the config, and no infinity outside :data:`_INFINITE_ALLOWED`: a NaN
  passes every comparison-based check (``grad_clip=nan`` turned clipping off silently)."""
  if isinstance(value, dict):
    for k, v in value.items():
      _check_finite(v, f"{path}.{k}" if path else k)
  elif isinstance(value, (list, tuple)):
    for i, v in enumerate(value):
      _check_finite(v, f"{path}[{i}]")
  elif isinstance(value, float) and not math.isfinite(value):
    if math.isnan(value) or path.split("[")[0] not in _INFINITE_ALLOWED:
      raise ConfigError(f"config.{path}={value}: expected a finite number")


def validate_model_config(config) -> None:
  """Checks what building the SDE and the network needs (enough for ``convert`` and ``info``)."""
  _check_finite(config.to_dict())
  sde = get_sde(config)
  get_model(config)
  _check_spec(config, {"training.continuous": _BOOL, "model.scale_by_sigma": _BOOL})
  continuous = config.training.continuous
  if not continuous and not sde.has_discrete_chain:
    raise ConfigError(f"config.training.continuous=False: discrete-time training is defined for "
                      f"SDEs with a discrete chain, vesde (SMLD) and vpsde (DDPM), not "
                      f"training.sde={config.training.sde!r}")
  reads_embedding = "embedding_type" in _model_args(config)[1]  # DDPM has no embedding_type
  if reads_embedding and config.model.get("embedding_type") == "fourier" and not continuous:
    raise ConfigError("config.model.embedding_type='fourier': needs training.continuous=True "
                      "(it embeds log sigma(t))")
  try:
    sde.check_scale_by_sigma(config.model.scale_by_sigma)
  except ValueError as e:
    raise ConfigError(f"config.model.{e}") from None
  if not is_vector_model(config):
    size, levels = _get(config, "data.image_size"), len(config.model.ch_mult) - 1
    if not _POSITIVE_INT[0](size) or size % 2**levels:
      raise ConfigError(f"config.data.image_size={size!r}: must be a positive multiple of "
                        f"2^(len(model.ch_mult) - 1) = {2**levels}")


def validate_config(config) -> None:
  """Raises :class:`ConfigError` for the first field whose value is not allowed."""
  validate_model_config(config)
  _check_spec(config, _LOOP_SPEC)
  is_images = _dataset_name(config) in IMAGE_DATASETS
  if is_images == is_vector_model(config):
    raise ConfigError(f"config.model.name={config.model.name!r}: data set "
                      f"{config.data.dataset!r} is {'images' if is_images else 'vector data'}; "
                      f"the network takes {'vectors' if is_vector_model(config) else 'images'}")
  if not is_images and config.data.dataset != "gmm" and config.data.dim != 2:
    raise ConfigError(f"config.data.dim={config.data.dim}: dataset {config.data.dataset!r} is 2-D")
  _check_spec(config, {"sampling.method": _one_of(SAMPLING_METHODS)})
  _check_spec(config, _SAMPLING_SPEC)
  t, s = config.training, config.sampling
  if s.method in _METHOD_SPEC:
    _check_spec(config, {**_FAST_SPEC, **_METHOD_SPEC[s.method]})
    if s.method == "edm" and s.edm_s_tmax < s.edm_s_tmin:
      raise ConfigError(f"config.sampling.edm_s_tmax={s.edm_s_tmax}: must be >= "
                        f"sampling.edm_s_tmin={s.edm_s_tmin}")
    if s.fast_sigma_min and s.fast_sigma_max and not s.fast_sigma_min < s.fast_sigma_max:
      raise ConfigError(f"config.sampling.fast_sigma_max={s.fast_sigma_max}: must be above "
                        f"sampling.fast_sigma_min={s.fast_sigma_min} (0: the SDE's own)")
    sde = get_sde(config)
    try:
      sampling.fast.check_exponential_form(sde)
    except ValueError as e:
      raise ConfigError(f"config.sampling.method={s.method!r}: {e}") from None
    if s.fast_sigma_max:
      try:
        sampling.fast.time_steps(sde, s.fast_num_steps, sde.sampling_eps, s.fast_schedule,
                                 sigma_min=s.fast_sigma_min or None, sigma_max=s.fast_sigma_max)
      except ValueError as e:
        raise ConfigError(f"config.sampling.fast_{e}") from None
  if t.snapshot_freq_for_preemption % t.n_jitted_steps or t.snapshot_freq % t.n_jitted_steps:
    raise ConfigError(
        f"config.training.snapshot_freq_for_preemption={t.snapshot_freq_for_preemption} and "
        f"snapshot_freq={t.snapshot_freq}: must be multiples of training.n_jitted_steps="
        f"{t.n_jitted_steps} (checkpoints are taken between jitted calls)")
  if s.method == "ode":
    solver = sampling.flow.get_solver(s.ode_solver)
    adaptive = isinstance(solver, sampling.flow.diffrax.AbstractAdaptiveSolver)
    if s.ode_num_steps == 0 and (s.ode_solver == "heun" or not adaptive):
      raise ConfigError(f"config.sampling.ode_solver={s.ode_solver!r} with sampling.ode_num_steps="
                        f"0: euler / heun need ode_num_steps > 0 (fixed steps)")
  if s.method == "pc" and s.predictor == "ancestral_sampling":
    if not get_sde(config).has_discrete_chain:
      raise ConfigError(f"config.sampling.predictor='ancestral_sampling': needs an SDE with a "
                        f"discrete chain (vpsde, vesde), not training.sde={t.sde!r}")
    if s.probability_flow:
      raise ConfigError("config.sampling.predictor='ancestral_sampling' with "
                        "sampling.probability_flow=True: ancestral sampling has no "
                        "probability-flow form")


# --- Sampling ---------------------------------------------------------------------------------

def _pc(s, sde, shape, eps, mesh):
  return lambda key, score_fn: sampling.pc_sample(
      key, sde, score_fn, shape, predictor=s.predictor, corrector=s.corrector, snr=s.snr,
      n_steps=s.n_steps_each, eps=eps, denoise=s.noise_removal,
      probability_flow=s.probability_flow, mesh=mesh)


def _ode(s, sde, shape, eps, mesh):
  return lambda key, score_fn: sampling.ode_sample(
      key, sde, score_fn, shape, rtol=s.rtol, atol=s.atol, solver=s.ode_solver, eps=eps,
      denoise=s.noise_removal, num_steps=s.ode_num_steps or None, mesh=mesh)


def _sde(s, sde, shape, eps, mesh):
  return lambda key, score_fn: sampling.sde_sample(
      key, sde, score_fn, shape, num_steps=s.sde_num_steps, eps=eps, denoise=s.noise_removal,
      mesh=mesh)


def _sigma_range(s):
  """The few-step samplers' ``sigma_min`` / ``sigma_max`` (config 0: the SDE's own, ``None``)."""
  return {"sigma_min": s.fast_sigma_min or None, "sigma_max": s.fast_sigma_max or None}


def _dpm(s, sde, shape, eps, mesh):
  return lambda key, score_fn: sampling.dpm_solver_sample(
      key, sde, score_fn, shape, num_steps=s.fast_num_steps, order=s.dpm_order,
      schedule=s.fast_schedule, eps=eps, denoise=s.noise_removal, mesh=mesh, **_sigma_range(s))


def _edm(s, sde, shape, eps, mesh):
  return lambda key, score_fn: sampling.edm_sample(
      key, sde, score_fn, shape, num_steps=s.fast_num_steps, schedule=s.fast_schedule,
      churn=s.edm_churn, s_tmin=s.edm_s_tmin, s_tmax=s.edm_s_tmax, s_noise=s.edm_s_noise,
      eps=eps, denoise=s.noise_removal, mesh=mesh, **_sigma_range(s))


SAMPLING_METHODS = {"pc": _pc, "ode": _ode, "sde": _sde, "dpm_solver": _dpm, "edm": _edm}


def get_sampling_fn(config, sde, shape, inverse_scaler, eps, mesh=None):
  """``sampling_fn(key, score_fn) -> SampleResult`` from the config's ``sampling`` section.

  As the paper's ``get_sampling_fn``: ``sampling.method`` is ``pc`` (fields
  ``predictor``, ``corrector``, ``snr``, ``n_steps_each``, ``noise_removal``,
  ``probability_flow``), ``ode`` (``ode_solver``, ``rtol``, ``atol`` and, for
  fixed steps, ``ode_num_steps``), ``sde`` (diffrax Euler-Maruyama with
  ``sde_num_steps``), ``dpm_solver`` (DPM-Solver++ with ``dpm_order``, ``fast_num_steps``,
  ``fast_schedule``, ``fast_sigma_min`` / ``fast_sigma_max``) or ``edm`` (EDM's Heun with the
  same ``fast_*`` fields and the churn ``edm_churn``, ``edm_s_tmin``, ``edm_s_tmax``, ``edm_s_noise``). Samples are returned in data space (``inverse_scaler``),
  split over ``mesh`` when one is given.
  """
  method = _choice(config, "sampling.method", SAMPLING_METHODS)
  sample = SAMPLING_METHODS[method](config.sampling, sde, tuple(shape), eps, mesh)

  def sampling_fn(key, score_fn):
    x, nfe = sample(key, score_fn)
    return sampling.SampleResult(inverse_scaler(x), nfe)

  return sampling_fn


def _range_tag(s) -> str:
  if not (s.fast_sigma_min or s.fast_sigma_max):
    return ""
  lo, hi = (f"{v:g}" if v else "sde" for v in (s.fast_sigma_min, s.fast_sigma_max))
  return f"_sigma{lo}-{hi}"


def sampling_tag(config) -> str:
  """A short name of the configured sampler, for file names."""
  s = config.sampling
  if s.method == "pc":
    return f"pc_{s.predictor}_{s.corrector}"
  if s.method == "ode":
    return f"ode_{s.ode_solver}" + (f"{s.ode_num_steps}" if s.ode_num_steps else "")
  if s.method == "dpm_solver":
    return f"dpm{s.dpm_order}_{s.fast_schedule}{s.fast_num_steps}" + _range_tag(s)
  if s.method == "edm":
    return (f"edm_{s.fast_schedule}{s.fast_num_steps}" + _range_tag(s)
            + (f"_churn{s.edm_churn:g}" if s.edm_churn else ""))
  return f"sde_em{s.sde_num_steps}"


# --- Training -------------------------------------------------------------------------------------

def get_optimizer(config):
  o = config.optim
  return train.make_optimizer(o.lr, o.warmup, o.grad_clip, beta1=o.beta1, eps=o.eps,
                              weight_decay=o.weight_decay)


def get_lr_schedule(config):
  return train.learning_rate_schedule(config.optim.lr, config.optim.warmup)


def get_score_fn(config, sde, model, params, *, flow: bool = False):
  """The score of ``params`` under the config's time labels and output scaling. ``flow=True``:
  the score the probability-flow ODE uses (the SDE's ``flow_continuous``: discrete-time VP
  models are evaluated with the continuous convention, as the paper's ODE sampler and
  likelihood do)."""
  continuous = config.training.continuous
  if flow:
    continuous = sde.flow_continuous(continuous)
  return _score_fn(sde, model, params, continuous, scale_by_sigma=config.model.scale_by_sigma)


def samples_by_flow(method: str) -> bool:
  """Whether the sampling method (``config.sampling.method``) solves the probability-flow ODE
  (``ode``, ``dpm_solver``, ``edm``: their score is the flow's, see :func:`get_score_fn`)."""
  return method in ("ode", "dpm_solver", "edm")


def get_loss_fn(config, sde, model, *, train_mode: bool):
  t = config.training
  if not t.continuous:
    return losses.get_discrete_loss_fn(sde, model, train=train_mode, reduce_mean=t.reduce_mean,
                                       scale_by_sigma=config.model.scale_by_sigma)
  return losses.get_sde_loss_fn(sde, model, train=train_mode, reduce_mean=t.reduce_mean,
                                continuous=True, likelihood_weighting=t.likelihood_weighting,
                                eps=t.eps, scale_by_sigma=config.model.scale_by_sigma)


def _init_fn(config, model, optimizer):
  example = jnp.zeros((1,) + tuple(data_shape(config)))
  return lambda key: train.init_train_state(key, model, example, jnp.ones((1,)), optimizer)


def init_state(config, model, optimizer, mesh=None, *, key=None):
  """A fresh train state of ``model`` (a score network or a classifier: both take ``(x, label)``)
  from ``key``, by default ``PRNGKey(config.seed)`` (replicated over ``mesh``)."""
  init = jax.jit(_init_fn(config, model, optimizer),
                 out_shardings=None if mesh is None else parallel.replicated(mesh))
  return init(jax.random.PRNGKey(config.seed) if key is None else key)


def abstract_state(config, model, optimizer):
  """Shapes and dtypes of the train state, without allocating it (a restore target)."""
  return jax.eval_shape(_init_fn(config, model, optimizer), jax.random.PRNGKey(0))


# --- Noise-conditional classifier (config.classifier) ------------------------------------------

_CLASSIFIER_SPEC = {
    "classifier.batch_size": _POSITIVE_INT,
    "classifier.n_iters": _POSITIVE_INT,
    "classifier.lr": _POSITIVE,
    "classifier.warmup": _NON_NEG_INT,
    "classifier.grad_clip": _GRAD_CLIP,
    "classifier.weight_decay": layers.NON_NEGATIVE,
    "classifier.ema_rate": _RATE,
    "classifier.eps": _TIME,
    "classifier.log_freq": _POSITIVE_INT,
    "classifier.eval_freq": _POSITIVE_INT,
    "classifier.snapshot_freq": _POSITIVE_INT,
    "classifier.max_to_keep": _POSITIVE_INT,
    "classifier.scale": (layers.FINITE[0], "a finite number (1: the exact conditional)"),
    "classifier.samples_per_class": _POSITIVE_INT,
}

def _classifier_args(config):
  """``(class, {arg: config path}, {arg: value})`` of the classifier network: the fields of
  ``config.classifier`` that the network named by ``classifier.name`` has (others keep their
  defaults)."""
  cls = models.CLASSIFIERS[_choice(config, "classifier.name", models.CLASSIFIERS)]
  paths = {f.name: f"classifier.{f.name}" for f in dataclasses.fields(cls)
           if f.name not in ("parent", "name")}
  values = {arg: _as_tuple(_get(config, path, _ABSENT)) for arg, path in paths.items()}
  values = {arg: v for arg, v in values.items() if v is not _ABSENT}
  if "num_classes" not in values:
    raise ConfigError("config.classifier.num_classes: missing (required)")
  return cls, paths, values


def get_classifier_model(config):
  """The noise-conditional classifier network of ``config.classifier``."""
  cls, paths, values = _classifier_args(config)
  with _config_paths(paths, "classifier"):
    return cls(**values)


def classifier_classes(config) -> tuple:
  """The classes ``--mode conditional`` samples: ``classifier.classes``, or all of them."""
  classes = _as_tuple(_get(config, "classifier.classes"))
  return tuple(classes) if classes else tuple(range(config.classifier.num_classes))


def validate_classifier_config(config) -> None:
  """The ``classifier`` section (``--mode train_classifier`` / ``conditional``), before compiling."""
  get_sde(config)
  _check_spec(config, _CLASSIFIER_SPEC)
  model = get_classifier_model(config)
  is_images = not is_vector_model(config)
  takes_images = type(model) is models.WideResNet
  if is_images != takes_images:
    raise ConfigError(f"config.classifier.name={config.classifier.name!r}: the data are "
                      f"{'images' if is_images else 'vectors'}; expected "
                      f"{'wideresnet' if is_images else 'classifier_mlp'}")
  if is_images and config.data.image_size % 4:
    raise ConfigError(f"config.data.image_size={config.data.image_size}: the WideResNet halves "
                      f"the image twice; needs a multiple of 4")
  classes = _as_tuple(_get(config, "classifier.classes"))
  k = config.classifier.num_classes
  if not isinstance(classes, tuple) or not all(layers.NON_NEGATIVE_INT[0](c) for c in classes):
    raise ConfigError(f"config.classifier.classes={classes!r}: expected a tuple of class "
                      f"indices 0..{k - 1} (empty: all classes)")
  bad = [c for c in classes if c >= k]
  if bad:
    raise ConfigError(f"config.classifier.classes={classes!r}: {bad} outside the classifier's "
                      f"classes 0..{k - 1} (classifier.num_classes={k})")


def classifier_workdir(config, workdir: str) -> str:
  """Where the classifier of a run lives: ``classifier.workdir``, or ``<workdir>/classifier``."""
  path = _get(config, "classifier.workdir", "")
  return os.path.abspath(path) if path else os.path.join(os.path.abspath(workdir), "classifier")


def get_classifier_optimizer(config):
  c = config.classifier
  return train.make_optimizer(c.lr, c.warmup, c.grad_clip, weight_decay=c.weight_decay)


def init_classifier_state(config, model, optimizer, mesh=None):
  """A fresh classifier train state from ``config.seed``'s ``classifier`` stream (replicated
  over ``mesh``); :func:`abstract_state` describes it."""
  return init_state(config, model, optimizer, mesh, key=keys.stream(config.seed, "classifier"))


def classifier_data_view(config_dict: dict) -> dict:
  """``{config path: value}`` a classifier and the score model it guides must agree on: the
  SDE and its parameters (its discretisation aside: the classifier sees continuous time), and
  the data set, shape and scaling."""
  d = upgrade_saved_config(config_dict)
  paths = ["training.sde", "data.dataset", "data.centered", "data.image_size", "data.num_channels",
           "data.dim"]
  try:
    paths += [p for p in _sde_paths(SDES[d["training"]["sde"]]).values() if p != "model.num_scales"]
  except KeyError:
    pass
  return {path: _get(d, path, None) for path in paths}


def classifier_compatibility_view(config_dict: dict, *, optimizer: bool = True) -> dict:
  """What a classifier checkpoint must agree with to be resumed or used: the data view and the
  classifier network's own fields."""
  view = classifier_data_view(config_dict)
  d = upgrade_saved_config(config_dict)
  try:
    _, paths, values = _classifier_args(d)
    view.update({paths[arg]: _get(d, paths[arg], None) for arg in values})
    view["classifier.name"] = d["classifier"]["name"]
  except (KeyError, ConfigError):
    view["classifier.name"] = _get(d, "classifier.name", None)
  if optimizer:
    view.update(optimizer_view(d, "classifier"))
  return view


# --- Checkpoint compatibility -----------------------------------------------------------------

def _plain(value):
  """Tuples as lists, recursively: a config saved as JSON comes back with lists."""
  if isinstance(value, (tuple, list)):
    return [_plain(v) for v in value]
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  return value


def upgrade_saved_config(config_dict: dict) -> dict:
  """A config saved by an earlier version, in today's field names (the MLP's ``model.activation``
  is ``model.nonlinearity``, as for the image networks)."""
  config_dict = _plain(config_dict)
  model = config_dict.get("model", {})
  if "activation" in model and "nonlinearity" not in model:
    model["nonlinearity"] = model.pop("activation")
  return config_dict


@dataclasses.dataclass(frozen=True)
class Kind:
  """A config value compared by the kind of thing it makes (``kind``), not by the value itself:
  the optimizer's state has one structure for every ``grad_clip >= 0`` and another without
  clipping, so only a change of kind stops a checkpoint from restoring."""
  value: object = dataclasses.field(compare=False)
  kind: str

  def __repr__(self):
    return f"{self.value!r} ({self.kind})"


def optimizer_view(config_dict: dict, section: str = "optim") -> dict:
  """The fields of an optimizer section (``optim``, ``classifier``) that shape its state:
  clipping on or off, Adam or AdamW."""
  o = config_dict.get(section, {})
  clip, decay = o.get("grad_clip"), o.get("weight_decay")
  if not isinstance(clip, (int, float)) or not isinstance(decay, (int, float)):
    return {}
  return {f"{section}.grad_clip": Kind(clip, "clipping on" if clip >= 0 else "clipping off"),
          f"{section}.weight_decay": Kind(decay, "AdamW" if decay > 0 else "Adam")}


def resume_data_view(config_dict: dict) -> dict:
  """What resumed training must agree with unless ``training.resume_new_data`` is set: the data
  set and where it is read from."""
  d = upgrade_saved_config(config_dict)
  return {path: _get(d, path, None) for path in ("data.dataset", "data.path")}


def compatibility_view(config_dict: dict, *, optimizer: bool = True) -> dict:
  """``{config path: value}`` of what a checkpoint must agree with: the SDE, the time convention,
  the network's own fields, the data's shape and scaling (fields nothing reads do not count), and
  to resume training the structure of the optimizer's state (:func:`optimizer_view`; sampling
  and evaluation restore it with the checkpoint's own optimizer settings)."""
  d = upgrade_saved_config(config_dict)
  paths = ["training.sde", "training.continuous", "model.name", "model.scale_by_sigma",
           "data.centered", "data.image_size", "data.dim"]
  try:
    paths += list(_sde_paths(SDES[d["training"]["sde"]]).values())
    cls, model_paths, values = _model_args(d)
    paths += [model_paths[arg] for arg in values if arg not in cls.unused_fields(values)]
  except (KeyError, ConfigError):
    pass  # an unknown SDE or network: the names alone differ
  view = {path: _get(d, path, None) for path in dict.fromkeys(paths)}
  return {**view, **optimizer_view(d)} if optimizer else view
