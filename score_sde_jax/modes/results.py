"""How the modes report: arrays to ``samples/<name>.npz``, the result to ``eval/<name>.json`` and
one JSON line on stdout, then the figures' paths. Process 0 alone writes."""

from __future__ import annotations

import json
import os

from score_sde_jax.workdir import save_npz, write_json


def write_result(workdir: str, json_name: str, result: dict, *, arrays: dict | None = None,
                 npz_name: str | None = None) -> None:
  """``arrays`` (if any) to ``samples/<npz_name>.npz``, ``result`` to ``eval/<json_name>.json``,
  and ``result`` as one line on stdout."""
  if arrays is not None:
    save_npz(os.path.join(workdir, "samples", f"{npz_name or json_name}.npz"), **arrays)
  write_json(os.path.join(workdir, "eval", f"{json_name}.json"), result)
  print(json.dumps(result))


def figures_wanted(exp) -> bool:
  """``eval.figures`` (a run loaded for the network alone has no eval section: figures on)."""
  return exp.eval is None or exp.eval.figures


def print_figures(paths) -> None:
  paths = [p for p in paths if p]
  if paths:
    print("figures:\n  " + "\n  ".join(paths))
