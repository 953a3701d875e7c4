"""``--mode info``: the network and its parameter count, without allocating parameters."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp

from score_sde_jax import build, models


def info(config, workdir=None):
  """Prints the network's top-level modules and parameter counts; the last line is one JSON
  object (``params``, ``model``, ``sde``, ``image_size``, ``data_shape``, ``top_level_modules``)."""
  del workdir  # info reads nothing but the config
  build.validate_model_config(config)
  model = build.get_model(config)
  shape = tuple(build.data_shape(config))
  params = models.param_shapes(model, jax.ShapeDtypeStruct((1,) + shape, jnp.float32),
                               jax.ShapeDtypeStruct((1,), jnp.float32))
  n_params = models.param_count(params)
  print(f"model: {type(model).__name__} ({config.model.name}), input {shape}, "
        f"SDE {config.training.sde}, continuous={config.training.continuous}")
  for name, sub in params.items():
    print(f"  {name:<20s} {models.param_count(sub):>12,d}")
  print(f"  {'total':<20s} {n_params:>12,d}")
  summary = {"params": n_params, "model": config.model.name, "sde": config.training.sde,
             "image_size": config.data.get("image_size"), "data_shape": list(shape),
             "top_level_modules": len(params)}
  print(json.dumps(summary))
  return summary
