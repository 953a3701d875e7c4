"""``--mode info``: the network and its parameter count, without allocating parameters."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp

from score_sde_jax import models
from score_sde_jax.experiment import Experiment


def info(exp: Experiment, workdir=None, *, stop=None):
  """Prints the network's top-level modules and parameter counts; the last line is one JSON
  object (``params``, ``model``, ``sde``, ``image_size``, ``data_shape``, ``top_level_modules``)."""
  del workdir, stop  # info reads nothing but the experiment
  m = exp.model
  shape = m.data_shape
  params = models.param_shapes(m.network, jax.ShapeDtypeStruct((1,) + shape, jnp.float32),
                               jax.ShapeDtypeStruct((1,), jnp.float32))
  n_params = models.param_count(params)
  print(f"model: {type(m.network).__name__} ({m.network_name}), input {shape}, "
        f"SDE {m.sde_name}, continuous={m.continuous}")
  for name, sub in params.items():
    print(f"  {name:<20s} {models.param_count(sub):>12,d}")
  print(f"  {'total':<20s} {n_params:>12,d}")
  summary = {"params": n_params, "model": m.network_name, "sde": m.sde_name,
             "image_size": shape[0] if m.is_image else None, "data_shape": list(shape),
             "top_level_modules": len(params)}
  print(json.dumps(summary))
  return summary
