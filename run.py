"""Command line: python run.py --config configs/<file>.py --workdir <dir> --mode train.

Any config field can be overridden: --config.training.n_iters=2000.
"""

import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from score_sde_jax import build, loop
from score_sde_jax.data import DataError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics, figures and samples.")
flags.DEFINE_enum("mode", "train", ["train", "sample", "eval", "info"], "What to run.")
flags.mark_flags_as_required(["config"])

MODES = {"train": loop.train_and_evaluate, "sample": loop.sample, "eval": loop.evaluate,
         "info": loop.info}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file it writes at INFO
  try:
    if FLAGS.mode != "info" and not FLAGS.workdir:
      raise build.ConfigError(f"--workdir: required for --mode {FLAGS.mode}")
    MODES[FLAGS.mode](FLAGS.config, FLAGS.workdir)
  except (build.ConfigError, DataError, loop.TrainingDiverged) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
