"""Compile once per machine: JAX's persistent compilation cache.

XLA compiles each program (a train step, a sampler, a likelihood solve) when a process first calls
it: 10-70 s for the paper's networks on a CPU, paid again by every new process. With the cache on,
compiled executables are written to a folder and a later process with the same program, JAX
version and backend loads them instead of compiling. ``run.py`` turns it on by default
(``--compilation_cache_dir``, ``--nocompilation_cache``); from a notebook or a script, call
:func:`enable_compilation_cache` before the first compilation.

JAX keys every entry by the program, the compile options, the JAX / jaxlib version and the
device, so a cache folder can be shared by several versions and machines; a stale entry is never
used. It is JAX's own cache (``jax_compilation_cache_dir``); nothing here re-implements it.
"""

from __future__ import annotations

import os
import sys

import jax

ENV_VAR = "SCORE_SDE_JAX_COMPILATION_CACHE"
MAX_SIZE_BYTES = 4 * 2**30     # JAX evicts the least recently used entries beyond this
# Every program: a digits sample run compiles ~150 small ones (warm start 9.3 s; 10.4 s at 0.5).
MIN_COMPILE_SECONDS = 0.0


def default_cache_dir() -> str:
  """``$SCORE_SDE_JAX_COMPILATION_CACHE``, else ``$XDG_CACHE_HOME/score_sde_jax/xla``, else
  ``~/.cache/score_sde_jax/xla``."""
  if os.environ.get(ENV_VAR):
    return os.environ[ENV_VAR]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "score_sde_jax", "xla")


def enable_compilation_cache(folder: str | None = None, *, warn=None) -> str | None:
  """Turns on JAX's persistent compilation cache in ``folder`` (default :func:`default_cache_dir`).

  Returns the folder, or ``None`` when it cannot be created or written: then one warning line
  goes to ``warn`` (default stderr) and the process compiles as without a cache (a cache is an
  optimisation; it never stops a run).
  """
  folder = os.path.abspath(os.path.expanduser(folder or default_cache_dir()))
  try:
    os.makedirs(folder, exist_ok=True)
    if not os.access(folder, os.W_OK | os.X_OK):
      raise PermissionError(f"not writable: {folder}")
  except OSError as e:
    reason = f"{e.strerror}: {e.filename}" if getattr(e, "strerror", None) else str(e)
    (warn or (lambda m: print(m, file=sys.stderr, flush=True)))(
        f"warning: compilation cache off ({reason}); every run compiles afresh")
    return None
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
  jax.config.update("jax_compilation_cache_max_size", MAX_SIZE_BYTES)
  return folder


def disable_compilation_cache() -> None:
  """Turns the persistent cache off again (for this process)."""
  jax.config.update("jax_compilation_cache_dir", None)
