"""How programs are compiled: XLA:CPU's options (:func:`add_xla_cpu_flags`) and compiling once per
machine with JAX's persistent compilation cache.

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
import warnings

# XLA:CPU options this package sets (README, "Speed of the paper's networks"), each with the first
# jaxlib it was measured with: XLA aborts on a flag it does not know, so older ones get none.
# Convolutions by Eigen instead of YNNPACK: on 2 cores (jaxlib 0.10.2) the networks' 3x3 kernel
# gradients ran 1.4-5x faster, their forward 1.1-1.9x; DDPM++ 32x32 b16 train step 0.37 -> 0.31 s,
# score 0.093 -> 0.068 s; the full DDPM++ at batch 8 2.82 -> 2.40 s. YNNPACK keeps the matmuls,
# elementwise fusions and reductions.
XLA_CPU_FLAGS = (("xla_cpu_experimental_ynn_fusion_type", "-individual_convolution", (0, 10)),)
XLA_CPU_FLAGS_ENV_VAR = "SCORE_SDE_JAX_XLA_CPU_FLAGS"   # "0": leave XLA_FLAGS as it is


def add_xla_cpu_flags(environ=None, jaxlib_version: str | None = None) -> list[str]:
  """Appends :data:`XLA_CPU_FLAGS` to ``XLA_FLAGS`` in ``environ`` (default ``os.environ``) and
  returns the flags added. An explicit call (importing the package sets nothing): ``run.py``,
  the notebooks, the benchmarks and the tests make it first thing, before JAX's backends start.

  A flag that ``XLA_FLAGS`` already sets is left as the user set it, and nothing is added when
  ``$SCORE_SDE_JAX_XLA_CPU_FLAGS`` is ``0`` or the jaxlib is older than the one a flag was measured
  with. XLA reads ``XLA_FLAGS`` when JAX's backends start, so a process that ran a JAX computation
  before this call keeps XLA's defaults (the networks' convolutions check which
  they got: ``models.conv``). Only XLA:CPU reads these flags.
  """
  environ = os.environ if environ is None else environ
  if environ.get(XLA_CPU_FLAGS_ENV_VAR, "").strip() == "0":
    return []
  if jaxlib_version is None:
    import jaxlib.version
    jaxlib_version = jaxlib.version.__version__
  version = tuple(int(p) for p in jaxlib_version.split(".")[:2] if p.isdigit())
  flags = environ.get("XLA_FLAGS", "")
  added = [f"--{name}={value}" for name, value, since in XLA_CPU_FLAGS
           if version >= since and f"--{name}=" not in flags]
  if added:
    environ["XLA_FLAGS"] = " ".join(([flags] if flags.strip() else []) + added)
  return added


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
  import jax   # here, not above: run.py sets XLA_FLAGS with this module before importing JAX
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
  jax.config.update("jax_compilation_cache_max_size", MAX_SIZE_BYTES)
  one_line_for_failed_cache_writes(folder, warn)
  return folder


_CACHE_WRITE_ERROR = "Error writing persistent compilation cache entry"


def one_line_for_failed_cache_writes(folder: str, warn=None) -> None:
  """JAX warns once per program whose cache entry it cannot write (54 warnings on a full disk):
  the first becomes one line naming the folder and the reason, the others are dropped; every
  other warning is shown as before. Process-wide (``warnings.showwarning``), so an explicit call."""
  previous = warnings.showwarning
  if getattr(previous, "_score_sde_jax_cache_writes", False):
    return
  said = []

  def showwarning(message, category, filename, lineno, file=None, line=None):
    text = str(message)
    if not text.startswith(_CACHE_WRITE_ERROR):
      return previous(message, category, filename, lineno, file, line)
    if not said:
      said.append(True)
      reason = text.split("': ", 1)[-1]
      (warn or (lambda m: print(m, file=sys.stderr, flush=True)))(
          f"warning: the compilation cache in {folder} cannot be written ({reason}); programs "
          f"compile as without a cache (this warning is shown once)")

  showwarning._score_sde_jax_cache_writes = True
  warnings.showwarning = showwarning


def disable_compilation_cache() -> None:
  """Turns the persistent cache off again (for this process)."""
  import jax
  jax.config.update("jax_compilation_cache_dir", None)
