"""A workdir's folders and files: the checks before anything is written, the trainer's lock,
atomic JSON writes and the checkpoint managers."""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sys
import tempfile
import time

try:
  import fcntl
except ImportError:  # Windows
  fcntl = None


class WorkdirError(ValueError):
  """A workdir is missing, not a folder, or holds no checkpoint."""


def check_workdir(workdir: str) -> str:
  """The absolute workdir; its parent folder must exist (a typo should not create a tree)."""
  if not workdir:
    raise WorkdirError("workdir: required (a folder for checkpoints, metrics and figures)")
  workdir = os.path.abspath(workdir)
  parent = os.path.dirname(workdir)
  if not os.path.isdir(parent):
    raise WorkdirError(f"workdir={workdir!r}: parent folder {parent!r} does not exist")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"workdir={workdir!r}: exists and is not a folder")
  return workdir


def check_writable(workdir: str) -> None:
  """The workdir (or, before it exists, its parent) must be writable: one line naming the
  folder and why not, before anything is read or compiled."""
  folder = workdir if os.path.isdir(workdir) else os.path.dirname(workdir)
  if os.access(folder, os.W_OK):
    return
  read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
  raise WorkdirError(f"workdir={workdir!r}: cannot write in {folder!r} "
                     f"({'read-only file system' if read_only else 'permission denied'}); "
                     f"give a folder you can write to")


class WorkdirLocked(WorkdirError):
  """Another process is training in this folder."""


LOCK_FILE = "train.lock"


def _holder(text: str) -> str:
  try:
    info = json.loads(text)
    return (f"process {info['pid']} on host {info['host']} (started {info['started']}: "
            f"{info['command']})")
  except (ValueError, KeyError, TypeError):
    return "another process"


def warn(message: str) -> None:
  """One ``warning:`` line on stderr, from process 0 only."""
  from score_sde_jax import parallel   # here: the checks above run before JAX is imported
  if parallel.is_main_process():
    print(f"warning: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def lock(folder: str):
  """Holds ``folder/train.lock`` exclusively while training writes the folder.

  The lock is the operating system's (``flock``): it ends with the process that holds it, so
  a run killed with SIGKILL leaves no lock behind, only the file with its holder's pid and host;
  the next run takes it over and says whose it was. A second trainer gets one
  :class:`WorkdirLocked` line naming the holder. Only process 0 of a multi-process run takes
  it (the others write no files of their own). Where ``flock`` does not exist (Windows), there
  is no lock.
  """
  from score_sde_jax import parallel
  if fcntl is None or not parallel.is_main_process():
    yield
    return
  path = os.path.join(folder, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
      raise WorkdirLocked(f"workdir={folder!r}: {holder} is training in it ({path}); wait for "
                          f"it to finish, stop it, or use another workdir") from None
    previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    if previous:
      warn(f"{path} was left by {_holder(previous)}, which no longer holds it (it was killed "
           f"or its machine stopped); taking it over")
    info = dict(pid=os.getpid(), host=socket.gethostname(),
                started=time.strftime("%Y-%m-%d %H:%M:%S"), command=" ".join(sys.argv)[:500])
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    os.fsync(fd)
    try:
      yield
    finally:
      os.ftruncate(fd, 0)  # a clean exit leaves an empty (unheld) lock file
  finally:
    os.close(fd)  # releases the flock


@contextlib.contextmanager
def atomic_path(path: str):
  """A temporary file name beside ``path`` (unique to this writer), renamed to ``path`` when the
  block succeeds and removed when it fails: a kill or a full disk never leaves half a file, and
  two writers never share a temporary file."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  base, ext = os.path.splitext(os.path.basename(path))
  fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{ext}", dir=folder)
  os.close(fd)
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def json_safe(obj):
  """``obj`` with every non-finite float as None: ``NaN`` and ``Infinity`` are not JSON."""
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  if isinstance(obj, dict):
    return {k: json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [json_safe(v) for v in obj]
  return obj


def write_json(path: str, obj) -> None:
  """Writes ``obj`` as JSON atomically (:func:`atomic_path`); non-finite numbers become null."""
  with atomic_path(path) as tmp, open(tmp, "w") as f:
    json.dump(json_safe(obj), f, indent=2, sort_keys=True, allow_nan=False)


def save_npz(path: str, **arrays) -> None:
  """``np.savez`` atomically (:func:`atomic_path`): a full disk or a kill leaves the previous
  file, or none, never a truncated one."""
  import numpy as np
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)


def checkpoints(folder: str, *, max_to_keep: int = 3, keep_period: int | None = None):
  """The orbax manager of ``folder/checkpoints`` (a workdir, or a classifier's folder), keeping
  the newest ``max_to_keep`` steps and every multiple of ``keep_period``."""
  from score_sde_jax import checkpoint
  path = os.path.join(folder, "checkpoints")
  if os.path.exists(path) and not os.path.isdir(path):
    # orbax waited 300 s for a folder it could not make, then raised a traceback
    raise WorkdirError(f"{path}: is a file, not a folder of checkpoints; move it away")
  return checkpoint.make_manager(path, max_to_keep=max_to_keep,
                                 keep_period=keep_period)
