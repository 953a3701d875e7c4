"""Importing the package changes nothing outside it: no environment variable, unraisable-exception
hook, log handler or filter, and no JAX backend started (process-wide settings are explicit calls)."""

import json
import subprocess
import sys

from conftest import ROOT

_PROBE = """
import json, logging, os, sys
def state():
  loggers = [logging.getLogger()] + [logging.getLogger(n) for n in sorted(logging.root.manager.loggerDict)]
  return dict(environ=dict(os.environ), hook=repr(sys.unraisablehook),
              excepthook=repr(sys.excepthook),
              logs={l.name: [repr(h) for h in l.handlers] + [repr(f) for f in l.filters]
                    for l in loggers if isinstance(l, logging.Logger)})
before = state()
import score_sde_jax, score_sde_jax.build, score_sde_jax.modes, score_sde_jax.checkpoint
import score_sde_jax.compilation, score_sde_jax.convert
after = state()
from jax._src import xla_bridge
changed_logs = {k: v for k, v in after["logs"].items() if before["logs"].get(k, []) != v}
print(json.dumps(dict(
    environ=sorted(k for k in set(before["environ"]) | set(after["environ"])
                   if before["environ"].get(k) != after["environ"].get(k)),
    hook=before["hook"] == after["hook"], excepthook=before["excepthook"] == after["excepthook"],
    logs=changed_logs, backends=sorted(xla_bridge._backends))))
"""


def test_importing_the_package_changes_no_environment_hook_logger_or_backend():
  out = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, check=True)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result == {"environ": [], "hook": True, "excepthook": True, "logs": {}, "backends": []}


def test_the_xla_flag_is_an_explicit_call():
  probe = ("import os; from score_sde_jax import compilation; before = os.environ.get('XLA_FLAGS'); "
           "added = compilation.add_xla_cpu_flags(); print(before, added, os.environ.get('XLA_FLAGS'))")
  env = {k: v for k, v in __import__("os").environ.items()
         if k not in ("XLA_FLAGS", "SCORE_SDE_JAX_XLA_CPU_FLAGS")}
  out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=env, check=True).stdout.split()
  assert out[0] == "None"   # importing set nothing
  assert out[-1] == "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def test_every_name_in_all_is_there_after_a_plain_import():
  """``import score_sde_jax`` alone gives every public name, ``keys`` included (the README
  reproduces ``--mode sample`` with ``score_sde_jax.keys.stream``)."""
  probe = ("import score_sde_jax as s; missing = [n for n in s.__all__ if not hasattr(s, n)]; "
           "print(missing, s.keys.stream(0, 'sample').shape)")
  out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, check=True).stdout.strip().splitlines()[-1]
  assert out.startswith("[] ("), out
