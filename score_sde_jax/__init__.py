"""score_sde_jax: score-based generative modeling with SDEs in JAX/Flax.

Importing the package changes nothing outside it (no environment variable, hook, logger or
backend); process-wide settings are explicit calls: :func:`score_sde_jax.compilation.
add_xla_cpu_flags` (faster convolutions on XLA:CPU, before JAX starts) and
:func:`score_sde_jax.compilation.enable_compilation_cache`.
"""

from score_sde_jax import classifier, controllable, data, keys, likelihood, sampling
from score_sde_jax.experiment import Experiment
from score_sde_jax.likelihood import BitsPerDimResult, LikelihoodResult
from score_sde_jax.losses import denoising_score_matching, get_sde_loss_fn
from score_sde_jax.sampling import SampleResult
from score_sde_jax.score import get_score_fn
from score_sde_jax.sde import SDE, VESDE, VPSDE, ReverseSDE, subVPSDE
from score_sde_jax.train import TrainState, make_optimizer, make_train_step
from score_sde_jax.workdir import TrainedClassifier, TrainedRun, load_classifier, load_workdir

__version__ = "0.1.0"

__all__ = [
    "BitsPerDimResult", "Experiment", "LikelihoodResult", "SDE", "SampleResult", "VESDE",
    "VPSDE", "ReverseSDE", "TrainState", "TrainedClassifier", "TrainedRun", "classifier",
    "controllable", "data", "denoising_score_matching", "get_score_fn", "get_sde_loss_fn",
    "keys", "likelihood", "load_classifier", "load_workdir", "make_optimizer", "make_train_step",
    "sampling", "subVPSDE",
]
