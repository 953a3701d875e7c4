"""Command line: python run.py --config configs/<file>.py --workdir <dir> --mode train.

Any config field can be overridden: --config.training.n_iters=2000.

Several processes (hosts) run the same command with --coordinator_address,
--num_processes and --process_id (or --distributed on a TPU pod or under
SLURM / Open MPI, where JAX detects them); see the README's "Scaling out".
"""

import os
import signal
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from score_sde_jax import cli, compilation, launch
from score_sde_jax import workdir as workdir_lib
from score_sde_jax.modes import MODES

# Before JAX's backends start (README, "Speed"). JAX, Flax and the modes are imported in main,
# after the flags and the workdir are checked: their mistakes are one line at once.
compilation.add_xla_cpu_flags()

# The errors reported in one line (exit code 2), by the module that defines them. A module that
# was never imported cannot have raised its error, so nothing is imported to look for it.
USER_ERRORS = {
    "score_sde_jax.experiment.errors": ("ConfigError",),
    "score_sde_jax.data.errors": ("DataError",),
    "score_sde_jax.workdir.folders": ("WorkdirError",),
    "score_sde_jax.checkpoint": ("IncompatibleCheckpoint", "NotEnoughSpace", "CheckpointWriteFailed"),
    "score_sde_jax.modes.loop": ("TrainingDiverged",),
    "score_sde_jax.launch": ("DistributedError", "CpuDevicesError", "BackendError"),
    "score_sde_jax.fid": ("StatisticsError",),
    "score_sde_jax.inception": ("InceptionWeightsError",),
    "score_sde_jax.sampling.flow": ("SolveError",),
    "score_sde_jax.sampling.common": ("NonFiniteSamples",),
}


def is_user_error(e: BaseException) -> bool:
  return any(isinstance(e, getattr(sys.modules[module], name))
             for module, names in USER_ERRORS.items() if module in sys.modules for name in names)


def is_interrupt(e: BaseException) -> bool:
  loop = sys.modules.get("score_sde_jax.modes.loop")
  return isinstance(e, KeyboardInterrupt) or (
      loop is not None and isinstance(e, loop.TrainingInterrupted))


FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics, figures and samples.")
flags.DEFINE_enum("mode", "train", list(MODES), "What to run.")
flags.DEFINE_string("coordinator_address", None,
                    "host:port of process 0 for a multi-process run (jax.distributed).")
flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.")
flags.DEFINE_bool("distributed", False,
                  "Initialise jax.distributed from the cluster's environment (TPU pod, SLURM, "
                  "Open MPI, JAX_COORDINATOR_ADDRESS) without the three flags above.")
flags.DEFINE_integer("distributed_timeout", 300,
                     "Seconds to wait for the coordinator and the other processes.")
flags.DEFINE_bool("compilation_cache", True,
                  "Keep compiled programs in --compilation_cache_dir, so that a later run of the "
                  "same programs loads them instead of compiling (--nocompilation_cache: off).")
flags.DEFINE_string("cpu_devices", None,
                    "JAX devices the CPU is split into: a count, or 'auto' for one per core "
                    "(default: JAX's, one unless XLA_FLAGS says otherwise). The batch is split "
                    "over them (one shard per core), which is faster on a CPU for the smaller "
                    "networks; batch sizes must divide evenly. Other backends: no effect.")
flags.DEFINE_string("compilation_cache_dir", None,
                    "Folder of the compilation cache (default: $SCORE_SDE_JAX_COMPILATION_CACHE, "
                    "else $XDG_CACHE_HOME/score_sde_jax/xla, else ~/.cache/score_sde_jax/xla).")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file it writes at INFO
  mode = MODES[FLAGS.mode]
  experiment = None
  try:
    if mode.workdir:
      if not FLAGS.workdir:
        raise workdir_lib.WorkdirError(f"--workdir: required for --mode {FLAGS.mode}")
      workdir_lib.check_writable(workdir_lib.check_workdir(FLAGS.workdir))
    distributed = FLAGS.distributed or any(v is not None for v in (
        FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id))
    if distributed:
      launch.check_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                               timeout=FLAGS.distributed_timeout)
    if FLAGS.cpu_devices is not None:
      launch.cpu_device_count(FLAGS.cpu_devices, "--cpu_devices")
    from score_sde_jax import build, parallel   # JAX, from here on
    from score_sde_jax.modes.loop import StopRequest
    stop = StopRequest()
    if FLAGS.cpu_devices is not None:
      parallel.split_cpu(FLAGS.cpu_devices, "--cpu_devices")   # before JAX's backends start
    if FLAGS.compilation_cache and mode.workdir:
      compilation.enable_compilation_cache(FLAGS.compilation_cache_dir)
    # The config is read here, once: a bad one fails before anything waits or compiles.
    experiment = build.experiment(FLAGS.config, scope=mode.scope, classifier=mode.classifier,
                                  inpaint=mode.inpaint)
    if distributed:
      # Before anything else touches JAX's backends.
      parallel.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                          timeout=FLAGS.distributed_timeout,
                          log=lambda m: print(m, file=sys.stderr, flush=True),
                          names=dict(coordinator_address="--coordinator_address",
                                     num_processes="--num_processes", process_id="--process_id",
                                     timeout="--distributed_timeout"))
    launch.check_backend()   # JAX_PLATFORMS naming a platform JAX cannot start: one line
    if mode.trains:
      signal.signal(signal.SIGINT, lambda signum, frame: _stop_training(stop))
    # SIGTERM (schedulers, docker stop, kill) as Ctrl-C: training stops between two calls with
    # its writes finished; other modes stop with the same line. Exit status 143, as a kill's.
    signal.signal(signal.SIGTERM, lambda signum, frame: _terminate(stop, mode.trains))
    mode.run(experiment, FLAGS.workdir, stop=stop)
  except BaseException as e:  # noqa: BLE001 (what is not reported in one line raises)
    if is_user_error(e):
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    if is_interrupt(e):
      folder = mode.writes_to(experiment, FLAGS.workdir) if experiment else FLAGS.workdir
      line = interrupted_line(FLAGS.mode, mode.trains, folder)
      if _TERMINATED:
        line = "terminated (SIGTERM); " + line[len("interrupted: "):]
      print(line, file=sys.stderr)
      sys.exit(143 if _TERMINATED else 130)
    if isinstance(e, Exception):
      cli.exit_on_os_error(e)   # file-system errors: one line; anything else is a bug to see
    raise


_TERMINATED = []   # set by the SIGTERM handler: the interrupted line and exit status say so


def _terminate(stop, trains):
  """SIGTERM: the first stops training between two calls, as Ctrl-C; in the other modes, and
  a second SIGTERM, it interrupts at once (KeyboardInterrupt, the Ctrl-C path)."""
  first = not _TERMINATED
  _TERMINATED.append(True)
  if trains and first and not stop.is_set():
    stop.set()
    return
  raise KeyboardInterrupt


def _stop_training(stop):
  """The first Ctrl-C stops training between two calls (pending checkpoint writes finish); a
  second one interrupts at once."""
  signal.signal(signal.SIGINT, signal.default_int_handler)
  stop.set()


def interrupted_line(mode_name: str, trains: bool, workdir) -> str:
  """The Ctrl-C line, in the mode's terms: where a rerun of a training mode resumes from; for the
  other modes, that their results were not written and the checkpoints are untouched."""
  folder = os.path.join(workdir or "", "checkpoints")
  if mode_name == "eval":
    return (f"interrupted: --mode eval stopped; the checkpoints in {folder} are untouched and "
            f"the same command goes on where it stopped (the checkpoints of eval.begin_ckpt.."
            f"end_ckpt already evaluated are skipped, the FID samples already drawn are read back)")
  if not trains:
    return (f"interrupted: --mode {mode_name} stopped before writing its results (they are "
            f"written when it completes); the checkpoints in {folder} are untouched: run the "
            f"same command again to start it over")
  step = workdir_lib.checkpoints(workdir).latest_step() if os.path.isdir(folder) else None
  if step is None:
    return f"interrupted: no checkpoint in {folder} yet"
  return (f"interrupted: the newest checkpoint is {os.path.join(folder, str(step))}; the same "
          f"command resumes from it")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)   # flag and config-file mistakes: one line
