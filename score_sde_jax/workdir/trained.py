"""A trained (or converted) workdir, and a trained classifier, used from Python.

    run = score_sde_jax.load_workdir("workdirs/demo")
    x, nfe = run.sample(jax.random.PRNGKey(0), 64)           # the config's sampler, data space
    logp, z, nfe = run.log_likelihood(jax.random.PRNGKey(1), x)

Loading reads neither the data set nor anything but the newest readable checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from score_sde_jax import build, checkpoint, checks, likelihood, likelihood_bound, parallel
from score_sde_jax import train as train_lib
from score_sde_jax.classifier import get_classifier_fn, get_feature_fn
from score_sde_jax.experiment import Experiment
from score_sde_jax.sampling import SampleResult
from score_sde_jax.sampling import progress as sampling_progress
from score_sde_jax.workdir.folders import WorkdirError, check_workdir, checkpoints
from score_sde_jax.workdir.restore import check_step_matches, newest_good, restore_target


class _Restored:
  """What a restored checkpoint of an experiment gives: its SDE and the EMA parameters (what the
  paper samples and evaluates with)."""

  @property
  def sde(self):
    return self.experiment.sde

  @property
  def params(self):
    return self.state.ema_params


@dataclasses.dataclass
class TrainedRun(_Restored):
  """A trained workdir: its experiment, restored state and newest step.

  ``params`` are the EMA parameters (what the paper samples and evaluates with). Inputs and
  outputs of the methods are in data space, as the data set yields them (toy points; images as
  floats in ``[0, 1]``); sampling and the likelihood use the experiment's ``sampling`` and
  ``eval`` settings. With a ``mesh``, batches are split over its devices (and processes).
  """

  workdir: str
  experiment: Experiment
  step: int
  state: object
  mesh: object = None

  @property
  def model(self):
    """The score network (a Flax module)."""
    return self.experiment.model.network

  @functools.cached_property
  def score_fn(self):
    """``score_fn(x, t)`` of the EMA parameters, in model space."""
    return self.experiment.model.score_fn(self.params)

  @functools.cached_property
  def flow_score_fn(self):
    """The score the probability-flow ODE uses (likelihood, encode / decode, ODE sampling):
    :attr:`score_fn` except for discrete-time VP models, which it evaluates with the
    continuous convention, as the paper does."""
    return self.experiment.model.score_fn(self.params, flow=True)

  @property
  def data_shape(self) -> tuple:
    return self.experiment.data.shape

  @property
  def scaler(self):
    return self.experiment.data.scaler

  @property
  def inverse_scaler(self):
    return self.experiment.data.inverse_scaler

  def sampling(self, **options):
    """The experiment's sampling settings with ``options`` changed: ``method="ode"``,
    ``noise_removal=False``, or any option of the method (``rtol=1e-3``, ``order=3``, ...),
    checked against the SDE."""
    chosen = self.experiment.part("sampling")
    if not options:
      return chosen
    method = options.pop("method", None)
    denoise = options.pop("noise_removal", None)
    chosen = chosen.with_options(method, denoise=denoise, **options)
    chosen.sampler.check(self.sde)
    return chosen

  def sampling_fn(self, batch_size, **options):
    """``fn(key, score_fn) -> SampleResult`` for batches of ``batch_size`` (:meth:`sampling`)."""
    return self.experiment.sampling_fn(batch_size, self.mesh, self.sampling(**options))

  def sample_batches(self, key, n: int, *, batch_size: int | None = None, progress=None,
                     **options):
    """``(samples (n, ...), nfe of each batch)``: batch ``i`` is drawn with ``fold_in(key, i)``,
    in batches of ``batch_size`` (default ``eval.batch_size``, or fewer when ``n`` is smaller:
    ``n`` rounded up to a multiple of the mesh's data shards, not a whole batch cut short). Samples
    depend on the batch they are drawn in (Langevin's step size comes from the whole batch's
    norms), so ``--mode sample`` is reproduced by the same ``n``. ``progress``: a progress bar
    over the samples with that name (the first batch includes compiling the sampler), and one
    over each batch's steps where the sampler is a scan (PC)."""
    chunks, nfes = [], []
    for _, x, nfe in self.iter_sample_batches(key, n, batch_size=batch_size, progress=progress,
                                              **options):
      chunks.append(x)
      nfes.append(nfe)
    return np.concatenate(chunks)[:n], nfes

  def sample_batch_size(self, n: int) -> int:
    """:meth:`sample_batches`' default batch: ``eval.batch_size``, or ``n`` rounded up to a
    multiple of the mesh's data shards when that is smaller."""
    shards = 1 if self.mesh is None else parallel.num_shards(self.mesh)
    return min(self.experiment.part("eval").batch_size, -(-n // shards) * shards)

  def iter_sample_batches(self, key, n: int, *, batch_size: int | None = None, progress=None,
                          skip=(), **options):
    """:meth:`sample_batches` one batch at a time: yields ``(i, samples of batch i (host, cut
    to n in all), nfe)``, leaving out the batches in ``skip`` (drawn before: every batch has
    its own key, so the others do not change)."""
    checks.check_key(key, "sampling")
    if batch_size is None:
      batch_size = self.sample_batch_size(n)
    chosen = self.sampling(**options)
    sampling_fn = self.experiment.sampling_fn(batch_size, self.mesh, chosen)
    score_fn = self.flow_score_fn if chosen.uses_flow else self.score_fn
    num_batches = -(-n // batch_size)
    sizes = [min(batch_size, n - i * batch_size) for i in range(num_batches)]
    with tqdm(total=n, initial=sum(sizes[i] for i in set(skip) if i < num_batches), desc=progress,
              unit="sample", dynamic_ncols=True,
              disable=progress is None or not parallel.is_main_process()) as bar:
      for i in range(num_batches):
        if i in skip:
          continue
        with (contextlib.nullcontext() if progress is None else
              sampling_progress.stage(f"{progress}, batch {i + 1}/{num_batches}")):
          x, nfe = sampling_fn(jax.random.fold_in(key, i), score_fn)
        bar.update(sizes[i])
        yield i, parallel.to_host(x)[:sizes[i]], nfe

  def sample(self, key, n: int, *, batch_size: int | None = None, **options) -> SampleResult:
    """``n`` samples in data space with the experiment's sampler (``options`` change it, e.g.
    ``method="ode"``); ``nfe`` is the largest of any batch."""
    samples, nfes = self.sample_batches(key, n, batch_size=batch_size, **options)
    return SampleResult(samples, max(nfes))

  def _flow_options(self):
    return dict(self.experiment.part("eval").flow_options(), mesh=self.mesh)

  def _divergence(self, divergence):
    return divergence or self.experiment.part("eval").divergence

  def log_likelihood(self, key, x, *, divergence: str | None = None):
    """Log-density of data-space ``x`` ``(B, ...)`` in nats (the scaler's Jacobian included)."""
    x = jnp.asarray(x, jnp.float32)
    y = self.scaler(x)
    logp, z, nfe = likelihood.log_likelihood(
        key, self.sde, self.flow_score_fn, y, divergence=self._divergence(divergence),
        **self._flow_options())
    return likelihood.LikelihoodResult(logp + self._log_jacobian(x), z, nfe)

  def _log_jacobian(self, x):
    """``log |det d scaler(x) / dx|`` of the affine scaler, per example of ``x`` ``(B, ...)``:
    model-space densities become data-space ones by adding it."""
    n_dims = int(np.prod(x.shape[1:]))
    return n_dims * np.log(abs(float(jax.grad(lambda u: self.scaler(u))(0.5))))

  def bits_per_dim(self, key, x_int, *, num_levels: int = 256, n_repeats: int = 1,
                   divergence: str | None = None):
    """Bits/dim of integer levels ``x_int`` (uniform dequantization, as ``--mode eval``)."""
    return likelihood.bits_per_dim(key, self.sde, self.flow_score_fn, x_int, num_levels=num_levels,
                                   scaler=self.scaler, n_repeats=n_repeats,
                                   divergence=self._divergence(divergence), **self._flow_options())

  def _bound_options(self, num_times):
    e = self.experiment.part("eval")
    return dict(num_times=num_times or e.bound_num_times,
                importance_sampling=e.bound_importance_sampling, eps=e.likelihood_eps)

  def nll_bound(self, key, x, *, num_times: int | None = None):
    """ScoreFlow's upper bound on ``-log p(x)`` of data-space ``x`` in nats
    (:func:`score_sde_jax.likelihood_bound.nll_bound`, the scaler's Jacobian included; settings
    ``eval.bound_num_times``, ``eval.bound_importance_sampling``, ``eval.likelihood_eps``)."""
    x = jnp.asarray(x, jnp.float32)
    result = likelihood_bound.nll_bound(key, self.sde, self.flow_score_fn, self.scaler(x),
                                        **self._bound_options(num_times))
    return result._replace(nll=result.nll - self._log_jacobian(x))

  def bits_per_dim_bound(self, key, x_int, *, num_levels: int = 256, n_repeats: int = 1,
                         num_times: int | None = None):
    """The bound in bits/dim of integer levels (the dequantization of :meth:`bits_per_dim`)."""
    return likelihood_bound.bits_per_dim_bound(key, self.sde, self.flow_score_fn, x_int,
                                               num_levels=num_levels, scaler=self.scaler,
                                               n_repeats=n_repeats,
                                               **self._bound_options(num_times))

  def _check_examples(self, name, x):
    """``x`` as float32 examples of this run's data shape (a latent of another shape reached
    the network and failed inside it)."""
    x = jnp.asarray(x, jnp.float32)
    if x.ndim < 1 or tuple(x.shape[1:]) != tuple(self.data_shape):
      raise ValueError(f"{name}: shape {tuple(x.shape)}; expected (batch,) + "
                       f"{tuple(self.data_shape)} (this run's examples)")
    return x

  def encode(self, x):
    """Latent codes ``z = x(T)`` of data-space ``x`` under the probability-flow ODE."""
    x = self._check_examples("x", x)
    return likelihood.encode(self.sde, self.flow_score_fn, self.scaler(jnp.asarray(x, jnp.float32)),
                             **self._flow_options())

  def decode(self, z):
    """Data-space ``x`` from latents ``z`` (the inverse of :meth:`encode`)."""
    z = self._check_examples("z", z)
    return self.inverse_scaler(likelihood.decode(self.sde, self.flow_score_fn, z,
                                                 **self._flow_options()))


@dataclasses.dataclass
class TrainedClassifier(_Restored):
  """A trained noise-conditional classifier: ``classifier_fn(x, t) -> logits`` (model space) of
  its EMA parameters, for :func:`score_sde_jax.controllable.guided_score`."""

  directory: str
  experiment: Experiment
  step: int
  state: object

  @property
  def model(self):
    """The classifier network (a Flax module)."""
    return self.experiment.classifier.network

  @property
  def num_classes(self) -> int:
    return self.model.num_classes

  @functools.cached_property
  def classifier_fn(self):
    return get_classifier_fn(self.sde, self.model, self.params)

  @functools.cached_property
  def feature_fn(self):
    """``feature_fn(x, t) -> (B, F)`` (model space): the last hidden layer, for
    :func:`score_sde_jax.metrics.frechet_distance`."""
    return get_feature_fn(self.sde, self.model, self.params)


def _manager(folder: str, what: str, train_first: str):
  """The checkpoint manager of a folder that holds checkpoints; none is one clear error."""
  manager = checkpoints(folder) if os.path.isdir(os.path.join(folder, "checkpoints")) else None
  if manager is None or manager.latest_step() is None:
    raise WorkdirError(f"{what}={folder!r}: no checkpoint in "
                       f"{os.path.join(folder, 'checkpoints')}; {train_first}")
  return manager


def _experiment(given, *, classifier: bool) -> Experiment | None:
  if given is None or isinstance(given, Experiment):
    return given
  return build.experiment(given, scope="network", classifier=classifier)


def _load_newest(manager, given, mesh, *, classifier: bool, step: int | None = None):
  """``((experiment, state), step)`` of the newest readable step for sampling and evaluation
  (score models and classifiers alike): ``given`` (default: the saved config's experiment) must
  agree with the saved one; the optimizer state is restored as it was saved (this run's
  optimizer settings are not the checkpoint's business here)."""
  select = (lambda v: v.classifier) if classifier else (lambda v: v.model)

  def attempt(step):
    saved = build.experiment(checkpoint.read_config(manager, step), scope="network",
                             classifier=classifier)
    exp = given or saved
    checkpoint.check_compatible(select(saved.views), select(exp.views), manager.directory)
    optimizer = (saved.optimizer or exp.part("optimizer")).make()
    if classifier:
      abstract = exp.classifier.abstract_state(exp.data.shape, optimizer)
    else:
      abstract = exp.model.abstract_state(optimizer)
    state = checkpoint.restore(manager, step, restore_target(abstract, mesh))
    check_step_matches(state, step, str(manager.directory))
    return exp, state, saved

  if step is not None:   # that step or one clear error (a damaged one is not replaced by another)
    if step not in manager.all_steps():
      raise WorkdirError(f"step={step}: no checkpoint of that step in {manager.directory} (it "
                         f"holds steps {sorted(manager.all_steps())})")
    return attempt(step), step
  return newest_good(manager, attempt)


def warn_if_ema_is_untrained(saved: Experiment, step: int, warn=None, *,
                             classifier: bool = False) -> float | None:
  """Says so in one line (to ``warn``, default stderr) when the EMA parameters of a checkpoint
  still weigh its initial, random parameters by more than
  :data:`~score_sde_jax.train.EMA_INITIAL_WEIGHT_WARNING`: samples and likelihoods (with
  ``classifier``: the classifier's guidance and features) are then those of a partly untrained
  network although the raw parameters may be good. ``saved``: the experiment the checkpoint was
  trained with. Returns that weight (None when the saved config has no training section, as a
  converted checkpoint's may not)."""
  part = saved.classifier if classifier else saved.training
  if part is None:
    return None
  section = "classifier" if classifier else "model"
  weight = train_lib.ema_initial_weight(step, part.ema_rate, part.ema_warmup)
  if weight > train_lib.EMA_INITIAL_WEIGHT_WARNING:
    how = "with" if part.ema_warmup else "without"
    what = ("the classifier's guidance and features are those of a partly trained network"
            if classifier else "samples and likelihoods are those of a partly trained network")
    whose = "classifier's " if classifier else ""
    print(f"warning: the {whose}EMA parameters of "
          f"step {step} still weigh the initial (random) parameters by {weight:.2f} "
          f"({section}.ema_rate={part.ema_rate}, {how} {section}.ema_warmup): {what}; train "
          f"longer, or train with {section}.ema_warmup=True", file=warn or sys.stderr)
  return weight


def load_workdir(workdir: str, experiment=None, *, mesh=None, step: int | None = None) -> TrainedRun:
  """A trained or converted workdir's newest checkpoint (or the one of ``step``), ready to sample
  and evaluate.

  ``experiment`` (an :class:`~score_sde_jax.experiment.Experiment`, or a config) defaults to
  the one saved with that checkpoint; another one (for example with other sampler settings)
  must agree with it on the network, SDE and data shape. Nothing of the data set is read. A
  damaged newest checkpoint falls back to the previous one with a warning.
  """
  workdir = check_workdir(workdir)
  manager = _manager(workdir, "workdir", "train first (run.py --mode train)")
  (exp, state, saved), step = _load_newest(manager, _experiment(experiment, classifier=False),
                                           mesh, classifier=False, step=step)
  warn_if_ema_is_untrained(saved, step)
  return TrainedRun(workdir, exp, step, state, mesh)


def load_classifier(directory: str, experiment=None, *, mesh=None) -> TrainedClassifier:
  """The newest checkpoint of a classifier folder (``run.py --mode train_classifier`` writes
  ``<workdir>/classifier`` unless ``classifier.workdir`` says otherwise). ``experiment`` (by
  default the saved one) must agree with it on the SDE, the data and the classifier network: a
  classifier trained for another SDE or data shape is refused before anything compiles."""
  directory = check_workdir(directory)
  manager = _manager(directory, "classifier folder",
                     "train one first (run.py --mode train_classifier)")
  (exp, state, saved), step = _load_newest(manager, _experiment(experiment, classifier=True),
                                        mesh, classifier=True)
  if saved is not None and saved.classifier is not None:
    warn_if_ema_is_untrained(saved, step, classifier=True)
  return TrainedClassifier(directory, exp, step, state)
