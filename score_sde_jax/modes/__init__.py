"""What ``run.py --mode <mode>`` runs: one module per job, each ``fn(config, workdir)``."""

from score_sde_jax.modes.conditional import conditional
from score_sde_jax.modes.evaluate import evaluate
from score_sde_jax.modes.info import info
from score_sde_jax.modes.inpaint import inpaint
from score_sde_jax.modes.sample import sample
from score_sde_jax.modes.train import (TrainingDiverged, TrainingInterrupted, request_stop,
                                       train_and_evaluate)
from score_sde_jax.modes.train_classifier import train_classifier

MODES = {"train": train_and_evaluate, "sample": sample, "eval": evaluate, "info": info,
         "inpaint": inpaint, "train_classifier": train_classifier, "conditional": conditional}

__all__ = ["MODES", "TrainingDiverged", "TrainingInterrupted", "conditional", "evaluate", "info",
           "inpaint", "request_stop", "sample", "train_and_evaluate", "train_classifier"]
