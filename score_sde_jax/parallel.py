"""Device mesh and shardings over a 1-D ``data`` axis.

Other modules ask this one for shardings so none of them touches device lists.
A single device is the mesh of size 1.
"""

from __future__ import annotations

import jax
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh named ``data`` over ``devices`` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh) -> NamedSharding:
  """Every device holds the whole array (parameters, optimizer state, keys)."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh, batch_axis: int = 0) -> NamedSharding:
  """Split axis ``batch_axis`` of an array over the ``data`` axis of the mesh."""
  return NamedSharding(mesh, P(*([None] * batch_axis), DATA_AXIS))


def check_batch_size(batch_size: int, mesh, field: str = "training.batch_size") -> None:
  """A global batch must split evenly over the devices of the mesh."""
  n = mesh.shape[DATA_AXIS]
  if batch_size % n:
    raise ValueError(f"{field}={batch_size}: must be divisible by the number of devices ({n})")


def shard_batch(batch, mesh, batch_axis: int = 0):
  """Places a host batch on the mesh, split along ``batch_axis``."""
  return jax.device_put(batch, batch_sharding(mesh, batch_axis))
