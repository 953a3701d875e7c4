"""score_sde_jax: score-based generative modeling with SDEs in JAX/Flax.

Importing the package changes nothing outside it (no environment variable, hook, logger or
backend); process-wide settings are explicit calls: :func:`score_sde_jax.compilation.
add_xla_cpu_flags` (faster convolutions on XLA:CPU, before JAX starts) and
:func:`score_sde_jax.compilation.enable_compilation_cache`.

Importing it is also cheap: each public name imports its module (JAX, Flax, diffrax) when it is
first used (PEP 562), so ``run.py``'s flag, config-file and workdir mistakes are reported without
waiting for them.
"""

import importlib
import importlib.util

__version__ = "0.1.0"

# public name -> the module that defines it (a module itself when the name is a submodule)
_NAMES = {
    "classifier": "score_sde_jax.classifier", "controllable": "score_sde_jax.controllable",
    "data": "score_sde_jax.data", "keys": "score_sde_jax.keys",
    "likelihood": "score_sde_jax.likelihood", "sampling": "score_sde_jax.sampling",
    "Experiment": "score_sde_jax.experiment",
    "BitsPerDimResult": "score_sde_jax.likelihood", "LikelihoodResult": "score_sde_jax.likelihood",
    "denoising_score_matching": "score_sde_jax.losses",
    "get_sde_loss_fn": "score_sde_jax.losses",
    "SampleResult": "score_sde_jax.sampling",
    "get_score_fn": "score_sde_jax.score",
    "SDE": "score_sde_jax.sde", "VESDE": "score_sde_jax.sde", "VPSDE": "score_sde_jax.sde",
    "ReverseSDE": "score_sde_jax.sde", "subVPSDE": "score_sde_jax.sde",
    "TrainState": "score_sde_jax.train", "make_optimizer": "score_sde_jax.train",
    "make_train_step": "score_sde_jax.train",
    "TrainedClassifier": "score_sde_jax.workdir", "TrainedRun": "score_sde_jax.workdir",
    "load_classifier": "score_sde_jax.workdir", "load_workdir": "score_sde_jax.workdir",
}

__all__ = sorted(_NAMES)


def __getattr__(name):
  """Imports the module behind a public name, or the submodule ``name`` (``score_sde_jax.build``,
  ``.viz``, ...), on first use; then it is a plain attribute."""
  if name in _NAMES:
    module = importlib.import_module(_NAMES[name])
  elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
    module = importlib.import_module(f"{__name__}.{name}")
  else:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  value = module if module.__name__ == f"{__name__}.{name}" else getattr(module, name)
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(__all__))
