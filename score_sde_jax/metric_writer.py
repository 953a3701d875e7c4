"""Training metrics: one JSON row per log in ``metrics.jsonl`` and the same scalars in TensorBoard.

Written here rather than with ``clu.metric_writers`` (what flax's examples
use): its TensorBoard writer needs TensorFlow (or torch), far heavier than
``tensorboardX``, and resuming needs ``metrics.jsonl`` cut back to the last
checkpoint, which a plain file makes exact.
"""

from __future__ import annotations

import json
import os
import sys
import time


def _parse(line: bytes):
  """A row (a JSON object with an integer ``step``), or None."""
  try:
    row = json.loads(line.decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError):
    return None
  if not isinstance(row, dict):
    return None
  step = row.get("step")
  return row if isinstance(step, int) and not isinstance(step, bool) else None


def read_lines(path: str):
  """``(rows, unreadable)`` of a ``metrics.jsonl``: the rows that parse (JSON objects with an
  integer ``step``), and ``(line number, raw line)`` of every other non-empty line (a hand
  edit, non-UTF-8 bytes, a row that is a list, a step written as a string). A last line without
  its newline, cut short by a kill, is neither: its step is redone."""
  if not os.path.exists(path):
    return [], []
  with open(path, "rb") as f:
    lines = f.read().split(b"\n")
  last = lines.pop()   # after the final newline: b"" unless the last write was cut short
  rows, unreadable = [], []
  for i, line in enumerate(lines, 1):
    if not line.strip():
      continue
    row = _parse(line)
    if row is None:
      unreadable.append((i, line))
    else:
      rows.append(row)
  if last.strip() and _parse(last) is not None:
    rows.append(_parse(last))
  return rows, unreadable


def read_metrics(path: str) -> list[dict]:
  """The rows of a ``metrics.jsonl`` that parse (lines that do not are skipped, never the rows
  after them; :func:`read_lines`)."""
  return read_lines(path)[0]


def unreadable_path(path: str) -> str:
  return os.path.splitext(path)[0] + ".unreadable.jsonl"


def truncate_metrics(path: str, last_step: int, warn=None) -> None:
  """Drops rows logged after ``last_step`` (they belong to steps that will be redone). Lines
  that cannot be read are moved, as they were, to ``metrics.unreadable.jsonl`` beside it (with a
  warning), never dropped."""
  rows, unreadable = read_lines(path)
  if not os.path.exists(path):
    return
  from score_sde_jax.workdir.folders import atomic_path
  if unreadable:
    side = unreadable_path(path)
    with open(side, "ab") as f:
      for _, line in unreadable:
        f.write(line + b"\n")
    shown = ", ".join(str(i) for i, _ in unreadable[:5]) + (" ..." if len(unreadable) > 5 else "")
    (warn or _warn)(f"{path}: {len(unreadable)} line(s) could not be read as metric rows (line "
                    f"{shown}); moved as they were to {side}; the other rows are kept")
  with atomic_path(path) as tmp, open(tmp, "w") as f:
    for r in rows:
      if r["step"] <= last_step:
        f.write(json.dumps(r) + "\n")


def move_aside(path: str, warn=None) -> str | None:
  """A fresh start's old history: ``metrics.jsonl`` with rows past step 0 is renamed to
  ``metrics.before-<time>.jsonl`` (with a warning) rather than overwritten; returns the new
  name, or None when there was nothing to keep."""
  rows, unreadable = read_lines(path)
  if not unreadable and not any(r["step"] > 0 for r in rows):
    return None
  stamp = time.strftime("%Y%m%d-%H%M%S")
  new = os.path.splitext(path)[0] + f".before-{stamp}.jsonl"
  n = 1
  while os.path.exists(new):
    n += 1
    new = os.path.splitext(path)[0] + f".before-{stamp}-{n}.jsonl"
  os.replace(path, new)
  last = max((r["step"] for r in rows), default=None)
  (warn or _warn)(f"{path}: this run starts from step 0 (no checkpoint in its checkpoints "
                  f"folder), but the file holds {len(rows)} rows of an earlier run (up to step "
                  f"{last}); moved to {new}")
  return new


def _warn(message: str) -> None:
  print(f"warning: {message}", file=sys.stderr)


class MetricWriter:
  """Appends rows to ``metrics.jsonl`` and scalars to TensorBoard event files (tensorboardX)."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if enabled:
      from tensorboardX import SummaryWriter  # only the writing process needs it
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    for k, v in scalars.items():
      self._tb.add_scalar(k, float(v), int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
