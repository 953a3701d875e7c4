"""score_sde_jax: score-based generative modeling with SDEs in JAX/Flax."""

from score_sde_jax import compilation as _compilation

_compilation.add_xla_cpu_flags()   # before JAX's backends start (compilation.XLA_CPU_FLAGS)

from score_sde_jax import classifier, controllable, data, likelihood, sampling
from score_sde_jax.likelihood import BitsPerDimResult, LikelihoodResult
from score_sde_jax.losses import denoising_score_matching, get_sde_loss_fn
from score_sde_jax.sampling import SampleResult
from score_sde_jax.score import get_score_fn
from score_sde_jax.sde import SDE, VESDE, VPSDE, ReverseSDE, subVPSDE
from score_sde_jax.train import TrainState, make_optimizer, make_train_step
from score_sde_jax.workdir import TrainedClassifier, TrainedRun, load_classifier, load_workdir

__version__ = "0.1.0"

__all__ = [
    "BitsPerDimResult", "LikelihoodResult", "SDE", "SampleResult", "VESDE", "VPSDE", "ReverseSDE",
    "TrainState", "TrainedClassifier", "TrainedRun", "classifier", "controllable", "data",
    "denoising_score_matching", "get_score_fn", "get_sde_loss_fn", "likelihood", "load_classifier",
    "load_workdir", "make_optimizer", "make_train_step",
    "sampling", "subVPSDE",
]
