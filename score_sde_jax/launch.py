"""How a process was asked to start, checked before JAX is imported: the multi-process settings
and the CPU device count. A leaf module (the standard library only), so ``run.py`` reports a
mistake in its flags at once; :mod:`score_sde_jax.parallel` acts on the checked values."""

from __future__ import annotations

import errno
import os
import socket


class DistributedError(RuntimeError):
  """Multi-process start-up failed (unreachable coordinator, bad process id, ...)."""


class CpuDevicesError(ValueError):
  """A ``cpu_devices`` value that cannot be used (not a positive count, or set too late)."""


class BackendError(RuntimeError):
  """JAX cannot start the platform that JAX_PLATFORMS names."""


def check_backend() -> None:
  """With ``JAX_PLATFORMS`` set, that JAX starts it (``cuda`` on a machine without a GPU failed
  deep inside the first JAX call with a page of traceback). Call it where JAX may start its
  backends (after ``jax.distributed`` is initialised)."""
  platforms = os.environ.get("JAX_PLATFORMS", "")
  if not platforms:
    return
  import jax
  try:
    jax.devices()
  except Exception as e:  # noqa: BLE001 -- RuntimeError or AssertionError, by JAX version
    detail = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise BackendError(f"JAX_PLATFORMS={platforms!r}: JAX could not start it ({detail}); unset "
                       f"JAX_PLATFORMS (or set it to cpu), or install the JAX build for that "
                       f"accelerator") from None


def port_free(port: int) -> bool:
  """Whether the coordinator service could listen on ``port`` (it binds every address)."""
  for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
    try:
      with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
      return True
    except OSError as e:
      if e.errno == errno.EADDRINUSE:
        return False
  return True


def check_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                      process_id: int | None = None, *, timeout=300) -> tuple[str, int] | None:
  """Checks the arguments of :func:`score_sde_jax.parallel.initialize` (all three or none, a
  positive timeout and process count, a process id in range, ``host:port``, and for process 0
  a free port) and returns the coordinator's ``(host, port)``, or None when JAX is to detect the
  cluster. Raises :class:`DistributedError` naming the argument."""
  given = [coordinator_address is not None, num_processes is not None, process_id is not None]
  if any(given) and not all(given):
    raise DistributedError(
        f"coordinator_address={coordinator_address!r}, num_processes={num_processes!r}, "
        f"process_id={process_id!r}: give all three, or none to let JAX detect the cluster")
  if not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0):
    raise DistributedError(f"timeout={timeout!r}: must be a positive number of seconds")
  if coordinator_address is None:
    return None
  if not (isinstance(num_processes, int) and num_processes >= 1):
    raise DistributedError(f"num_processes={num_processes!r}: must be a positive integer")
  if not (isinstance(process_id, int) and 0 <= process_id < num_processes):
    raise DistributedError(f"process_id={process_id!r}: must be in [0, {num_processes - 1}] "
                           f"for num_processes={num_processes}")
  host, sep, port = coordinator_address.rpartition(":")
  if not sep or not host or not port.isdigit():
    raise DistributedError(f"coordinator_address={coordinator_address!r}: expected host:port")
  if process_id == 0 and not port_free(int(port)):
    raise DistributedError(f"coordinator_address={coordinator_address!r}: port {port} is "
                           f"already in use on this machine; choose another port")
  return host.strip("[]"), int(port)


def cpu_device_count(count, name: str = "cpu_devices") -> int:
  """The number of CPU devices ``count`` asks for: a positive integer, or ``"auto"`` (one per
  core this process may run on). Raises :class:`CpuDevicesError` naming ``name``."""
  if count == "auto":
    return (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count()) or 1
  try:
    n = int(count)
  except (TypeError, ValueError):
    n = 0
  if n < 1 or str(n) != str(count).strip():
    raise CpuDevicesError(f"{name}={count!r}: expected a positive number of devices or 'auto'")
  return n
