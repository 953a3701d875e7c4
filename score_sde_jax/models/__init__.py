"""Score networks: Flax linen modules with explicit typed fields.

``MODELS`` maps a config's ``model.name`` to its module class.
"""

import jax
import numpy as np

from score_sde_jax.models.classifier import ClassifierMLP, WideResNet
from score_sde_jax.models.ddpm import DDPM
from score_sde_jax.models.mlp import ScoreMLP
from score_sde_jax.models.ncsnpp import NCSNpp
from score_sde_jax.models.refinenet import NCSN, NCSNv2, NCSNv2_128, NCSNv2_256

MODELS = {"mlp": ScoreMLP, "ncsnpp": NCSNpp, "ddpm": DDPM,
          # the baselines NCSN and NCSNv2 (RefineNets), under the paper's names
          "ncsn": NCSN, "ncsnv2_64": NCSNv2, "ncsnv2_128": NCSNv2_128, "ncsnv2_256": NCSNv2_256}
# Noise-conditional classifiers (``p_t(y | x_t)``), for class-conditional sampling.
CLASSIFIERS = {"classifier_mlp": ClassifierMLP, "wideresnet": WideResNet}


def get_model_class(name: str):
  """Module class registered under ``name``; an unknown name lists the known ones."""
  try:
    return MODELS[name]
  except KeyError:
    raise ValueError(f"name={name!r}: unknown model; known: {sorted(MODELS)}") from None


def param_shapes(model, *example_inputs):
  """The ``params`` tree of ``model`` on these inputs as shapes, without allocating them."""
  variables = jax.eval_shape(lambda *a: model.init(jax.random.PRNGKey(0), *a), *example_inputs)
  return variables["params"]


def param_count(model_or_params, *example_inputs) -> int:
  """Number of parameters: of a ``params`` tree (arrays or shapes), or of ``model`` on inputs."""
  tree = (param_shapes(model_or_params, *example_inputs) if example_inputs else model_or_params)
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


__all__ = ["CLASSIFIERS", "ClassifierMLP", "DDPM", "MODELS", "NCSN", "NCSNv2", "NCSNv2_128", "NCSNv2_256", "WideResNet", "NCSNpp", "ScoreMLP", "get_model_class", "param_count",
           "param_shapes"]
