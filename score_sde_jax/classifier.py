"""Noise-conditional classifiers ``p_t(y | x_t)``: their input label, loss and ``classifier_fn``.

A classifier network (``models.classifier``) sees the perturbed ``x_t`` and a noise label; it is
trained by cross-entropy on forward-diffused data at ``t ~ U(eps, T)`` (the same perturbation as
denoising score matching), and used through ``classifier_fn(x, t) -> logits``, which
:func:`score_sde_jax.controllable.guided_score` turns into a conditional score.

The noise label is ``log(std(t) / mean_coeff(t))``, minus half the log signal-to-noise ratio of
the time-``t`` marginal: the one number that says how noisy ``x_t`` is under any SDE (for VE it
is ``log sigma(t)``, the original's ``log(sigmas)``), so one network definition serves VE, VP
and sub-VP.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from score_sde_jax.losses import TIME_EPS
from score_sde_jax.sde import SDE, batch_mul, batch_times


def noise_label(sde: SDE, t: jax.Array) -> jax.Array:
  """``log(std(t) / mean_coeff(t))`` ``(B,)`` for ``t`` ``(B,)``."""
  mean, std = sde.marginal_prob(jnp.ones((t.shape[0], 1), t.dtype), t)
  return jnp.log(std) - jnp.log(mean[:, 0])


@dataclasses.dataclass(frozen=True)
class NetworkClassifier:
  """``(params, x, t) -> logits`` of a classifier network; hashable by value (as ``NetworkScore``)."""

  sde: SDE
  model: Any

  def __call__(self, params, x, t):
    t = batch_times(t, x)
    return self.model.apply({"params": params}, x, noise_label(self.sde, t), train=False)


def get_classifier_fn(sde: SDE, model, params):
  """``classifier_fn(x, t) -> logits (B, K)``: a ``jax.tree_util.Partial`` whose leaves are the
  parameters (new parameters reuse compiled samplers)."""
  return jax.tree_util.Partial(NetworkClassifier(sde, model), params)


@dataclasses.dataclass(frozen=True)
class NetworkFeatures:
  """``(params, x, t) -> (B, F)``: the classifier's last hidden layer (what its output layer
  reads; the networks ``sow`` it as ``intermediates/features``)."""

  sde: SDE
  model: Any

  def __call__(self, params, x, t):
    t = batch_times(t, x)
    _, state = self.model.apply({"params": params}, x, noise_label(self.sde, t), train=False,
                                mutable=["intermediates"])
    (features,) = state["intermediates"]["features"]
    return features


def get_feature_fn(sde: SDE, model, params):
  """``feature_fn(x, t) -> (B, F)``: the classifier's features of ``x`` at noise level ``t``,
  for sample-quality metrics in the classifier's feature space (FID-style
  :func:`score_sde_jax.metrics.frechet_distance`); a ``Partial`` as :func:`get_classifier_fn`."""
  return jax.tree_util.Partial(NetworkFeatures(sde, model), params)


def classifier_losses(sde: SDE, classifier_fn, x0, labels, t, z):
  """Per-example cross-entropy of ``classifier_fn`` on ``x_t = mean(x0, t) + std(t) z``, and
  whether its most likely class is the label: ``(loss (B,), correct (B,))``."""
  mean, std = sde.marginal_prob(x0, t)
  logits = classifier_fn(mean + batch_mul(std, z), t)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return loss, jnp.argmax(logits, axis=-1) == labels


def get_classifier_loss_fn(sde: SDE, model, *, eps: float = TIME_EPS, with_accuracy: bool = False):
  """``loss_fn(key, params, batch) -> scalar`` for ``make_train_step``: the mean cross-entropy
  at ``t ~ U(eps, T)``, ``z ~ N(0, I)``; ``batch = (x0, labels)``, ``labels`` ``(B,)`` int.
  ``with_accuracy=True``: ``-> (loss, {"accuracy": share of correct argmax})`` (``has_aux``)."""

  def loss_fn(key, params, batch):
    x0, labels = batch
    key_t, key_z = jax.random.split(key)
    t = jax.random.uniform(key_t, (x0.shape[0],), x0.dtype, minval=eps, maxval=sde.T)
    z = jax.random.normal(key_z, x0.shape, x0.dtype)
    fn = get_classifier_fn(sde, model, params)
    loss, correct = classifier_losses(sde, fn, x0, labels, t, z)
    if with_accuracy:
      return jnp.mean(loss), {"accuracy": jnp.mean(correct.astype(x0.dtype))}
    return jnp.mean(loss)

  return loss_fn
