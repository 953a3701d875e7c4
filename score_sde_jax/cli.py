"""Flag parsing of the command-line tools (``run.py``, ``python -m score_sde_jax.convert``): every
mistake in the flags or the config file is one ``error:`` line and exit code 2, not a traceback.

absl parses ``--config`` (an ml_collections config file) and its ``--config.<field>=value``
overrides before ``main`` runs; an unknown field, a missing or broken config file, or a file
without ``get_config`` raise from inside that parsing. :func:`parse_flags` is the ``flags_parser``
given to ``absl.app.run``; :func:`flag_error` turns the exception into the line.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import sys

from absl import flags


def _config_path(argv) -> str | None:
  """The ``--config`` file of ``argv`` (the last one given, as absl takes)."""
  path = None
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      path = arg[len("--config="):]
    elif arg == "--config" and i + 1 < len(argv):
      path = argv[i + 1]
  return path


def _load_config(path: str):
  """``(config, None)`` from the config file's ``get_config()`` (the file the flag loads;
  ``path:argument`` passes ``argument``, as ml_collections does), or ``(None, error line)``."""
  args = ()
  if not os.path.isfile(path) and ":" in path and os.path.isfile(path.rsplit(":", 1)[0]):
    path, argument = path.rsplit(":", 1)
    args = (argument,)
  if not os.path.isfile(path):
    return None, f"--config={path}: no such file"
  try:
    spec = importlib.util.spec_from_file_location("_config_file", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  except SyntaxError as e:
    return None, f"--config={path}: syntax error at line {e.lineno}: {e.msg}"
  except Exception as e:  # noqa: BLE001 -- whatever the file raises on import
    return None, f"--config={path}: importing it failed ({type(e).__name__}: {e})"
  if not callable(getattr(module, "get_config", None)):
    return None, f"--config={path}: defines no get_config() (a config file returns its ConfigDict)"
  try:
    config = module.get_config(*args)
  except Exception as e:  # noqa: BLE001
    return None, f"--config={path}: get_config() failed ({type(e).__name__}: {e})"
  import ml_collections
  if not isinstance(config, ml_collections.ConfigDict):
    return None, (f"--config={path}: get_config() returned a {type(config).__name__}, not an "
                  f"ml_collections.ConfigDict (wrap it: return ml_collections.ConfigDict(...))")
  return config, None


def _unknown_override(config, argv) -> str | None:
  """The first ``--config.<path>=`` whose path is not in ``config``, with the known fields."""
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    path = arg[len("--config."):].split("=", 1)[0]
    node, walked = config, "config"
    for part in path.split("."):
      keys = list(node.keys()) if hasattr(node, "keys") else None
      if keys is None or part not in keys:
        from score_sde_jax.build.compat import RENAMED
        if path in RENAMED:
          return (f"--config.{path}: renamed; it is now "
                  f"{' and '.join('--config.' + p for p in RENAMED[path])}")
        known = f"its fields: {', '.join(sorted(keys))}" if keys else "it has no fields"
        return f"--config.{path}: {walked} has no field {part!r} ({known})"
      node, walked = node[part], f"{walked}.{part}"
  return None


def flag_error(exc: BaseException, argv) -> str:
  """One line for an exception raised while parsing ``argv``."""
  if isinstance(exc, flags.Error):
    return str(exc).splitlines()[0]
  path = _config_path(argv)
  if path is not None:
    config, error = _load_config(path)
    if error:
      return error
    unknown = _unknown_override(config, argv)
    if unknown:
      return unknown
  return f"{type(exc).__name__}: {exc}".splitlines()[0]


def parse_flags(argv):
  """``absl.app.run``'s ``flags_parser``: parses ``argv`` and loads ``--config`` now, so that any
  mistake in them is one ``error:`` line on stderr and exit code 2."""
  try:
    rest = flags.FLAGS(argv)
    path = _config_path(argv)
    # ml_collections keeps a config file that failed to load as a placeholder that raises on
    # first use, deep inside main: report it here.
    error = _load_config(path)[1] if path is not None else None
  except Exception as e:  # noqa: BLE001 -- absl, ml_collections and the config file raise anything
    error = flag_error(e, argv)
  if error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  return rest


def os_error_of(e):
  """The file-system error behind ``e`` (orbax and tensorstore wrap them), or None."""
  seen = set()
  while e is not None and id(e) not in seen:
    if isinstance(e, OSError) and (e.filename or e.errno in (
        errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)):
      return e
    seen.add(id(e))
    e = e.__cause__ or e.__context__
  return None


def describe_os_error(e: OSError) -> str:
  where = f": {e.filename}" if e.filename else ""
  text = f"{e.strerror or e}{where}"
  if e.errno in (errno.ENOSPC, errno.EDQUOT):
    text += ("; free some space and run the same command again (training resumes from the "
             "newest complete checkpoint)")
  return text


def exit_on_os_error(e: BaseException) -> None:
  """One ``error:`` line and exit code 1 when a file-system error is behind ``e``; else returns
  (the caller re-raises: anything else is a bug to see in full)."""
  os_error = os_error_of(e)
  if os_error is not None:
    print(f"error: {describe_os_error(os_error)}", file=sys.stderr)
    sys.exit(1)
