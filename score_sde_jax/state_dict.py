"""A PyTorch state dict matched onto a Flax network's parameters, strictly.

Both converters (``convert``: the paper's NCSN++ / DDPM++ checkpoints; ``convert_refinenet``:
NCSN / NCSNv2's) rename each tensor to a Flax path and re-lay it out with their own rule; what
they share is the strict matching, written here once: every tensor must land on a parameter of
the same shape, no parameter twice, and every parameter must be filled; otherwise one error that
lists the problems (no library does this: flax's ``from_state_dict`` fills a given structure
without names to check, and the PyTorch-to-Flax converters of ``transformers`` are tied to their
own model classes).
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def match(state_dict: dict, expected: dict, to_flax: Callable, *, what: str,
          error: type[Exception], skip: Callable = lambda key: False) -> dict:
  """``{flax path: array}`` from ``state_dict``, strictly against ``expected`` (``{flax path:
  shape}``). ``to_flax(key, array) -> (path, array)`` renames and re-lays out one tensor;
  ``skip(key)`` names the buffers that are not parameters. Raises ``error`` listing every unused
  tensor, shape mismatch, parameter filled twice and parameter no tensor is meant for (the first
  25)."""
  flat, problems, seen = {}, [], set()   # seen: paths with a tensor, fitting or not
  for key, value in state_dict.items():
    if skip(key):
      continue
    path, array = to_flax(key, np.asarray(value))
    where = "/".join(path)
    if path not in expected:
      problems.append(f"  {key} {tuple(np.shape(value))}: no parameter {where} in the network")
    elif tuple(expected[path]) != array.shape:
      problems.append(f"  {key}: shape {array.shape} after transposition, the network's "
                      f"{where} has {tuple(expected[path])}")
    elif path in flat:
      problems.append(f"  {key}: {where} filled twice")
    else:
      flat[path] = array
    seen.add(path)
  problems += [f"  {'/'.join(p)} {tuple(expected[p])}: no tensor in the {what}"
               for p in expected if p not in seen]
  if problems:
    shown = problems[:25] + ([f"  ... and {len(problems) - 25} more"] if len(problems) > 25 else [])
    raise error(f"the {what} does not match the network built from the config "
                f"({len(problems)} problems):\n" + "\n".join(shown))
  return flat
