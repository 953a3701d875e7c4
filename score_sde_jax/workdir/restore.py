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
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      result = attempt(step)
    except checkpoint.CheckpointDamaged as e:
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
    return checkpoint.restore(manager, step, target)

  state, step = newest_good(manager, attempt, move_damaged=move_damaged)
  return state, (step or 0)
