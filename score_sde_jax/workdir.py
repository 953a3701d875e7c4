"""Workdirs: where a run lives, and a trained (or converted) one used from Python.

    run = score_sde_jax.load_workdir("workdirs/demo")
    x, nfe = run.sample(jax.random.PRNGKey(0), 64)           # the config's sampler, data space
    logp, z, nfe = run.log_likelihood(jax.random.PRNGKey(1), x)

A workdir holds ``checkpoints/`` (orbax; each step saves the train state and
the run's config), ``config.json``, ``metrics.jsonl``, ``tensorboard/``,
``samples/``, ``eval/`` and ``figures/``. Loading one reads neither its data
set nor anything but the newest checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import socket
import sys
import time

try:
  import fcntl
except ImportError:  # Windows
  fcntl = None

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from score_sde_jax import build, checkpoint, likelihood, parallel
from score_sde_jax.data import get_data_inverse_scaler, get_data_scaler
from score_sde_jax.sampling import SampleResult


class WorkdirError(ValueError):
  """A workdir is missing, not a folder, or holds no checkpoint."""


def check_workdir(workdir: str) -> str:
  """The absolute workdir; its parent folder must exist (a typo should not create a tree)."""
  if not workdir:
    raise WorkdirError("workdir: required (a folder for checkpoints, metrics and figures)")
  workdir = os.path.abspath(workdir)
  parent = os.path.dirname(workdir)
  if not os.path.isdir(parent):
    raise WorkdirError(f"workdir={workdir!r}: parent folder {parent!r} does not exist")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"workdir={workdir!r}: exists and is not a folder")
  return workdir


class WorkdirLocked(WorkdirError):
  """Another process is training in this folder."""


LOCK_FILE = "train.lock"


def _holder(text: str) -> str:
  try:
    info = json.loads(text)
    return (f"process {info['pid']} on host {info['host']} (started {info['started']}: "
            f"{info['command']})")
  except (ValueError, KeyError, TypeError):
    return "another process"


@contextlib.contextmanager
def lock(folder: str):
  """Holds ``folder/train.lock`` exclusively while training writes the folder.

  The lock is the operating system's (``flock``): it ends with the process that holds it, so
  a run killed with SIGKILL leaves no lock behind, only the file with its holder's pid and host;
  the next run takes it over and says whose it was. A second trainer gets one
  :class:`WorkdirLocked` line naming the holder. Only process 0 of a multi-process run takes
  it (the others write no files of their own). Where ``flock`` does not exist (Windows), there
  is no lock.
  """
  if fcntl is None or not parallel.is_main_process():
    yield
    return
  path = os.path.join(folder, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
      raise WorkdirLocked(f"workdir={folder!r}: {holder} is training in it ({path}); wait for "
                          f"it to finish, stop it, or use another workdir") from None
    previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    if previous:
      _warn(f"{path} was left by {_holder(previous)}, which no longer holds it (it was killed "
            f"or its machine stopped); taking it over")
    info = dict(pid=os.getpid(), host=socket.gethostname(),
                started=time.strftime("%Y-%m-%d %H:%M:%S"), command=" ".join(sys.argv)[:500])
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    os.fsync(fd)
    try:
      yield
    finally:
      os.ftruncate(fd, 0)  # a clean exit leaves an empty (unheld) lock file
  finally:
    os.close(fd)  # releases the flock


def check_writable(workdir: str) -> None:
  """The workdir (or, before it exists, its parent) must be writable: one line naming the
  folder and why not, before anything is read or compiled."""
  folder = workdir if os.path.isdir(workdir) else os.path.dirname(workdir)
  if os.access(folder, os.W_OK):
    return
  read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
  raise WorkdirError(f"workdir={workdir!r}: cannot write in {folder!r} "
                     f"({'read-only file system' if read_only else 'permission denied'}); "
                     f"give a folder you can write to")


def write_json(path: str, obj) -> None:
  """Writes ``obj`` as JSON atomically (a kill never leaves half a file)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def checkpoints(workdir: str, config=None):
  """The workdir's orbax manager (retention from ``config.training`` when training)."""
  directory = os.path.join(workdir, "checkpoints")
  if config is None:
    return checkpoint.make_manager(directory)
  return checkpoint.make_manager(directory, max_to_keep=config.training.max_to_keep,
                                 keep_period=config.training.snapshot_freq)


def _restore_target(abstract, mesh):
  sharding = (parallel.replicated(mesh) if mesh is not None
              else jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  return checkpoint.abstract_like(abstract, sharding)


def _warn(message: str) -> None:
  if parallel.is_main_process():
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _move_aside(folder: str) -> str:
  """Renames a damaged step folder to ``<step>.damaged`` (orbax ignores it; nothing is deleted)."""
  target, n = folder + ".damaged", 1
  while os.path.exists(target):
    target, n = f"{folder}.damaged.{n}", n + 1
  os.rename(folder, target)
  return target


def newest_good(manager, attempt, *, move_damaged: bool = False):
  """``(attempt(step), step)`` for the newest step whose ``attempt`` does not raise
  :class:`~score_sde_jax.checkpoint.CheckpointDamaged`, or ``(None, None)`` without checkpoints.

  Each damaged step costs one warning line naming its folder and the reason; the previous step
  is tried next. ``move_damaged`` (training, which will write those step numbers again) renames
  the damaged folders newer than the step used to ``<step>.damaged``; nothing is deleted. When
  every step is damaged it is a :class:`WorkdirError`: starting afresh is for the user to decide.
  """
  damaged = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      result = attempt(step)
    except checkpoint.CheckpointDamaged as e:
      damaged.append(e)
      _warn(f"{e}; trying the previous step")
      continue
    if damaged and move_damaged:
      if parallel.is_main_process():
        for e in damaged:
          _warn(f"{e.step_dir} moved to {_move_aside(e.step_dir)} (step {step} is resumed, and "
                f"training writes the later steps again)")
      parallel.sync("damaged_checkpoints_moved")
      manager.reload()
    return result, int(step)
  if damaged:
    raise WorkdirError(
        f"no readable checkpoint in {manager.directory}: all {len(damaged)} step folders are "
        f"damaged (the newest: {damaged[0].reason}); move them elsewhere to start afresh")
  return None, None


def restore_newest(config, manager, abstract, mesh=None, *, view=build.compatibility_view,
                   move_damaged: bool = False, hints: dict | None = None):
  """``(state, step)`` of the newest readable checkpoint, or ``(None, 0)`` without one.

  A checkpoint written under settings this config cannot continue from (another
  network, SDE, time convention, data shape or optimizer structure: what ``view`` of the two
  configs compares; a classifier's is ``build.classifier_compatibility_view``) is refused with
  :class:`score_sde_jax.checkpoint.IncompatibleCheckpoint` naming the field. A damaged step
  falls back to the previous one (:func:`newest_good`).
  """
  target = _restore_target(abstract, mesh)

  def attempt(step):
    saved = checkpoint.read_config(manager, step)
    checkpoint.check_compatible(view(saved), view(config.to_dict()), manager.directory, hints)
    return checkpoint.restore(manager, step, target)

  state, step = newest_good(manager, attempt, move_damaged=move_damaged)
  return state, (step or 0)


def saved_config(manager, step) -> ml_collections.ConfigDict:
  """The config saved with ``step`` (fields renamed since then are upgraded)."""
  return ml_collections.ConfigDict(build.upgrade_saved_config(checkpoint.read_config(manager, step)))


@dataclasses.dataclass
class TrainedRun:
  """A trained workdir: its config, SDE, network, restored state and newest step.

  ``params`` are the EMA parameters (what the paper samples and evaluates
  with). Inputs and outputs of the methods are in data space, as the data
  set yields them (toy points; images as floats in ``[0, 1]``); sampling and
  the likelihood use the config's ``sampling`` and ``eval`` settings. With a
  ``mesh``, batches are split over its devices (and processes).
  """

  workdir: str
  config: ml_collections.ConfigDict
  step: int
  sde: object
  model: object
  state: object
  mesh: object = None

  @property
  def params(self):
    return self.state.ema_params

  @functools.cached_property
  def score_fn(self):
    """``score_fn(x, t)`` of the EMA parameters, in model space."""
    return build.get_score_fn(self.config, self.sde, self.model, self.params)

  @functools.cached_property
  def flow_score_fn(self):
    """The score the probability-flow ODE uses (likelihood, encode / decode, ODE sampling):
    :attr:`score_fn` except for discrete-time VP models, which it evaluates with the
    continuous convention, as the paper does."""
    return build.get_score_fn(self.config, self.sde, self.model, self.params, flow=True)

  @property
  def data_shape(self) -> tuple:
    return tuple(build.data_shape(self.config))

  @property
  def scaler(self):
    return get_data_scaler(self.config.data.centered)

  @property
  def inverse_scaler(self):
    return get_data_inverse_scaler(self.config.data.centered)

  def sampling_fn(self, batch_size, **sampling):
    """``fn(key, score_fn) -> SampleResult`` for batches of ``batch_size``; ``sampling`` overrides
    fields of the config's ``sampling`` section (``method="ode"``, ``rtol=1e-3``, ...)."""
    config = self.config
    if sampling:
      config = ml_collections.ConfigDict(config.to_dict())
      for field, value in sampling.items():
        if field not in config.sampling:
          raise ValueError(f"{field}={value!r}: not a field of config.sampling "
                           f"({sorted(config.sampling)})")
        config.sampling[field] = value
      build.validate_config(config)
    parallel.check_mesh(batch_size, self.mesh, "batch_size")
    return build.get_sampling_fn(config, self.sde, (batch_size,) + self.data_shape,
                                 self.inverse_scaler, self.sde.sampling_eps, mesh=self.mesh)

  def sample_batches(self, key, n: int, *, batch_size: int | None = None, **sampling):
    """``(samples (n, ...), nfe of each batch)``: batch ``i`` is drawn with ``fold_in(key, i)``."""
    batch_size = batch_size or self.config.eval.batch_size
    sampling_fn = self.sampling_fn(batch_size, **sampling)
    flow = build.samples_by_flow(sampling.get("method", self.config.sampling.method))
    score_fn = self.flow_score_fn if flow else self.score_fn
    chunks, nfes = [], []
    for i in range(-(-n // batch_size)):
      x, nfe = sampling_fn(jax.random.fold_in(key, i), score_fn)
      chunks.append(parallel.to_host(x))
      nfes.append(nfe)
    return np.concatenate(chunks)[:n], nfes

  def sample(self, key, n: int, *, batch_size: int | None = None, **sampling) -> SampleResult:
    """``n`` samples in data space with the config's sampler (``sampling`` overrides its fields,
    e.g. ``method="ode"``); ``nfe`` is the largest of any batch."""
    samples, nfes = self.sample_batches(key, n, batch_size=batch_size, **sampling)
    return SampleResult(samples, max(nfes))

  def _flow_options(self):
    e = self.config.eval
    return dict(rtol=e.rtol, atol=e.atol, eps=e.likelihood_eps, mesh=self.mesh)

  def log_likelihood(self, key, x, *, divergence: str | None = None):
    """Log-density of data-space ``x`` ``(B, ...)`` in nats (the scaler's Jacobian included)."""
    x = jnp.asarray(x, jnp.float32)
    y = self.scaler(x)
    logp, z, nfe = likelihood.log_likelihood(
        key, self.sde, self.flow_score_fn, y, divergence=divergence or self.config.eval.divergence,
        **self._flow_options())
    n_dims = int(np.prod(x.shape[1:]))
    log_jacobian = n_dims * np.log(abs(float(jax.grad(lambda u: self.scaler(u))(0.5))))
    return likelihood.LikelihoodResult(logp + log_jacobian, z, nfe)

  def bits_per_dim(self, key, x_int, *, num_levels: int = 256, n_repeats: int = 1,
                   divergence: str | None = None):
    """Bits/dim of integer levels ``x_int`` (uniform dequantization, as ``--mode eval``)."""
    return likelihood.bits_per_dim(key, self.sde, self.flow_score_fn, x_int, num_levels=num_levels,
                                   scaler=self.scaler, n_repeats=n_repeats,
                                   divergence=divergence or self.config.eval.divergence,
                                   **self._flow_options())

  def encode(self, x):
    """Latent codes ``z = x(T)`` of data-space ``x`` under the probability-flow ODE."""
    return likelihood.encode(self.sde, self.flow_score_fn, self.scaler(jnp.asarray(x, jnp.float32)),
                             **self._flow_options())

  def decode(self, z):
    """Data-space ``x`` from latents ``z`` (the inverse of :meth:`encode`)."""
    return self.inverse_scaler(likelihood.decode(self.sde, self.flow_score_fn, z,
                                                 **self._flow_options()))


def _manager(folder: str, what: str, train_first: str):
  """The checkpoint manager of a folder that holds checkpoints; none is one clear error."""
  manager = checkpoints(folder) if os.path.isdir(os.path.join(folder, "checkpoints")) else None
  if manager is None or manager.latest_step() is None:
    raise WorkdirError(f"{what}={folder!r}: no checkpoint in "
                       f"{os.path.join(folder, 'checkpoints')}; {train_first}")
  return manager


def _saved_optimizer(get, saved, config):
  """The optimizer a checkpoint was saved with (a config saved before a field existed: the
  given config's)."""
  try:
    return get(saved)
  except (AttributeError, KeyError):
    return get(config)


def _load_newest(manager, given, mesh, *, validate, view, get_model, get_optimizer):
  """``((config, sde, model, state), step)`` of the newest readable step for sampling and
  evaluation (score models and classifiers alike): ``given`` (default: the saved config) must
  agree with the saved one on ``view``; the optimizer state is restored as it was saved (this
  config's optimizer settings are not the checkpoint's business here)."""
  view = functools.partial(view, optimizer=False)

  def attempt(step):
    saved = saved_config(manager, step)
    config = saved if given is None else given
    validate(config)
    checkpoint.check_compatible(view(saved.to_dict()), view(config.to_dict()), manager.directory)
    sde, model = build.get_sde(config), get_model(config)
    abstract = build.abstract_state(config, model, _saved_optimizer(get_optimizer, saved, config))
    return config, sde, model, checkpoint.restore(manager, step, _restore_target(abstract, mesh))

  return newest_good(manager, attempt)


def load_workdir(workdir: str, config=None, *, mesh=None) -> TrainedRun:
  """A trained or converted workdir's newest checkpoint, ready to sample and evaluate.

  ``config`` defaults to the one saved with that checkpoint; another one (for
  example with other sampler settings) must agree with it on the network, SDE
  and data shape. Nothing of the data set is read. A damaged newest checkpoint falls back to
  the previous one with a warning (:func:`newest_good`).
  """
  workdir = check_workdir(workdir)
  manager = _manager(workdir, "workdir", "train first (run.py --mode train)")
  (config, sde, model, state), step = _load_newest(
      manager, config, mesh, validate=build.validate_model_config,
      view=build.compatibility_view, get_model=build.get_model,
      get_optimizer=build.get_optimizer)
  return TrainedRun(workdir, config, step, sde, model, state, mesh)


# --- Noise-conditional classifiers ----------------------------------------------------------------

def classifier_checkpoints(classifier_dir: str, config=None):
  """The orbax manager of a classifier folder (retention from ``config.classifier``)."""
  directory = os.path.join(classifier_dir, "checkpoints")
  if config is None:
    return checkpoint.make_manager(directory)
  return checkpoint.make_manager(directory, max_to_keep=config.classifier.max_to_keep)


@dataclasses.dataclass
class TrainedClassifier:
  """A trained noise-conditional classifier: ``classifier_fn(x, t) -> logits`` (model space) of
  its EMA parameters, for :func:`score_sde_jax.controllable.guided_score`."""

  directory: str
  config: ml_collections.ConfigDict
  step: int
  sde: object
  model: object
  state: object

  @property
  def params(self):
    return self.state.ema_params

  @property
  def num_classes(self) -> int:
    return self.model.num_classes

  @functools.cached_property
  def classifier_fn(self):
    from score_sde_jax.classifier import get_classifier_fn
    return get_classifier_fn(self.sde, self.model, self.params)

  @functools.cached_property
  def feature_fn(self):
    """``feature_fn(x, t) -> (B, F)`` (model space): the last hidden layer, for
    :func:`score_sde_jax.metrics.frechet_distance`."""
    from score_sde_jax.classifier import get_feature_fn
    return get_feature_fn(self.sde, self.model, self.params)


def load_classifier(directory: str, config=None, *, mesh=None) -> TrainedClassifier:
  """The newest checkpoint of a classifier folder (``run.py --mode train_classifier`` writes
  ``<workdir>/classifier`` unless ``classifier.workdir`` says otherwise). ``config`` (by default
  the saved one) must agree with it on the SDE, the data and the classifier network: a
  classifier trained for another SDE or data shape is refused before anything compiles."""
  directory = check_workdir(directory)
  manager = _manager(directory, "classifier folder",
                     "train one first (run.py --mode train_classifier)")
  (config, sde, model, state), step = _load_newest(
      manager, config, mesh, validate=build.validate_classifier_config,
      view=build.classifier_compatibility_view, get_model=build.get_classifier_model,
      get_optimizer=build.get_classifier_optimizer)
  return TrainedClassifier(directory, config, step, sde, model, state)
