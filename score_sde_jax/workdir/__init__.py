"""Workdirs: where a run lives, and a trained (or converted) one used from Python.

A workdir holds ``checkpoints/`` (orbax; each step saves the train state and the run's config),
``config.json``, ``metrics.jsonl``, ``tensorboard/``, ``samples/``, ``eval/`` and ``figures/``
(a classifier's folder, ``<workdir>/classifier`` by default, the same for the classifier).
"""

from score_sde_jax import lazy

# public name -> its module (imported on first use: the folder checks that run.py makes before
# anything else need none of JAX)
_NAMES = {name: module for module, names in {
    "folders": ("LOCK_FILE", "WorkdirError", "WorkdirLocked", "check_workdir", "check_writable",
                "checkpoints", "lock", "save_npz", "warn", "write_json"),
    "restore": ("classifier_view", "newest_good", "restore_newest", "restore_target",
                "score_model_view"),
    "trained": ("TrainedClassifier", "TrainedRun", "load_classifier", "load_workdir"),
}.items() for name in names}

__getattr__ = lazy.module_getattr(__name__, _NAMES)


__all__ = ["LOCK_FILE", "TrainedClassifier", "TrainedRun", "WorkdirError", "WorkdirLocked",
           "check_workdir", "check_writable", "checkpoints", "classifier_view", "score_model_view", "load_classifier", "load_workdir",
           "lock", "newest_good", "restore_newest", "restore_target", "save_npz", "warn",
           "write_json"]
