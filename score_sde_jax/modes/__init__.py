"""What ``run.py --mode <mode>`` runs: one module per job, each ``fn(config, workdir)``."""

from score_sde_jax.modes.evaluate import evaluate
from score_sde_jax.modes.info import info
from score_sde_jax.modes.inpaint import inpaint
from score_sde_jax.modes.sample import sample
from score_sde_jax.modes.train import TrainingDiverged, train_and_evaluate

MODES = {"train": train_and_evaluate, "sample": sample, "eval": evaluate, "info": info,
         "inpaint": inpaint}

__all__ = ["MODES", "TrainingDiverged", "evaluate", "info", "inpaint", "sample", "train_and_evaluate"]
