"""The persistent compilation cache (score_sde_jax.compilation): a second process loads what the
first compiled, the default folder follows the environment, and a folder that cannot be written
turns the cache off with one warning instead of stopping the run."""

import os
import subprocess
import sys
import textwrap

from score_sde_jax import compilation

# Counts JAX's own cache events in a fresh process: compiles one program with the cache on.
_CHILD = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp
    from score_sde_jax import compilation
    events = []
    jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
    compilation.MIN_COMPILE_SECONDS = 0.0
    assert compilation.enable_compilation_cache(sys.argv[1]) == sys.argv[1]
    f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum(axis=0) * 3.0)
    print(float(f(jnp.arange(12.0).reshape(3, 4) / 10)[0]))
    print(sum(e == "/jax/compilation_cache/cache_hits" for e in events))
""")


def _child(folder):
  out = subprocess.run([sys.executable, "-c", _CHILD, folder], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       env={**os.environ, "JAX_PLATFORMS": "cpu"}, check=True).stdout.split()
  return float(out[0]), int(out[1])


def test_a_second_process_loads_the_compiled_program_from_the_cache(tmp_path):
  folder = str(tmp_path / "cache")
  value, hits = _child(folder)
  assert hits == 0
  assert any(name.endswith("-cache") for name in os.listdir(folder))
  value_again, hits_again = _child(folder)
  assert hits_again >= 1
  assert value_again == value


def test_the_default_folder_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.setenv(compilation.ENV_VAR, str(tmp_path / "mine"))
  assert compilation.default_cache_dir() == str(tmp_path / "mine")
  monkeypatch.delenv(compilation.ENV_VAR)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert compilation.default_cache_dir() == str(tmp_path / "xdg" / "score_sde_jax" / "xla")
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert compilation.default_cache_dir() == str(tmp_path / "home" / ".cache" / "score_sde_jax" / "xla")


def test_a_folder_that_cannot_be_made_turns_the_cache_off_with_one_warning(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  lines = []
  assert compilation.enable_compilation_cache(str(blocker / "cache"), warn=lines.append) is None
  assert lines == [f"warning: compilation cache off (Not a directory: {blocker / 'cache'}); "
                   "every run compiles afresh"]


def test_xla_cpu_flags_are_added_unless_set_opted_out_or_unknown_to_the_jaxlib():
  """compilation.add_xla_cpu_flags on a given environment: appended to the user's other flags; a
  flag the user set is kept as set; nothing for a jaxlib older than the one measured (XLA aborts on
  flags it does not know) or with $SCORE_SDE_JAX_XLA_CPU_FLAGS=0."""
  ours = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
  env = {}
  assert compilation.add_xla_cpu_flags(env, "0.10.2") == [ours]
  assert env == {"XLA_FLAGS": ours}
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  compilation.add_xla_cpu_flags(env, "0.10.2")
  assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=4 {ours}"
  env = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}
  assert compilation.add_xla_cpu_flags(env, "0.10.2") == []
  assert env["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type="
  for env, version in [({}, "0.9.1"), ({}, "0.6.0"), ({"SCORE_SDE_JAX_XLA_CPU_FLAGS": "0"}, "0.10.2")]:
    assert compilation.add_xla_cpu_flags(env, version) == [] and "XLA_FLAGS" not in env
