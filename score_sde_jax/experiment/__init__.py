"""The experiment a config describes, as plain frozen objects: what the modes, the figures and a
trained run take (:class:`~score_sde_jax.workdir.TrainedRun`).

:func:`score_sde_jax.build.experiment` makes one from a config, after checking it; nothing below
it reads a config. The parts are small dataclasses with the config's field names; each builds the
library objects it describes (an optax optimizer, a loss, a score function, a sampler). Two runs
that differ only in a sampler's settings have equal ``model`` parts, and so on.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax

from score_sde_jax import parallel, train
from score_sde_jax.experiment.errors import ConfigError, PartMissing
from score_sde_jax.experiment.model import Data, ScoreModel
from score_sde_jax.experiment.sampling import Sampling
from score_sde_jax.experiment.tasks import Classifier, Inpaint
from score_sde_jax.experiment.training import Evaluation, Objective, Optimizer, Training

__all__ = ["Classifier", "ConfigError", "Data", "Evaluation", "Experiment", "Inpaint", "Objective",
           "Optimizer", "PartMissing", "Sampling", "ScoreModel", "Training", "Views"]


@dataclasses.dataclass(frozen=True)
class Views:
  """What checkpoints must agree with, as ``{config path: value}`` (``build.compat``): the score
  model (``model``), its optimizer state's structure (``optimizer``), the training data
  (``data``), and a classifier's data, network and optimizer."""

  model: Mapping = dataclasses.field(default_factory=dict)
  optimizer: Mapping = dataclasses.field(default_factory=dict)
  data: Mapping = dataclasses.field(default_factory=dict)
  classifier_data: Mapping = dataclasses.field(default_factory=dict)
  classifier: Mapping = dataclasses.field(default_factory=dict)
  classifier_optimizer: Mapping = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, eq=False)
class Experiment:
  """Everything a run is: the score model, its data, training, sampling and evaluation settings,
  and for the modes that use them the inpainting and classifier settings.

  ``record`` is the config as a plain dict: written with every checkpoint and to
  ``config.json`` (a later run is compared with it, ``views``). A part the config does not
  describe (a converted checkpoint's partial config) is ``None``; :meth:`part` names why.
  """

  model: ScoreModel
  data: Data
  seed: int
  optimizer: Optimizer | None = None          # the score model's (the state's structure)
  training: Training | None = None
  sampling: Sampling | None = None
  eval: Evaluation | None = None
  inpaint: Inpaint | None = None
  classifier: Classifier | None = None
  record: Mapping = dataclasses.field(default_factory=dict, repr=False)
  views: Views = dataclasses.field(default_factory=Views)
  missing: Mapping = dataclasses.field(default_factory=dict)   # part -> why it is not described

  @property
  def sde(self):
    return self.model.sde

  def part(self, name: str):
    """The part ``name`` (``training``, ``sampling``, ``eval``, ``inpaint``, ``classifier``),
    or :class:`PartMissing` saying which config field it lacks."""
    value = getattr(self, name)
    if value is None:
      raise PartMissing(self.missing.get(name) or f"config.{name}: missing (required here)")
    return value

  def score_fn(self, params, *, flow: bool | None = None):
    """The score of ``params`` that the sampler uses (``flow=None``: the flow's when the sampler
    solves the probability-flow ODE)."""
    if flow is None:
      flow = self.part("sampling").uses_flow
    return self.model.score_fn(params, flow=flow)

  def loss_fn(self, *, train_mode: bool):
    """The training objective of the score model: ``loss_fn(key, params, batch) -> scalar``."""
    return self.part("training").objective.loss_fn(self.model, train_mode=train_mode)

  def init_state(self, mesh=None, *, key=None):
    """A fresh train state from ``key``, by default ``PRNGKey(seed)``."""
    return self.model.init_state(jax.random.PRNGKey(self.seed) if key is None else key,
                                 self.part("optimizer").make(), mesh)

  def sampling_fn(self, batch_size: int, mesh=None, sampling_: Sampling | None = None):
    """``fn(key, score_fn) -> SampleResult`` of batches of ``batch_size``, in data space."""
    chosen = sampling_ or self.part("sampling")
    parallel.check_mesh(batch_size, mesh, "batch_size")
    return chosen.sampling_fn(self.sde, (batch_size,) + self.data.shape, self.data.inverse_scaler,
                              mesh)

  def steps_loop(self) -> str:
    """``make_train_step``'s ``loop`` on this process's backend (:func:`train.steps_loop`)."""
    return train.steps_loop(jax.default_backend(), image_data=self.data.is_image)
