"""score_sde_jax: score-based generative modeling with SDEs in JAX/Flax.

Importing the package changes nothing outside it (no environment variable, hook, logger or
backend); process-wide settings are explicit calls: :func:`score_sde_jax.compilation.
add_xla_cpu_flags` (faster convolutions on XLA:CPU, before JAX starts) and
:func:`score_sde_jax.compilation.enable_compilation_cache`.

Importing it is also cheap: each public name imports its module (JAX, Flax, diffrax) when it is
first used (PEP 562), so ``run.py``'s flag, config-file and workdir mistakes are reported without
waiting for them.
"""

from score_sde_jax import lazy

__version__ = "0.1.0"

# The public submodules, and the other public names with the submodule that defines each.
_SUBMODULES = ("classifier", "controllable", "data", "keys", "likelihood", "sampling")
_NAMES = {
    "Experiment": "experiment",
    "BitsPerDimResult": "likelihood", "LikelihoodResult": "likelihood",
    "denoising_score_matching": "losses", "get_sde_loss_fn": "losses",
    "SampleResult": "sampling",
    "get_score_fn": "score",
    "SDE": "sde", "VESDE": "sde", "VPSDE": "sde", "ReverseSDE": "sde", "subVPSDE": "sde",
    "TrainState": "train", "make_optimizer": "train", "make_train_step": "train",
    "TrainedClassifier": "workdir", "TrainedRun": "workdir", "load_classifier": "workdir",
    "load_workdir": "workdir",
}

__all__ = sorted((*_SUBMODULES, *_NAMES))

# A public name, or any submodule (``score_sde_jax.build``, ``.viz``, ...), imports its module on
# first use.
__getattr__ = lazy.module_getattr(__name__, _NAMES)


def __dir__():
  return sorted(set(globals()) | set(__all__))
