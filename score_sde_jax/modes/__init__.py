"""What ``run.py --mode <mode>`` runs: one module per job, each ``fn(experiment, workdir, *,
stop=None)`` taking the :class:`~score_sde_jax.experiment.Experiment` that
:func:`score_sde_jax.build.experiment` made, and the parts of it each mode needs.

:data:`MODES` says what each mode needs without importing it (``run.py`` checks its flags and
workdir first); a mode's module is imported when it runs. :func:`run` runs one from Python; the
functions themselves are in their modules (``modes.sample.sample``, ``modes.train.
train_and_evaluate``, ...).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

from score_sde_jax import lazy


@dataclasses.dataclass(frozen=True)
class Mode:
  """A mode: its function and what it needs of the experiment and the command line."""

  function: str               # "module:function" under score_sde_jax.modes, imported when run
  scope: str = "run"          # "network": the score model alone (build.experiment's scope)
  classifier: bool = False    # the classifier section
  inpaint: bool = False       # the inpaint section
  workdir: bool = True        # needs --workdir
  trains: bool = False        # a loop that Ctrl-C stops between two calls
  writes_to: Callable = lambda exp, workdir: workdir   # where it writes (its checkpoints)

  @property
  def run(self) -> Callable:
    """The mode's function (its module, with JAX and the rest, is imported here)."""
    module, name = self.function.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


MODES = {
    "train": Mode("train:train_and_evaluate", trains=True),
    "sample": Mode("sample:sample"),
    "eval": Mode("evaluate:evaluate"),
    "info": Mode("info:info", scope="network", workdir=False),
    "fid_stats": Mode("fid_stats:fid_stats", workdir=False),
    "inpaint": Mode("inpaint:inpaint", inpaint=True),
    "train_classifier": Mode("train_classifier:train_classifier", classifier=True, trains=True,
                             writes_to=lambda exp, workdir: exp.classifier.directory(workdir)),
    "conditional": Mode("conditional:conditional", classifier=True),
}


def run(name: str, config, workdir: str | None = None, *, stop=None):
  """Runs mode ``name`` as ``run.py --mode <name>`` does, from a notebook or a script: ``config``
  (a config, or an :class:`~score_sde_jax.experiment.Experiment` with the parts the mode needs)
  is built here; returns what the mode returns (a train state, samples and their result, ...)."""
  if name not in MODES:
    raise ValueError(f"mode={name!r}: expected one of {sorted(MODES)}")
  from score_sde_jax import build
  from score_sde_jax.experiment import Experiment
  mode = MODES[name]
  if not isinstance(config, Experiment):
    config = build.experiment(config, scope=mode.scope, classifier=mode.classifier,
                              inpaint=mode.inpaint)
  return mode.run(config, workdir, stop=stop)


# The training loop's stop request and errors, and the modes' modules, on first use.
__getattr__ = lazy.module_getattr(__name__, {name: "loop" for name in (
    "StopRequest", "TrainingDiverged", "TrainingInterrupted")})


__all__ = ["MODES", "Mode", "run", "StopRequest", "TrainingDiverged", "TrainingInterrupted"]
