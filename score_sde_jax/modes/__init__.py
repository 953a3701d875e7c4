"""What ``run.py --mode <mode>`` runs: one module per job, each ``fn(experiment, workdir, *,
stop=None)`` taking the :class:`~score_sde_jax.experiment.Experiment` that
:func:`score_sde_jax.build.experiment` made, and the parts of it each mode needs."""

from __future__ import annotations

import dataclasses
from typing import Callable

from score_sde_jax import build
from score_sde_jax.experiment import Experiment
from score_sde_jax.modes.conditional import conditional
from score_sde_jax.modes.evaluate import evaluate
from score_sde_jax.modes.info import info
from score_sde_jax.modes.inpaint import inpaint
from score_sde_jax.modes.loop import StopRequest, TrainingDiverged, TrainingInterrupted
from score_sde_jax.modes.sample import sample
from score_sde_jax.modes.train import train_and_evaluate
from score_sde_jax.modes.train_classifier import train_classifier


@dataclasses.dataclass(frozen=True)
class Mode:
  """A mode: its function and what it needs of the experiment and the command line."""

  run: Callable
  scope: str = "run"          # "network": the score model alone (build.experiment's scope)
  classifier: bool = False    # the classifier section
  inpaint: bool = False       # the inpaint section
  workdir: bool = True        # needs --workdir
  trains: bool = False        # a loop that Ctrl-C stops between two calls
  writes_to: Callable = lambda exp, workdir: workdir   # where it writes (its checkpoints)


MODES = {
    "train": Mode(train_and_evaluate, trains=True),
    "sample": Mode(sample),
    "eval": Mode(evaluate),
    "info": Mode(info, scope="network", workdir=False),
    "inpaint": Mode(inpaint, inpaint=True),
    "train_classifier": Mode(train_classifier, classifier=True, trains=True,
                             writes_to=lambda exp, workdir: exp.classifier.directory(workdir)),
    "conditional": Mode(conditional, classifier=True),
}



def run(name: str, config, workdir: str | None = None, *, stop: StopRequest | None = None):
  """Runs mode ``name`` as ``run.py --mode <name>`` does, from a notebook or a script: ``config``
  (a config, or an :class:`~score_sde_jax.experiment.Experiment` with the parts the mode needs)
  is built here; returns what the mode returns (a train state, samples and their result, ...)."""
  if name not in MODES:
    raise ValueError(f"mode={name!r}: expected one of {sorted(MODES)}")
  mode = MODES[name]
  if not isinstance(config, Experiment):
    config = build.experiment(config, scope=mode.scope, classifier=mode.classifier,
                              inpaint=mode.inpaint)
  return mode.run(config, workdir, stop=stop)


__all__ = ["MODES", "Mode", "run", "StopRequest", "TrainingDiverged", "TrainingInterrupted",
           "conditional", "evaluate", "info", "inpaint", "sample", "train_and_evaluate",
           "train_classifier"]
