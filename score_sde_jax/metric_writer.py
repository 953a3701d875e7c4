"""Training metrics: one JSON row per log in ``metrics.jsonl`` and the same scalars in TensorBoard.

Written here rather than with ``clu.metric_writers`` (what flax's examples
use): its TensorBoard writer needs TensorFlow (or torch), far heavier than
``tensorboardX``, and resuming needs ``metrics.jsonl`` cut back to the last
checkpoint, which a plain file makes exact.
"""

from __future__ import annotations

import json
import os


def read_metrics(path: str) -> list[dict]:
  """The rows of a ``metrics.jsonl`` (a last line cut short by a kill is dropped)."""
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        break
  return rows


def truncate_metrics(path: str, last_step: int) -> None:
  """Drops rows logged after ``last_step`` (they belong to steps that will be redone)."""
  rows = [r for r in read_metrics(path) if r.get("step", 0) <= last_step]
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  os.replace(tmp, path)


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
