"""Config -> experiment: the one reader of an ml_collections config.

:func:`experiment` checks a config and returns the frozen
:class:`~score_sde_jax.experiment.Experiment` that the modes, the figures and trained runs
take; nothing else reads a config (``run.py`` and the converter's command line hand theirs
here). Allowed values come from the library: each SDE, network, sampler and part checks its own
arguments (``score_sde_jax.checks``), and a failure becomes one :class:`ConfigError` naming the
config field, its value and what is allowed, before anything compiles.

A saved config (a checkpoint's, possibly written by an earlier version or by the paper's code)
is read with ``scope="network"``: the score model must be complete, the other parts are built
where the config describes them (:meth:`Experiment.part` names what a missing one lacks).
"""

from __future__ import annotations

import functools
from types import MappingProxyType

from score_sde_jax.build import compat
from score_sde_jax.build.compat import upgrade_saved_config
from score_sde_jax.build.data import IMAGE_DATASETS, TOY_DATASETS, dataset_key, get_data
from score_sde_jax.build.fields import ConfigError, check_finite, check_spec, get
from score_sde_jax.build.parts import (get_classifier, get_evaluation, get_inpaint, get_optimizer,
                                       get_score_model, get_training)
from score_sde_jax.build.sampling import get_sampling, get_sampling_fn
from score_sde_jax import checks
from score_sde_jax.experiment import Data, Experiment, ScoreModel

__all__ = ["ConfigError", "IMAGE_DATASETS", "TOY_DATASETS", "compat", "experiment",
           "get_sampling_fn", "score_model", "upgrade_saved_config"]

SCOPES = ("run", "network")


def _raise(error):
  raise error


def _plain_record(config) -> dict:
  return config.to_dict() if hasattr(config, "to_dict") else compat.upgrade_saved_config(config)


def score_model(config) -> ScoreModel:
  """The SDE and network of ``config`` with their parameterisation (what ``--mode info`` and the
  converter need), checked."""
  check_finite(_plain_record(config))
  return get_score_model(config)


def _check_data_kind(config, model: ScoreModel) -> None:
  key = dataset_key(config)
  is_images = key in IMAGE_DATASETS
  if is_images != model.is_image:
    raise ConfigError(f"config.model.name={get(config, 'model.name')!r}: data set "
                      f"{get(config, 'data.dataset')!r} is "
                      f"{'images' if is_images else 'vector data'}; the network takes "
                      f"{'images' if model.is_image else 'vectors'}")
  if not is_images and key != "gmm" and model.data_shape != (2,):
    raise ConfigError(f"config.data.dim={model.data_shape[0]}: dataset "
                      f"{get(config, 'data.dataset')!r} is 2-D")


def experiment(config, *, scope: str = "run", classifier: bool = False,
               inpaint: bool = False) -> Experiment:
  """The experiment ``config`` describes (a ConfigDict, or a saved config's dict).

  ``scope="run"``: every part a run uses is checked (training, sampling, evaluation; with
  ``classifier`` / ``inpaint`` those sections too). ``scope="network"``: only the score model
  must be complete; the other parts are built where the config describes them.
  """
  if scope not in SCOPES:
    raise ValueError(f"scope={scope!r}: expected one of {SCOPES}")
  record = _plain_record(config)
  if not hasattr(config, "to_dict"):
    config = record                      # a saved config, in today's field names
  model = score_model(config)
  parts, missing = {}, {}

  def part(name, build, required):
    try:
      parts[name] = build()
    except ConfigError as e:
      if required:
        raise
      missing[name] = str(e)

  run = scope == "run"
  part("optimizer", lambda: get_optimizer(config), run)
  if run:
    check_spec(config, {"seed": checks.SEED})
  part("training", lambda: get_training(config), run)
  part("eval", lambda: get_evaluation(config), run)
  if run:
    _check_data_kind(config, model)
    if parts["eval"].enable_sampling and not model.is_image:
      raise ConfigError(f"config.eval.enable_sampling=True: FID and KID are measured on images; "
                        f"data set {get(config, 'data.dataset')!r} is vector data (--mode sample "
                        f"reports its distances to the data)")
  part("sampling", lambda: get_sampling(config, model.sde), run)
  if inpaint:
    part("inpaint", lambda: get_inpaint(config, model.data_shape), True)
  if classifier:
    steps = parts["training"].n_jitted_steps if "training" in parts else 1
    part("classifier", lambda: get_classifier(config, model.data_shape, steps), True)
  try:
    data = get_data(config, model.data_shape)
  except ConfigError as e:
    if run:
      raise
    data = Data(name=str(get(config, "data.dataset", "")), shape=model.data_shape,
                centered=bool(get(config, "data.centered", False)),
                source=functools.partial(_raise, ConfigError(str(e))))
  return Experiment(model=model, data=data,
                    seed=get(config, "seed", 0), record=MappingProxyType(record),
                    views=compat.views(record), missing=MappingProxyType(missing), **parts)
