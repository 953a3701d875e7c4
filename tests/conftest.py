import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)  # configs/ is imported as a package, as run.py does

from score_sde_jax import compilation  # noqa: E402

compilation.add_xla_cpu_flags()   # as run.py: the tests see the programs users run

import jax  # noqa: E402
import pytest  # noqa: E402


# make test runs a check that is parametrized over the three SDEs on the VP SDE; its VE and sub-VP
# copies are marked slow and run with make test-all (CI runs both). Ids name the SDE ("ve",
# "VESDE", "subvpsde", "gmm_ve", ...) as one "-"-separated part.
OTHER_SDE_IDS = {"ve", "subvp", "vesde", "subvpsde", "gmm_ve", "gmm_subvp"}


@pytest.hookimpl(tryfirst=True)   # before -m "not slow" deselects
def pytest_collection_modifyitems(items):
  for item in items:
    callspec = getattr(item, "callspec", None)
    if callspec and {part.lower() for part in callspec.id.split("-")} & OTHER_SDE_IDS:
      item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope="session")
def _compilation_cache_of_the_session(tmp_path_factory):
  """``run.py``, started by tests in subprocesses, keeps compiled programs in a persistent cache
  (score_sde_jax.compilation): the tests give it a folder of their own, not the user's
  ``~/.cache``; later subprocesses of the session load what earlier ones compiled."""
  from score_sde_jax import compilation
  os.environ[compilation.ENV_VAR] = str(tmp_path_factory.mktemp("compilation_cache"))
  yield


@pytest.fixture
def cheap_compiles():
  """XLA's cheap compilation (``jax_disable_most_optimizations``) for the test modules that build
  paper-size networks and call them once or twice (``pytestmark =
  pytest.mark.usefixtures("cheap_compiles")`` or on one test): compiling is most of their time, and what they
  check (shapes, parameter counts, bit-equal random bits, agreement with the original or with
  XLA's own convolution to a tolerance) does not depend on how hard XLA optimises. Measured on
  test_image_models, test_paper_configs, test_conv and test_dropout together: 359 s -> 263 s.
  Tests that sample or train many steps keep the programs users run."""
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", False)


@pytest.fixture
def x64():
  """float64 for the duration of one test (not global)."""
  jax.config.update("jax_enable_x64", True)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", False)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code():
  """Drops JAX's compiled executables after each test module. Every XLA:CPU executable holds
  memory mappings (about 450 per test of tests/test_fast_samplers.py); a whole-suite process
  that kept them all reached the kernel's vm.max_map_count (65530) and LLVM aborted in the
  middle of a compilation ("Fatal Python error: Aborted" in tests/test_workdir.py)."""
  yield
  jax.clear_caches()


@pytest.fixture(scope="session")
def root():
  return ROOT
