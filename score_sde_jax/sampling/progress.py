"""A progress bar over a compiled sampler's steps, fed from inside the compiled program.

A predictor-corrector run is one ``lax.scan`` of ``num_steps`` steps: minutes for a network on a
CPU, with nothing to show on the host until it returns. With a progress name (the ``progress``
argument of :func:`~score_sde_jax.sampling.pc_sample`, or a :func:`stage` around the call, as the
modes do) the scan reports its step to a tqdm bar through ``jax.debug.callback`` about 100 times
per run (one host call per percent; microseconds each). The bar's count only moves forward, so
a callback that arrives twice (once per device of a sharded batch) or out of order changes
nothing. Written by hand (40 lines): jax-tqdm and jax-progress wrap a scan's body and own the
bar inside the traced function; here the bar is opened on the host around the call and named by
the caller's stage, the compiled program only reports steps (and only when a bar is wanted), and
duplicate reports from a sharded batch are harmless. The probability-flow solves use diffrax's
own progress meter instead (:mod:`score_sde_jax.sampling.flow`).
"""

from __future__ import annotations

import contextlib
import contextvars

import jax
import numpy as np
from tqdm.auto import tqdm

_STAGE = contextvars.ContextVar("score_sde_jax_sampling_stage", default=None)
_BARS: list = []     # the open step bars, innermost last (one per running sampler call)
REPORTS_PER_RUN = 100


@contextlib.contextmanager
def stage(name: str):
  """Samplers called inside show a bar over their steps named ``name`` (``--mode conditional``:
  ``with stage("conditional: guided samples"): ...``)."""
  token = _STAGE.set(name)
  try:
    yield
  finally:
    _STAGE.reset(token)


def name_for(progress: str | None) -> str | None:
  """The bar's name: ``progress`` if given, else the enclosing :func:`stage`'s, else ``None``."""
  return progress if progress is not None else _STAGE.get()


@contextlib.contextmanager
def steps_bar(name: str | None, total: int):
  """A bar over ``total`` steps while the block runs (nothing when ``name`` is None, and nothing
  outside process 0)."""
  if name is None:
    yield
    return
  bar = tqdm(total=total, desc=name, unit="step", dynamic_ncols=True, leave=False,
             disable=jax.process_index() != 0)
  _BARS.append(bar)
  try:
    yield
  finally:
    _BARS.remove(bar)
    bar.close()


def _report(done):
  if _BARS:
    bar = _BARS[-1]
    done = int(np.asarray(done))
    if done > bar.n:
      bar.update(min(done, bar.total) - bar.n)


def report_step(i, total: int) -> None:
  """Inside a compiled loop: step ``i`` (0-based) of ``total`` is done; reported every
  ``total / 100`` steps and at the last one."""
  every = max(1, total // REPORTS_PER_RUN)
  jax.lax.cond((i % every == every - 1) | (i == total - 1),
               lambda: jax.debug.callback(_report, i + 1), lambda: None)
