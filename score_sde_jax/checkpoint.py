"""Orbax checkpoint helpers: one ``CheckpointManager`` per workdir.

Each checkpoint step holds three items: ``state`` (the train-state pytree),
``config`` (the run's config as JSON, to refuse resuming under an
incompatible config) and ``checksums`` (two 32-bit sums of every array's
bits, computed on the device before the write). Orbax writes a step to a
temporary folder and renames it when complete, so a run killed mid-save
leaves the previous steps intact; but neither orbax nor tensorstore checks
the values it reads back (flipped bits in a data file restore silently), so
:func:`restore` verifies the checksums and any failure to read a step is one
:class:`CheckpointDamaged` naming the step folder. Steps written before the
checksums existed (or by other tools) restore without the check.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import shutil
import sys
import time
import traceback
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np


if TYPE_CHECKING:
  import orbax.checkpoint as ocp


def _ocp():
  """orbax.checkpoint, imported on first use: importing it adds a handler to the root logger, and
  importing this package changes no logger."""
  import orbax.checkpoint as ocp
  return ocp


class CheckpointDamaged(Exception):
  """A step folder cannot be read back: incomplete, unreadable, or its arrays do not match the
  checksums written with them. ``step_dir`` is the folder, ``reason`` one line."""

  def __init__(self, step_dir: str, reason: str):
    super().__init__(f"checkpoint {step_dir} is damaged: {reason}")
    self.step_dir, self.reason = step_dir, reason


class _DropTensorstoreTaskErrors(logging.Filter):
  """A damaged step fails several of orbax's read tasks at once; :func:`restore` reports the
  first as one line, and asyncio would log every other one (each a page of tensorstore spec)
  as "Task (or Future) exception was never retrieved" when it is collected."""

  def filter(self, record):
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
      text += str(record.exc_info[1])
    return not (text.startswith(("Task exception was never retrieved",
                                 "Future exception was never retrieved"))
                and "tensorstore" in text)


def _late_read_callback(unraisable) -> bool:
  """The same failure's other reads finish after orbax has closed its event loop; their
  completion callbacks each raise "Event loop is closed" as an unraisable exception (dozens of
  tracebacks for one damaged step)."""
  e, tb = unraisable.exc_value, unraisable.exc_traceback
  frames = traceback.extract_tb(tb) if tb is not None else []
  return (isinstance(e, RuntimeError) and str(e) == "Event loop is closed"
          and any(f.name == "call_soon_threadsafe" for f in frames))


# How long a failed read's other reads are given to finish before the hooks are taken off.
_LATE_READS_SECONDS = 0.5


@contextlib.contextmanager
def _quiet_failed_reads():
  """While orbax reads a step: the echoes of one failed read (asyncio's log records of the other
  failed tasks, and their late callbacks) are dropped; everything else goes where it went.
  Installed around each read and taken off after it, so importing this module changes no hook
  or logger. After a failed read, the other reads are given :data:`_LATE_READS_SECONDS` and
  the garbage collector runs (which logs never-retrieved tasks) before the hooks come off."""
  log_filter, previous = _DropTensorstoreTaskErrors(), sys.unraisablehook
  logger = logging.getLogger("asyncio")

  def hook(unraisable):
    if not _late_read_callback(unraisable):
      previous(unraisable)

  logger.addFilter(log_filter)
  sys.unraisablehook = hook
  failed = False
  try:
    yield
  except BaseException:
    failed = True
    raise
  finally:
    if failed:
      time.sleep(_LATE_READS_SECONDS)
      gc.collect()
    if sys.unraisablehook is hook:
      sys.unraisablehook = previous
    logger.removeFilter(log_filter)


class CheckpointWriteFailed(OSError):
  """A checkpoint write that failed in orbax's background threads (a full disk, ...)."""


def write_failed(manager, e: BaseException) -> CheckpointWriteFailed:
  """One line for a background write failure: its first line (the cause is in the chain as
  orbax re-raises it), and the newest complete checkpoint to resume from."""
  seen, cause = set(), e
  while cause is not None and id(cause) not in seen:   # the innermost message names the file
    seen.add(id(cause))
    if cause.__cause__ is None and cause.__context__ is None:
      break
    cause = cause.__cause__ or cause.__context__
  text = (str(cause) or type(cause).__name__).splitlines()[0]
  if len(text) > 400:
    text = text[:400] + " ..."
  try:
    manager.reload()
    newest = manager.latest_step()
  except Exception:  # noqa: BLE001 -- the folder itself may be what failed
    newest = None
  where = (f"the newest complete checkpoint is {step_dir(manager, newest)}; free the space (or "
           f"fix the folder) and run the same command again to resume from it"
           if newest is not None else f"no complete checkpoint in {manager.directory}")
  return CheckpointWriteFailed(f"writing a checkpoint to {manager.directory} failed: {text}; "
                               f"{where}")


class _DropBackgroundWriteErrors(logging.Filter):
  """orbax logs each failed background write task (a page of tensorstore errors each) before the
  failure reaches the trainer, which reports it in one line (:func:`write_failed`)."""

  def filter(self, record):
    return not (record.levelno >= logging.ERROR and (
        "raised an exception" in record.getMessage()
        or f"{os.sep}orbax{os.sep}" in (record.pathname or "")))


@contextlib.contextmanager
def quiet_failed_writes():
  """While a training loop writes checkpoints: the echoes of a failed background write
  (orbax's log records of its failed tasks, asyncio's late callbacks after its event loop
  closed) are dropped; the failure itself is raised once, as :class:`CheckpointWriteFailed`."""
  log_filter, previous = _DropBackgroundWriteErrors(), sys.unraisablehook
  loggers = [logging.getLogger("absl"), logging.getLogger("asyncio")]

  def hook(unraisable):
    if not _late_read_callback(unraisable):
      previous(unraisable)

  for logger in loggers:
    logger.addFilter(log_filter)
  sys.unraisablehook = hook
  try:
    yield
  finally:
    if sys.unraisablehook is hook:
      sys.unraisablehook = previous
    for logger in loggers:
      logger.removeFilter(log_filter)


class IncompatibleCheckpoint(ValueError):
  """A checkpoint was written under settings that the current run cannot continue from."""


def step_dir(manager: ocp.CheckpointManager, step: int) -> str:
  return os.path.join(str(manager.directory), str(step))


def _words(x):
  """The array's bits as uint32 words (any dtype; PRNG key arrays by their data)."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32).ravel()
  size = x.dtype.itemsize
  if size == 4:
    return jax.lax.bitcast_convert_type(x, jnp.uint32).ravel()
  if size == 8:
    return jax.lax.bitcast_convert_type(x, jnp.uint32).ravel()   # (..., 2) words
  unsigned = {1: jnp.uint8, 2: jnp.uint16}[size]
  return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32).ravel()


@jax.jit
def _sums(tree):
  """Per leaf ``[sum w_i, sum (i + 1) w_i]`` of its uint32 words, modulo 2^32 (Fletcher-like:
  any single-bit flip changes the first, a swap of two words the second). Integer sums are exact
  in any reduction order, so the numbers are the same on every machine and sharding."""
  def leaf(x):
    w = _words(x)
    i = jnp.arange(1, w.size + 1, dtype=jnp.uint32)
    return jnp.stack([jnp.sum(w, dtype=jnp.uint32), jnp.sum(w * i, dtype=jnp.uint32)])
  return jax.tree.map(leaf, tree)


def checksums(tree) -> dict:
  """``{leaf path: [s1, s2]}`` of a pytree of arrays (see :func:`_sums`)."""
  def host(x):  # replicated over several processes: any local copy
    return np.asarray(x if x.is_fully_addressable else x.addressable_data(0))
  return {jax.tree_util.keystr(path): [int(v) for v in host(s)]
          for path, s in jax.tree_util.tree_leaves_with_path(_sums(tree))}


def make_manager(directory: str, *, max_to_keep: int = 3,
                 keep_period: int | None = None) -> ocp.CheckpointManager:
  """Manager keeping the newest ``max_to_keep`` steps plus every multiple of ``keep_period``."""
  ocp = _ocp()
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, keep_period=keep_period,
                                         create=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(manager: ocp.CheckpointManager, step: int, state, config_dict: dict,
         *, wait: bool = False) -> None:
  """Saves ``state``, ``config_dict`` and the state's checksums under ``step`` (asynchronously
  unless ``wait``; the checksums are computed first, on the device)."""
  args = _ocp().args
  manager.save(step, args=args.Composite(state=args.StandardSave(state),
                                         config=args.JsonSave(config_dict),
                                         checksums=args.JsonSave(checksums(state))))
  if wait:
    manager.wait_until_finished()


class NotEnoughSpace(RuntimeError):
  """The checkpoint folder's disk has less free space than a checkpoint takes."""


def _folder_bytes(folder: str) -> int:
  return sum(os.path.getsize(os.path.join(r, f)) for r, _, files in os.walk(folder) for f in files)


def check_space(manager: ocp.CheckpointManager, state) -> None:
  """Refuses (one line) to start a checkpoint write that the disk cannot hold: the size is the
  largest step already in the folder plus 10 %, or without one the state's bytes (orbax
  compresses, so that is an upper bound). A write that runs out of space half-way leaves only a
  temporary folder, but the run would stop with pages of tensorstore errors."""
  folder = str(manager.directory)
  sizes = [_folder_bytes(step_dir(manager, s)) for s in manager.all_steps()]
  need = int(1.1 * max(sizes)) if sizes else sum(x.nbytes for x in jax.tree.leaves(state))
  free = shutil.disk_usage(folder).free
  if free < need:
    raise NotEnoughSpace(
        f"no space for a checkpoint in {folder}: it takes about {need / 2**20:.1f} MiB and "
        f"{free / 2**20:.1f} MiB are free; free some space (or lower training.max_to_keep) and run "
        f"the same command again to resume from the newest checkpoint")


def abstract_like(state, sharding=None):
  """Shape/dtype (and sharding) description of ``state``, the restore target."""
  def leaf(x):
    return jax.ShapeDtypeStruct(x.shape, x.dtype,
                                sharding=sharding if sharding is not None else getattr(x, "sharding", None))
  return jax.tree.map(leaf, state)


def _reason(e: BaseException) -> str:
  """One line for an orbax / tensorstore failure (their messages run to hundreds of lines)."""
  text = " ".join(re.sub(r"\s*\[tensorstore_spec.*", "", str(e), flags=re.S).split())
  if len(text) > 240:  # tensorstore nests the cause at the end: keep both ends
    text = f"{text[:100]} ... {text[-130:]}"
  return f"{type(e).__name__}: {text}"


def _complete(manager, step) -> None:
  folder = step_dir(manager, step)
  for item in ("state", "config"):
    if not os.path.isdir(os.path.join(folder, item)):
      raise CheckpointDamaged(folder, f"it has no {item!r} item (an interrupted copy or an "
                              f"emptied folder)")


def restore(manager: ocp.CheckpointManager, step: int, abstract_state):
  """Restores the state saved at ``step`` into the structure of ``abstract_state`` and checks it
  against the saved checksums; an unreadable or changed step is :class:`CheckpointDamaged`."""
  _complete(manager, step)
  folder = step_dir(manager, step)
  has_sums = os.path.isdir(os.path.join(folder, "checksums"))
  ocp_args = _ocp().args
  args = dict(state=ocp_args.StandardRestore(abstract_state))
  if has_sums:
    args["checksums"] = ocp_args.JsonRestore()
  try:
    with _quiet_failed_reads():
      out = manager.restore(step, args=ocp_args.Composite(**args))
  except Exception as e:  # noqa: BLE001 (orbax / tensorstore raise many types for one cause)
    if "tree structures do not match" in str(e):  # a config the view did not catch, not damage
      raise IncompatibleCheckpoint(
          f"the train state in {folder} has another structure than this config builds (the "
          f"network or the optimizer changed); use the checkpoint's config or a new workdir"
      ) from None
    raise CheckpointDamaged(folder, _reason(e)) from e
  if has_sums:
    saved, found = out.checksums, checksums(out.state)
    for path in saved:
      if found.get(path) != saved[path]:
        raise CheckpointDamaged(folder, f"the values of state{path} do not match the checksum "
                                f"written with them")
  return out.state


# The differences that decide the others, named first: another SDE also differs in its parameters
# (a VP checkpoint sampled with a VE config differs in model.beta_max, which cannot help), and
# another network or data set in the fields that follow from it.
DECISIVE = {"training.sde": "another SDE", "data.dataset": "another data set",
            "model.name": "another network", "classifier.name": "another classifier network",
            "data.image_size": "another image size", "data.num_channels": "another channel count",
            "data.dim": "another data dimension", "training.continuous": "another time convention"}


def check_compatible(saved_view: dict, current_view: dict, where: str,
                     hints: dict | None = None) -> None:
  """Refuses to continue when the two views (``{config path: value}``) differ, in one line that
  names the most decisive difference (:data:`DECISIVE`, then by path) and counts the fields that
  differ besides; ``hints`` (``{path: text}``) adds another way out for a field."""
  rank = list(DECISIVE)
  differ = sorted((p for p in set(saved_view) | set(current_view)
                   if saved_view.get(p) != current_view.get(p)),
                  key=lambda p: (rank.index(p) if p in rank else len(rank), p))
  if not differ:
    return
  path, others = differ[0], differ[1:]
  what = [DECISIVE[path]] if path in DECISIVE else []
  if others:
    what.append(f"{len(others)} more field{'s' * (len(others) > 1)} differ: "
                + ", ".join(others[:4]) + (", ..." if len(others) > 4 else ""))
  hint = f" ({hints[path]})" if hints and path in hints else ""
  raise IncompatibleCheckpoint(
      f"config.{path}={current_view.get(path)!r}: the checkpoint in {where} was written with "
      f"{path}={saved_view.get(path)!r}" + (f" ({'; '.join(what)})" if what else "")
      + f"; use that value or a new workdir{hint}")


def read_config(manager: ocp.CheckpointManager, step: int) -> dict:
  """The config dict saved with ``step`` (:class:`CheckpointDamaged` when it cannot be read)."""
  _complete(manager, step)
  try:
    with _quiet_failed_reads():
      args = _ocp().args
      out = manager.restore(step, args=args.Composite(config=args.JsonRestore()))
  except Exception as e:  # noqa: BLE001
    raise CheckpointDamaged(step_dir(manager, step), _reason(e)) from e
  if not isinstance(out.config, dict):
    raise CheckpointDamaged(step_dir(manager, step), "its saved config is not a JSON object")
  return out.config
