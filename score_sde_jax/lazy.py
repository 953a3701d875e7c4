"""Imports on first use (PEP 562) for the package and its subpackages: ``import score_sde_jax``
loads no JAX, Flax or diffrax until a name that needs them is used, so ``run.py`` reports its
flag and workdir mistakes at once. A leaf module (the standard library only)."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Mapping


def module_getattr(package: str, names: Mapping[str, str]):
  """A module ``__getattr__`` for ``package``: each of ``names`` (a public name -> the submodule
  that defines it) is imported from that submodule, and any other public name that is a
  submodule of ``package`` is imported as one."""
  def __getattr__(name):
    if name in names:
      return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
    if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
      return importlib.import_module(f"{package}.{name}")
    raise AttributeError(f"module {package!r} has no attribute {name!r}")
  return __getattr__
