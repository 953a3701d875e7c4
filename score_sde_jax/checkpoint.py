"""Orbax checkpoint helpers: one ``CheckpointManager`` per workdir.

Each checkpoint step holds two items: ``state`` (the train-state pytree) and
``config`` (the run's config as JSON, to refuse resuming under an
incompatible config). Orbax writes a step to a temporary folder and renames it
when complete, so a run killed mid-save leaves the previous steps intact and
``latest_step`` never returns a partial one.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


def make_manager(directory: str, *, max_to_keep: int = 3,
                 keep_period: int | None = None) -> ocp.CheckpointManager:
  """Manager keeping the newest ``max_to_keep`` steps plus every multiple of ``keep_period``."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, keep_period=keep_period,
                                         create=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(manager: ocp.CheckpointManager, step: int, state, config_dict: dict,
         *, wait: bool = False) -> None:
  """Saves ``state`` and ``config_dict`` under ``step`` (asynchronously unless ``wait``)."""
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             config=ocp.args.JsonSave(config_dict)))
  if wait:
    manager.wait_until_finished()


def abstract_like(state, sharding=None):
  """Shape/dtype (and sharding) description of ``state``, the restore target."""
  def leaf(x):
    return jax.ShapeDtypeStruct(x.shape, x.dtype,
                                sharding=sharding if sharding is not None else getattr(x, "sharding", None))
  return jax.tree.map(leaf, state)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state):
  """Restores the state saved at ``step`` into the structure of ``abstract_state``."""
  out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
  return out.state


class IncompatibleCheckpoint(ValueError):
  """A checkpoint was written under settings that the current run cannot continue from."""


def check_compatible(saved_view: dict, current_view: dict, where: str) -> None:
  """Refuses to continue when the two views (``{config path: value}``) differ, naming the first
  field that does."""
  for path in sorted(set(saved_view) | set(current_view)):
    saved, current = saved_view.get(path), current_view.get(path)
    if saved != current:
      raise IncompatibleCheckpoint(
          f"config.{path}={current!r}: the checkpoint in {where} was written with "
          f"{path}={saved!r}; use that value or a new workdir")


def read_config(manager: ocp.CheckpointManager, step: int) -> dict:
  """The config dict saved with ``step``."""
  out = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  return out.config
