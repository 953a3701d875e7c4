"""NCSN's and NCSNv2's released PyTorch checkpoints (ermongroup/ncsn, ermongroup/ncsnv2) as Flax
parameters of :mod:`score_sde_jax.models.refinenet`; used by ``score_sde_jax.convert``.

A checkpoint is what those repositories' runners ``torch.save``: the list ``[state_dict,
optimizer state]`` (NCSN) or ``[state_dict, optimizer state, epoch, step, EMA shadow]`` (NCSNv2;
the EMA entry only when ``model.ema``), in the legacy format of torch 1.x, the state dict keyed
``module.<attribute path>`` (``nn.DataParallel``). Each tensor maps onto the Flax tree by name
(``module.res2.0.conv2.conv.weight`` -> ``res2_0/conv2/conv/kernel``: ModuleList indices joined
to their list's name, OIHW -> HWIO, ``embed.weight`` -> ``embed/embedding``), strictly: every
tensor used once with the right shape and every parameter filled, or one error listing what did
not match.

The noise levels are not in NCSN's weights, so they are checked against the run's
``config.yml`` (the argparse namespace that the runner dumped beside its checkpoints; found
there, or given): ``model.sigma_begin`` / ``sigma_end`` / ``num_classes`` must be the config's
``model.sigma_max`` / ``sigma_min`` / ``num_scales``, and ``ngf``, the channels, the image size,
the normalisation and the activation must agree. NCSNv2's weights also hold its ladder (the
``sigmas`` buffer), checked against the config's.
"""

from __future__ import annotations

import os
import re

import numpy as np
import yaml

from score_sde_jax import state_dict as state_dict_lib
from score_sde_jax.torch_pickle import CheckpointFormatError


class RefineNetConversionError(ValueError):
  """The checkpoint (or its config.yml) does not fit the network the config builds."""


_INDEX = re.compile(r"^\d+$")


def flax_path(key: str) -> tuple:
  """``module.res2.0.conv2.conv.weight`` -> ``('res2_0', 'conv2', 'conv', 'weight')``."""
  parts = key.split(".")
  if parts[0] == "module":
    parts = parts[1:]
  out = []
  for part in parts:
    if _INDEX.match(part) and out:
      out[-1] = f"{out[-1]}_{part}"
    else:
      out.append(part)
  return tuple(out)


def _flax_path_and_array(key: str, value: np.ndarray):
  parts = list(flax_path(key))
  if parts[-1] == "weight":
    if value.ndim == 4:
      parts[-1], value = "kernel", value.transpose(2, 3, 1, 0)   # OIHW -> HWIO
    elif value.ndim == 2 and len(parts) > 1 and parts[-2] == "embed":
      parts[-1] = "embedding"
  return tuple(parts), np.ascontiguousarray(value, dtype=np.float32)


def map_state_dict(state_dict: dict, expected: dict, what: str = "state dict") -> dict:
  """``{flax path: array}`` from a state dict (the ``sigmas`` buffer aside), strictly against
  ``expected`` (``{flax path: shape}``)."""
  return state_dict_lib.match(state_dict, expected, _flax_path_and_array, what=what,
                              error=RefineNetConversionError,
                              skip=lambda key: flax_path(key) == ("sigmas",))


def is_refinenet_checkpoint(obj) -> bool:
  return (isinstance(obj, (list, tuple)) and len(obj) >= 2 and isinstance(obj[0], dict)
          and any(flax_path(k)[:1] == ("begin_conv",) for k in obj[0]))


def split_checkpoint(obj, path: str):
  """``(state_dict, ema_shadow or None, step)`` of an ermongroup runner's checkpoint list."""
  if not is_refinenet_checkpoint(obj):
    found = type(obj).__name__ if not isinstance(obj, dict) else f"a dict with {sorted(obj)[:6]}"
    raise CheckpointFormatError(f"{path}: expected the list an NCSN / NCSNv2 runner saves "
                                f"([state_dict, optimizer state, ...] with 'module.begin_conv."
                                f"weight'), found {found}")
  state_dict = obj[0]
  ema = obj[4] if len(obj) >= 5 and isinstance(obj[4], dict) else None
  step = obj[3] if len(obj) >= 4 and isinstance(obj[3], int) else None
  if step is None:   # NCSN's list has no step: Adam's own count, where it has one
    steps = [s.get("step") for s in (obj[1].get("state") or {}).values()
             if isinstance(obj[1], dict) and isinstance(s, dict)]
    steps = [int(np.asarray(s)) for s in steps if s is not None]
    step = max(steps) if steps else 0
  return state_dict, ema, step


# --- config.yml ----------------------------------------------------------------------------------

class _NamespaceLoader(yaml.SafeLoader):
  """Reads ``yaml.dump`` of an argparse namespace (``!!python/object:argparse.Namespace``) as
  dicts; any other Python object tag (``torch.device``) becomes None. Nothing is constructed."""


_NamespaceLoader.add_multi_constructor(
    "tag:yaml.org,2002:python/object:",
    lambda loader, suffix, node: loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.MappingNode) else None)
_NamespaceLoader.add_multi_constructor(
    "tag:yaml.org,2002:python/object/apply:", lambda loader, suffix, node: None)
_NamespaceLoader.add_multi_constructor(
    "tag:yaml.org,2002:python/object/new:", lambda loader, suffix, node: None)


def read_run_config(path: str) -> dict:
  """An ermongroup ``config.yml`` (a dumped namespace, or a plain YAML config) as a dict."""
  try:
    with open(path) as f:
      d = yaml.load(f, Loader=_NamespaceLoader)  # noqa: S506 -- a SafeLoader subclass
  except OSError as e:
    raise RefineNetConversionError(f"--checkpoint_config={path!r}: {e.strerror}") from None
  except yaml.YAMLError as e:
    raise RefineNetConversionError(f"--checkpoint_config={path!r}: not readable YAML "
                                   f"({e})") from None
  if not (isinstance(d, dict) and isinstance(d.get("model"), dict)
          and isinstance(d.get("data"), dict)):
    raise RefineNetConversionError(f"--checkpoint_config={path!r}: expected an NCSN / NCSNv2 "
                                   f"config with 'model' and 'data' sections")
  return d


def find_run_config(checkpoint_path: str, given: str | None):
  """The ``config.yml`` to check against: ``given``, else the one beside the checkpoint, else
  None."""
  if given:
    return given
  beside = os.path.join(os.path.dirname(os.path.abspath(checkpoint_path)), "config.yml")
  return beside if os.path.isfile(beside) else None


def geometric_ladder(sigma_max: float, sigma_min: float, n: int) -> np.ndarray:
  """NCSN's noise levels, largest first (``get_sigmas`` with ``sigma_dist='geometric'``)."""
  return np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), n))


def check_against_run_config(run: dict, ours: dict, path: str) -> None:
  """Every field of the run's ``config.yml`` that shapes the network or the ladder, against this
  library's config (``ours``: ``{'model.nf': ..., ...}``); one error listing each mismatch."""
  model, data = run["model"], run["data"]
  pairs = [("model.ngf", model.get("ngf"), "model.nf", ours["model.nf"]),
           ("model.num_classes", model.get("num_classes"), "model.num_scales",
            ours["model.num_scales"]),
           ("data.channels", data.get("channels"), "data.num_channels", ours["data.num_channels"]),
           ("data.image_size", data.get("image_size"), "data.image_size", ours["data.image_size"])]
  problems = [f"  {theirs}={a!r} in {path}, config.{mine}={b!r}" for theirs, a, mine, b in pairs
              if a is not None and a != b]
  for theirs, mine in (("model.sigma_begin", "model.sigma_max"),
                       ("model.sigma_end", "model.sigma_min")):
    a, b = model.get(theirs.split(".")[1]), ours[mine]
    if a is None or not np.isclose(float(a), float(b), rtol=1e-6, atol=0):
      problems.append(f"  {theirs}={a!r} in {path}, config.{mine}={b!r}")
  if model.get("sigma_dist", "geometric") != "geometric":
    problems.append(f"  model.sigma_dist={model['sigma_dist']!r} in {path}: only the geometric "
                    f"ladder is a VE SDE's (configs have sigma_min, sigma_max, num_scales)")
  for theirs, mine in (("normalization", "model.normalization"),
                       ("nonlinearity", "model.nonlinearity")):
    if theirs in model and model[theirs] != ours[mine]:
      problems.append(f"  model.{theirs}={model[theirs]!r} in {path}, config.{mine}={ours[mine]!r}")
  if data.get("logit_transform"):
    problems.append(f"  data.logit_transform=True in {path}: a model of logit-transformed data; "
                    f"this library has no such data transform")
  centered = bool(data.get("rescaled", False))
  if centered != ours["data.centered"]:
    problems.append(f"  data.rescaled={data.get('rescaled', False)!r} in {path} (inputs in "
                    f"{'[-1, 1]' if centered else '[0, 1]'}), config.data.centered="
                    f"{ours['data.centered']!r}")
  if problems:
    raise RefineNetConversionError(f"the checkpoint's run config does not match the config "
                                   f"({len(problems)}):\n" + "\n".join(problems))


def check_sigmas_buffer(state_dict: dict, ours: dict) -> None:
  """NCSNv2's ``sigmas`` buffer against the config's ladder."""
  buffer = [v for k, v in state_dict.items() if flax_path(k) == ("sigmas",)]
  if not buffer:
    return
  sigmas = np.asarray(buffer[0], np.float64)
  expected = geometric_ladder(ours["model.sigma_max"], ours["model.sigma_min"],
                              ours["model.num_scales"])
  if sigmas.shape != expected.shape or not np.allclose(sigmas, expected, rtol=1e-5, atol=0):
    raise RefineNetConversionError(
        f"the checkpoint's noise levels (its 'sigmas' buffer: {len(sigmas)} levels, "
        f"{sigmas[0]:.6g} .. {sigmas[-1]:.6g}) are not the config's (model.num_scales="
        f"{ours['model.num_scales']}, model.sigma_max={ours['model.sigma_max']}, "
        f"model.sigma_min={ours['model.sigma_min']})")
