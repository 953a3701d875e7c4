"""Workdirs: where a run lives, and a trained (or converted) one used from Python.

A workdir holds ``checkpoints/`` (orbax; each step saves the train state and the run's config),
``config.json``, ``metrics.jsonl``, ``tensorboard/``, ``samples/``, ``eval/`` and ``figures/``
(a classifier's folder, ``<workdir>/classifier`` by default, the same for the classifier).
"""

from score_sde_jax.workdir.folders import (LOCK_FILE, WorkdirError, WorkdirLocked, check_workdir,
                                           check_writable, checkpoints, lock, warn, write_json)
from score_sde_jax.workdir.restore import (classifier_view, newest_good, restore_newest,
                                           restore_target, score_model_view)
from score_sde_jax.workdir.trained import (TrainedClassifier, TrainedRun, load_classifier,
                                           load_workdir)

__all__ = ["LOCK_FILE", "TrainedClassifier", "TrainedRun", "WorkdirError", "WorkdirLocked",
           "check_workdir", "check_writable", "checkpoints", "classifier_view", "score_model_view", "load_classifier", "load_workdir",
           "lock", "newest_good", "restore_newest", "restore_target", "warn", "write_json"]
