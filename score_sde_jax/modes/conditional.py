"""``--mode conditional``: class-conditional samples of the EMA score model guided by the run's
noise-conditional classifier (``--mode train_classifier``): the score
``score + classifier.scale * grad_x log p_t(y | x)`` in the config's sampler (PC, the diffrax
reverse SDE, or the probability-flow ODE).

``classifier.samples_per_class`` samples of each class in ``classifier.classes`` (empty: all).
Writes ``samples/conditional_<sampler>_scale<s>_step<step>.npz`` (``samples``
``(K, n, ...)``, ``labels`` ``(K,)``), ``eval/conditional_...json`` (the share of samples that
the classifier, at the smallest time, assigns to the class asked for, beside the same share for
unguided draws; the Frechet distance from held-out examples of those classes in the classifier's
features, guided and unguided; the share of values outside the data's range; for the Gaussian
mixture also the share whose exact posterior names the class, and their exact log-density) and a
figure: one labelled row per class for images, the samples coloured by class over the data for
2-D points.

The classifier must have been trained for the score model's SDE, data set, shape and scaling:
otherwise one error names the field, before anything compiles.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from score_sde_jax import checkpoint, controllable, keys, metrics, parallel, viz
from score_sde_jax import workdir as workdir_lib
from score_sde_jax.build import ConfigError
from score_sde_jax.experiment import Experiment
from score_sde_jax.modes.results import figures_wanted, print_figures, write_result
from score_sde_jax.modes.sample import range_check
from score_sde_jax.sampling import progress as sampling_progress


def check_classifier_matches(run, clf) -> None:
  """Refuses a classifier trained for another SDE, data set, data shape or scaling."""
  mine = run.experiment.views.classifier_data
  theirs = clf.experiment.views.classifier_data
  for path in dict.fromkeys(list(mine) + list(theirs)):  # the SDE's name first
    if mine.get(path) != theirs.get(path):
      raise checkpoint.IncompatibleCheckpoint(
          f"config.{path}={mine.get(path)!r}: the classifier in {clf.directory} was trained with "
          f"{path}={theirs.get(path)!r}; train one for this run (run.py --mode train_classifier, "
          f"or set classifier.workdir)")


def conditional(exp: Experiment, workdir: str, *, stop=None):
  """Samples every requested class; returns ``(samples (K, n, ...), labels (K,), result)``."""
  del stop
  mesh = parallel.make_mesh()
  run = workdir_lib.load_workdir(workdir, exp, mesh=mesh)
  c = exp.classifier
  clf = workdir_lib.load_classifier(c.directory(run.workdir), mesh=mesh)
  check_classifier_matches(run, clf)
  classes = c.sampled_classes
  bad = [k for k in classes if k >= clf.num_classes]
  if bad:
    raise ConfigError(f"config.classifier.classes={tuple(classes)}: {bad} outside the "
                      f"trained classifier's classes 0..{clf.num_classes - 1}")
  return sample_classes(run, clf, classes, samples_per_class=c.samples_per_class, scale=c.scale,
                        dataset=exp.data.load())


def sample_classes(run, clf, classes, *, samples_per_class: int, scale: float, dataset=None):
  """``(samples (K, n, ...), labels (K,), result)`` in data space; writes files when the run
  has a workdir and ``dataset`` is given (for the metrics and the figure)."""
  exp, n, classes = run.experiment, samples_per_class, np.asarray(classes, np.int32)
  chosen = exp.part("sampling")
  score_fn = run.flow_score_fn if chosen.uses_flow else run.score_fn
  # The adaptive probability-flow ODE is solved per example with one class per call; the
  # other samplers take every class in one batch.
  per_class = chosen.method == "ode"
  batch = n if per_class else n * len(classes)
  try:
    parallel.check_mesh(batch, run.mesh, "classifier.samples_per_class" if per_class else
                        "classifier.samples_per_class * number of classes")
  except ValueError as e:
    raise ConfigError(f"config.{e}") from None
  sampling_fn = run.sampling_fn(batch)
  key = keys.stream(exp.seed, "conditional")
  start = time.perf_counter()
  def draw(guidance):
    """Every class's samples with the guided score (``guidance=None``: unguided, the baseline)."""
    if per_class:
      chunks, nfes = [], []
      for i, k in enumerate(classes):
        guided = score_fn if guidance is None else controllable.guided_score(
            score_fn, clf.classifier_fn, int(k), guidance, num_classes=clf.num_classes)
        x, nfe = sampling_fn(jax.random.fold_in(key, i), guided)
        chunks.append(parallel.to_host(x))
        nfes.append(nfe)
      return np.stack(chunks), max(nfes)
    guided = score_fn if guidance is None else controllable.guided_score(
        score_fn, clf.classifier_fn, np.repeat(classes, n), guidance, num_classes=clf.num_classes)
    x, nfe = sampling_fn(key, guided)
    return parallel.to_host(x).reshape((len(classes), n) + run.data_shape), nfe

  with sampling_progress.stage(f"conditional: guided samples (scale {scale:g}, {chosen.tag})"):
    samples, nfe = draw(scale)
  seconds = time.perf_counter() - start
  # The same draws without guidance: how often the classifier names the asked class anyway.
  # Agreement far above this baseline says the guidance acts, not that the samples are good
  # (guided noise can fool a weak classifier: see share_outside_data_range).
  with sampling_progress.stage(f"conditional: unguided baseline ({chosen.tag})"):
    unguided, _ = draw(None)
  in_range = {}
  if dataset is not None:   # before clipping: noise guided to fool the classifier shows here
    held_out = dataset.held_out(2000, exp.seed) if dataset.kind == "points" else None
    in_range = range_check(dataset, samples.reshape((-1,) + run.data_shape), held_out)
    samples = dataset.clip(samples)
  result = {"step": run.step, "classifier_step": clf.step, "sampler": chosen.tag,
            "scale": float(scale), "classes": classes.tolist(), "samples_per_class": n,
            "nfe": int(nfe), "seconds": round(seconds, 2)}
  result.update(class_metrics(run, clf, samples, classes, dataset))
  if dataset is not None:
    unguided = dataset.clip(unguided)
  baseline = class_metrics(run, clf, unguided, classes)
  result["classifier_agreement_unguided"] = baseline["classifier_agreement"]
  if dataset is not None:
    result.update(feature_distances(run, clf, samples, unguided, classes, dataset))
  result.update(in_range)
  if dataset is None or not parallel.is_main_process():
    return samples, classes, result
  tag = f"conditional_{result['sampler']}_scale{scale:g}_step{run.step}"
  write_result(run.workdir, tag, result,
               arrays=dict(samples=samples, labels=classes, nfe=np.asarray(nfe)))
  if figures_wanted(exp):
    print_figures([_figure(run, dataset, samples, classes, scale, tag)])
  return samples, classes, result


def class_metrics(run, clf, samples, classes, dataset=None) -> dict:
  """How often the samples are of the class asked for: by the classifier at the smallest
  sampling time, and for the Gaussian mixture by its exact posterior (plus exact log-density)."""
  k, n = samples.shape[:2]
  x = jnp.asarray(samples.reshape((k * n,) + samples.shape[2:]), jnp.float32)
  asked = np.repeat(classes, n)
  t = jnp.full((k * n,), run.sde.sampling_eps)
  logits = np.asarray(jax.jit(clf.classifier_fn)(run.scaler(x), t))
  out = {"classifier_agreement": float(np.mean(logits.argmax(-1) == asked)),
         "classifier_agreement_by_class": [round(float(np.mean(v)), 4) for v in
                                           (logits.argmax(-1) == asked).reshape(k, n)]}
  if dataset is not None and dataset.marginal_log_posterior is not None:
    post = np.asarray(dataset.marginal_log_posterior(run.sde, x, t))
    out["exact_posterior_agreement"] = float(np.mean(post.argmax(-1) == asked))
    out["exact_posterior_of_class"] = float(np.mean(np.exp(post[np.arange(k * n), asked])))
    out["exact_log_prob_of_samples"] = float(np.mean(np.asarray(dataset.log_prob(x))))
  return out


HELD_OUT_FOR_FD = 2000


def feature_distances(run, clf, samples, unguided, classes, dataset) -> dict:
  """Frechet distances, in the classifier's last hidden layer at the smallest sampling time,
  from held-out examples of the asked classes (up to :data:`HELD_OUT_FOR_FD`) to the guided
  samples (``classifier_fd``) and to the unguided draws of the same keys
  (``classifier_fd_unguided``); ``{}`` where the held-out data have no labels.

  Agreement alone can praise noise that the guidance pushed across the classifier's decision
  boundary; such samples are far from the data in the features the classifier computes. Both
  distances are biased upwards by ``O(features / samples)``, so they compare with each other
  (same number of samples), not with runs of another size.
  """
  if dataset.num_classes is None:
    return {}
  labels = np.asarray(dataset.held_out_labels(HELD_OUT_FOR_FD, run.experiment.seed))
  held_out = dataset.held_out_data(HELD_OUT_FOR_FD, run.experiment.seed)
  keep = np.isin(labels, classes)
  if keep.sum() < 2:
    return {}
  feature_fn = jax.jit(clf.feature_fn)

  def features(x):
    x = jnp.asarray(np.reshape(x, (-1,) + run.data_shape), jnp.float32)
    return np.asarray(feature_fn(run.scaler(x), jnp.full((len(x),), run.sde.sampling_eps)))

  reference = features(held_out[keep])
  return {"classifier_fd": metrics.frechet_distance(features(samples), reference),
          "classifier_fd_unguided": metrics.frechet_distance(features(unguided), reference),
          "classifier_fd_held_out_examples": int(keep.sum())}


def _class_name(dataset, k) -> str:
  """``"class k"``, with the data set's name for it where it has names (Fashion-MNIST's)."""
  names = getattr(dataset, "class_names", None)
  return f"{k}: {names[k]}" if names and 0 <= k < len(names) else f"class {k}"


def _figure(run, dataset, samples, classes, scale, tag):
  path = os.path.join(run.workdir, "figures", f"{tag}.png")
  k, n = samples.shape[:2]
  title = f"classes {classes.tolist()} (one per row), scale {scale:g}, step {run.step}"
  if dataset.kind == "image":
    return viz.plot_image_grid(samples.reshape((-1,) + samples.shape[2:]), path, nrow=n,
                               title=title, row_labels=[_class_name(dataset, k) for k in classes])
  if samples.shape[-1] != 2:
    return None
  data = dataset.held_out(2000, run.experiment.seed)
  return viz.plot_conditional_samples(samples.reshape(-1, 2), np.repeat(classes, n), data, path,
                                      title=f"class-conditional samples, scale {scale:g}, "
                                            f"step {run.step}")
