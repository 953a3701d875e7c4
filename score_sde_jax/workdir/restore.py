"""Restoring the newest readable and compatible checkpoint of a folder."""

from __future__ import annotations

import os

import jax

from score_sde_jax import checkpoint, parallel
from score_sde_jax.build import compat
from score_sde_jax.workdir.folders import WorkdirError, warn


def restore_target(abstract, mesh):
  """``abstract`` placed on ``mesh`` (replicated), or on the first device."""
  sharding = (parallel.replicated(mesh) if mesh is not None
              else jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  return checkpoint.abstract_like(abstract, sharding)


def _move_aside(folder: str) -> str:
  """Renames a damaged step folder to ``<step>.damaged`` (orbax ignores it; nothing is deleted)."""
  target, n = folder + ".damaged", 1
  while os.path.exists(target):
    target, n = f"{folder}.damaged.{n}", n + 1
  os.rename(folder, target)
  return target


def newest_good(manager, attempt, *, move_damaged: bool = False):
  """``(attempt(step), step)`` for the newest step whose ``attempt`` does not raise
  :class:`~score_sde_jax.checkpoint.CheckpointDamaged`, or ``(None, None)`` without checkpoints.

  Each damaged step costs one warning line naming its folder and the reason; the previous step
  is tried next. ``move_damaged`` (training, which will write those step numbers again) renames
  the damaged folders newer than the step used to ``<step>.damaged``; nothing is deleted. When
  every step is damaged it is a :class:`WorkdirError`: starting afresh is for the user to decide.
  """
  damaged = []
  steps, retries = sorted(manager.all_steps(), reverse=True), 0
  while steps:
    step = steps.pop(0)
    try:
      result = attempt(step)
    except checkpoint.CheckpointDamaged as e:
      if not move_damaged and retries < 5 and _vanished(manager, step, e.step_dir):
        # A trainer rotated (or replaced) this step while it was read: not damaged; read the
        # newest again.
        retries += 1
        steps = sorted(manager.all_steps(), reverse=True)
        continue
      damaged.append(e)
      warn(f"{e}; trying the previous step")
      continue
    if damaged and move_damaged:
      if parallel.is_main_process():
        for e in damaged:
          warn(f"{e.step_dir} moved to {_move_aside(e.step_dir)} (step {step} is resumed, and "
               f"training writes the later steps again)")
      parallel.sync("damaged_checkpoints_moved")
      manager.reload()
    return result, int(step)
  if damaged:
    raise WorkdirError(
        f"no readable checkpoint in {manager.directory}: all {len(damaged)} step folders are "
        f"damaged (the newest: {damaged[0].reason}); move them elsewhere to start afresh")
  return None, None


def _vanished(manager, step, step_dir) -> bool:
  """Whether ``step`` is gone from the folder now (a reader racing a trainer's rotation)."""
  manager.reload()
  return step not in manager.all_steps() or not os.path.isdir(step_dir)


def check_step_matches(state, step, directory) -> None:
  """The step inside a restored state must be its folder's name (a folder renamed by hand
  600 -> 700 was resumed as step 700 with the state of step 600). A state of step 0 (a fresh
  state saved under a step of one's choosing, as tests and tools do) is taken as it is."""
  inner = getattr(state, "step", None)
  if inner is not None and int(jax.device_get(inner)) not in (0, int(step)):
    folder = os.path.join(directory, str(step))
    raise WorkdirError(f"{folder}: the folder is named step {step} but holds the state of step "
                       f"{int(jax.device_get(inner))} (renamed by hand?); rename it back to "
                       f"{int(jax.device_get(inner))} or move it out of {directory}")


def saved_views(manager, step):
  """The compatibility views of the config saved with ``step``."""
  return compat.views(checkpoint.read_config(manager, step))


def score_model_view(views) -> dict:
  """What resumed training of a score model must agree with: the model and the structure of its
  optimizer's state."""
  return {**views.model, **views.optimizer}


def classifier_view(views) -> dict:
  """What resumed training of a classifier must agree with."""
  return {**views.classifier, **views.classifier_optimizer}


def restore_newest(manager, abstract, mesh=None, *, experiment, select=score_model_view,
                   move_damaged: bool = False, hints: dict | None = None):
  """``(state, step)`` of the newest readable checkpoint, or ``(None, 0)`` without one.

  A checkpoint written under settings that ``experiment`` cannot continue from is refused with
  :class:`score_sde_jax.checkpoint.IncompatibleCheckpoint` naming the field: ``select`` picks the
  views that must agree (:class:`~score_sde_jax.experiment.Views` -> ``{path: value}``) from
  the saved config's and the experiment's. A damaged step falls back to the previous one
  (:func:`newest_good`).
  """
  target = restore_target(abstract, mesh)
  current = select(experiment.views)

  def attempt(step):
    checkpoint.check_compatible(select(saved_views(manager, step)), current, manager.directory,
                                hints)
    state = checkpoint.restore(manager, step, target)
    check_step_matches(state, step, str(manager.directory))
    return state

  state, step = newest_good(manager, attempt, move_damaged=move_damaged)
  return state, (step or 0)
