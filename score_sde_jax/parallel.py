"""Device mesh, batch sharding and multi-host start-up over a 1-D ``data`` axis.

Other modules ask this one for meshes, shardings and host copies so none of
them touches device lists. One program runs on every process (JAX's
multi-controller model): each process loads its own rows of every global
batch (:func:`local_rows`), :func:`shard_batch` assembles them into one global
array split over the ``data`` axis, and the train state is replicated. A
single device is the mesh of size 1; a single process is the usual case of
everything here.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from score_sde_jax import launch
from score_sde_jax.launch import CpuDevicesError, DistributedError  # noqa: F401 (raised here)

DATA_AXIS = "data"


# --- Multi-process start-up ---------------------------------------------------------------------

def _wait_for_port(host: str, port: int, timeout: float) -> bool:
  deadline = time.monotonic() + timeout
  while True:
    try:
      with socket.create_connection((host, port), timeout=min(2.0, max(timeout, 0.1))):
        return True
    except OSError:
      if time.monotonic() >= deadline:
        return False
      time.sleep(0.25)


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, timeout: int = 300,
               log=print, names: dict | None = None) -> None:
  """Starts JAX's distributed runtime (``jax.distributed.initialize``) with clear errors.

  With all three arguments, a process group of ``num_processes`` on any
  machines: process 0 runs the coordinator at ``coordinator_address``
  (``host:port``) and every process connects to it. With none of them, JAX
  detects the cluster (Cloud TPU pods, SLURM, Open MPI, Kubernetes) or reads
  ``JAX_COORDINATOR_ADDRESS``. Must run before any other JAX call.

  XLA's runtime aborts the process (no Python exception, a C++ stack trace)
  when the processes do not all connect in time. So processes other than 0
  first wait at most ``timeout`` seconds for the coordinator's port to accept
  connections and raise :class:`DistributedError` naming the address if it
  never does; and while the processes gather, a watchdog ends the process
  after ``timeout`` seconds with one line naming the address and the
  missing processes (exit status 2) before XLA's own, later deadline.

  ``names`` maps argument names to what the caller calls them in messages
  (``run.py`` passes its flags, ``{"timeout": "--distributed_timeout", ...}``).
  """
  names = {arg: (names or {}).get(arg, arg)
           for arg in ("coordinator_address", "num_processes", "process_id", "timeout")}
  coordinator = launch.check_distributed(coordinator_address, num_processes, process_id,
                                         timeout=timeout)
  if jax.distributed.is_initialized():
    raise DistributedError("jax.distributed is already initialized in this process")
  if coordinator is not None:
    host, port = coordinator
    if process_id != 0 and not _wait_for_port(host, port, timeout):
      raise DistributedError(
          f"coordinator_address={coordinator_address!r}: nothing accepted a connection within "
          f"{timeout} s; start process 0 (the coordinator) there, or fix the address")
    log(f"process {process_id}/{num_processes}: connecting to {coordinator_address} "
        f"(waiting up to {timeout} s for all processes)")
  else:
    log(f"jax.distributed: detecting the cluster (waiting up to {timeout} s)")
  done = threading.Event()

  def watchdog():
    if not done.wait(timeout):
      where = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "(detected)")
      print(f"error: not all {num_processes or ''} processes connected to the coordinator "
            f"{where} within {timeout} s ({names['timeout']}); start every process with the "
            f"same {names['coordinator_address']} and {names['num_processes']}, and distinct "
            f"{names['process_id']}", file=sys.stderr, flush=True)
      os._exit(2)

  threading.Thread(target=watchdog, name="jax-distributed-watchdog", daemon=True).start()
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=int(timeout) + 60)
  except (ValueError, TypeError, RuntimeError) as e:
    hint = ("" if coordinator_address is not None else
            "; no cluster was detected (Cloud TPU, SLURM, Open MPI, Kubernetes, "
            f"JAX_COORDINATOR_ADDRESS): give {names['coordinator_address']}, "
            f"{names['num_processes']} and {names['process_id']}")
    raise DistributedError(f"jax.distributed.initialize failed: {str(e).rstrip('.')}{hint}") from None
  finally:
    done.set()


def split_cpu(count, name: str = "cpu_devices") -> int:
  """Makes JAX's CPU backend ``count`` devices (``"auto"``: one per core this process may run
  on) and returns the count; must run before any JAX computation.

  The data-parallel mesh of ``run.py`` (``make_mesh``: every device) then runs one shard of each
  batch per core. XLA:CPU's own threading inside one device keeps the cores less busy on small
  networks: on 2 cores, DDPM++ 32x32 nf 32 at batch 16 took 0.267 s per train step and 0.046 s
  per score call as 2 devices against 0.280 and 0.058 s as one; the paper's full networks did
  not gain (DDPM++ at batch 8: 2.78 against 2.24 s; README, "Speed of the paper's networks").
  Other backends are not affected; their devices stay as they are.
  ``name`` is what messages call the setting (``run.py``: ``--cpu_devices``).
  """
  n = launch.cpu_device_count(count, name)
  try:
    jax.config.update("jax_num_cpu_devices", n)
  except RuntimeError:
    raise CpuDevicesError(f"{name}={count!r}: JAX's backends already started in this process; "
                          "set it before the first JAX computation") from None
  return n


def is_main_process() -> bool:
  """Process 0 writes logs, metrics, figures and sample files."""
  return jax.process_index() == 0


def sync(name: str) -> None:
  """Every process waits here for the others (nothing to wait for with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


# --- Meshes and shardings -----------------------------------------------------------------------

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


def num_shards(mesh) -> int:
  return mesh.shape[DATA_AXIS]


def check_batch_size(batch_size: int, mesh, field: str = "batch_size") -> None:
  """A global batch must split evenly over the devices of the mesh."""
  n = num_shards(mesh)
  if batch_size % n:
    raise ValueError(f"{field}={batch_size}: must be divisible by the number of devices ({n}"
                     f"{f' over {jax.process_count()} processes' if jax.process_count() > 1 else ''})")


def check_mesh(batch_size: int, mesh, name: str = "batch") -> None:
  """``mesh=None`` is one device; otherwise the batch must split evenly over the mesh."""
  if mesh is not None:
    check_batch_size(batch_size, mesh, name)


def constrain_batch(x, mesh):
  """Inside ``jit``: split the batch axis of ``x`` over the mesh's ``data`` axis (no-op without one)."""
  if mesh is None:
    return x
  return jax.lax.with_sharding_constraint(x, batch_sharding(mesh))


def local_rows(mesh, global_batch: int) -> slice:
  """The rows of a global batch that this process's devices hold, as one contiguous slice.

  Each process loads only these rows (disjoint across processes, together the
  whole batch), derived from the mesh so device order never has to be assumed.
  """
  check_batch_size(global_batch, mesh, "batch")
  index_map = batch_sharding(mesh).addressable_devices_indices_map((global_batch,))
  starts = sorted({idx[0].start or 0 for idx in index_map.values()})
  stops = sorted({global_batch if idx[0].stop is None else idx[0].stop
                  for idx in index_map.values()})
  rows = slice(starts[0], stops[-1])
  if (rows.stop - rows.start) * jax.process_count() != global_batch:
    raise ValueError(f"this process's devices do not hold one contiguous block of the batch "
                     f"({sorted(index_map.values(), key=str)}); use parallel.make_mesh()")
  return rows


def shard_batch(local_batch, mesh, batch_axis: int = 0):
  """A global array split along ``batch_axis`` from this process's rows of it.

  ``local_batch`` holds the rows :func:`local_rows` names (with one process:
  the whole batch). Built with ``jax.make_array_from_process_local_data``.
  """
  sharding = batch_sharding(mesh, batch_axis)

  def put(x):
    x = np.asarray(x)
    global_shape = list(x.shape)
    global_shape[batch_axis] *= jax.process_count()
    return jax.make_array_from_process_local_data(sharding, x, tuple(global_shape))

  return jax.tree.map(put, local_batch)


def replicate(tree, mesh):
  """Places host values (the same on every process) on every device of the mesh."""
  sharding = replicated(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_callback(
      np.shape(x), sharding, lambda idx, x=np.asarray(x): x[idx]), tree)


def to_host(tree):
  """Numpy copies on every process: replicated arrays from a local shard, sharded ones gathered."""
  def get(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return np.asarray(x)
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils  # only needed with several processes
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return jax.tree.map(get, tree)


def map_shards(fn, mesh, batched: tuple, shared: tuple = ()):
  """``fn(*batched, *shared)`` run by each device on its own rows of ``batched``.

  For per-example work with data-dependent control flow (adaptive ODE
  solves): under ``jax.shard_map`` each device runs its own loops, so no
  collective makes a device wait for another's step count. ``shared``
  arguments (parameters, tolerances; any pytrees) are replicated; every
  output is split along its first axis. Without a mesh, ``fn`` is called directly.
  """
  if mesh is None:
    return fn(*batched, *shared)
  in_specs = (P(DATA_AXIS),) * len(batched) + (P(),) * len(shared)
  return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=P(DATA_AXIS),
                       check_vma=False)(*batched, *shared)
