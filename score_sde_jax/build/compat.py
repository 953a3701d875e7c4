"""What a checkpoint must agree with, as ``{config path: value}`` views of configs (the run's, and
the one saved with the checkpoint), and saved configs brought up to today's field names."""

from __future__ import annotations

import dataclasses

from score_sde_jax.build.fields import ConfigError, get
from score_sde_jax.build.network import classifier_args, model_args, sde_paths
from score_sde_jax.experiment import Views
from score_sde_jax.sde import SDES

# Fields renamed since a config was saved: old path -> new paths (the sampler options moved into
# one section per sampler; dpm_solver and edm each have their own copy of the step settings).
RENAMED = {
    "model.activation": ("model.nonlinearity",),
    "sampling.ode_solver": ("sampling.ode.solver",),
    "sampling.rtol": ("sampling.ode.rtol",),
    "sampling.atol": ("sampling.ode.atol",),
    "sampling.ode_num_steps": ("sampling.ode.num_steps",),
    "sampling.sde_num_steps": ("sampling.sde.num_steps",),
    "sampling.fast_num_steps": ("sampling.dpm_solver.num_steps", "sampling.edm.num_steps"),
    "sampling.fast_schedule": ("sampling.dpm_solver.schedule", "sampling.edm.schedule"),
    "sampling.fast_sigma_min": ("sampling.dpm_solver.sigma_min", "sampling.edm.sigma_min"),
    "sampling.fast_sigma_max": ("sampling.dpm_solver.sigma_max", "sampling.edm.sigma_max"),
    "sampling.dpm_order": ("sampling.dpm_solver.order",),
    "sampling.edm_churn": ("sampling.edm.churn",),
    "sampling.edm_s_tmin": ("sampling.edm.s_tmin",),
    "sampling.edm_s_tmax": ("sampling.edm.s_tmax",),
    "sampling.edm_s_noise": ("sampling.edm.s_noise",),
}


def _plain(value):
  """Tuples as lists, recursively: a config saved as JSON comes back with lists."""
  if isinstance(value, (tuple, list)):
    return [_plain(v) for v in value]
  if hasattr(value, "items"):
    return {k: _plain(v) for k, v in value.items()}
  return value


def upgrade_saved_config(config_dict) -> dict:
  """A config saved by an earlier version, in today's field names (:data:`RENAMED`), as a plain
  dict with lists for tuples."""
  d = _plain(config_dict)
  for old, new_paths in RENAMED.items():
    section, name = old.rsplit(".", 1)
    parent = d.get(section)
    if not isinstance(parent, dict) or name not in parent:
      continue
    value = parent.pop(name)
    for new in new_paths:
      *sections, leaf = new.split(".")
      node = d
      for part in sections:
        node = node.setdefault(part, {})
      node.setdefault(leaf, value)
  return d


def renamed_fields(config) -> list[tuple[str, tuple]]:
  """``(old path, new paths)`` of the renamed fields a config still has."""
  return [(old, new) for old, new in RENAMED.items() if get(config, old, None) is not None]


@dataclasses.dataclass(frozen=True)
class Kind:
  """A config value compared by the kind of thing it makes (``kind``), not by the value itself:
  the optimizer's state has one structure for every ``grad_clip >= 0`` and another without
  clipping, so only a change of kind stops a checkpoint from restoring."""
  value: object = dataclasses.field(compare=False)
  kind: str

  def __repr__(self):
    return f"{self.value!r} ({self.kind})"


def optimizer_view(d: dict, section: str = "optim") -> dict:
  """The fields of an optimizer section (``optim``, ``classifier``) that shape its state:
  clipping on or off, Adam or AdamW."""
  o = d.get(section, {})
  clip, decay = o.get("grad_clip"), o.get("weight_decay")
  if not isinstance(clip, (int, float)) or not isinstance(decay, (int, float)):
    return {}
  return {f"{section}.grad_clip": Kind(clip, "clipping on" if clip >= 0 else "clipping off"),
          f"{section}.weight_decay": Kind(decay, "AdamW" if decay > 0 else "Adam")}


def model_view(d: dict) -> dict:
  """The score model: the SDE, the time convention, the network's own fields, the data's shape
  and scaling (fields nothing reads do not count)."""
  paths = ["training.sde", "training.continuous", "model.name", "model.scale_by_sigma",
           "data.centered", "data.image_size", "data.dim"]
  try:
    paths += list(sde_paths(SDES[d["training"]["sde"]]).values())
    cls, model_paths, values = model_args(d)
    paths += [model_paths[arg] for arg in values if arg not in cls.unused_fields(values)]
  except (KeyError, ConfigError):
    pass  # an unknown SDE or network: the names alone differ
  return {path: get(d, path, None) for path in dict.fromkeys(paths)}


def data_view(d: dict) -> dict:
  """What resumed training must agree with unless ``training.resume_new_data`` is set: the data
  set and where it is read from."""
  return {path: get(d, path, None) for path in ("data.dataset", "data.path")}


def classifier_data_view(d: dict) -> dict:
  """What a classifier and the score model it guides must agree on: the SDE and its parameters
  (its discretisation aside: the classifier sees continuous time), and the data set, shape and
  scaling."""
  paths = ["training.sde", "data.dataset", "data.centered", "data.image_size", "data.num_channels",
           "data.dim"]
  try:
    paths += [p for p in sde_paths(SDES[d["training"]["sde"]]).values() if p != "model.num_scales"]
  except KeyError:
    pass
  return {path: get(d, path, None) for path in paths}


def classifier_view(d: dict) -> dict:
  """A classifier checkpoint: the data view and the classifier network's own fields."""
  view = classifier_data_view(d)
  try:
    _, paths, values = classifier_args(d)
    view.update({paths[arg]: get(d, paths[arg], None) for arg in values})
    view["classifier.name"] = d["classifier"]["name"]
  except (KeyError, ConfigError):
    view["classifier.name"] = get(d, "classifier.name", None)
  return view


def views(config_dict) -> Views:
  """Every view of a config (the run's, or one saved with a checkpoint)."""
  d = upgrade_saved_config(config_dict)
  return Views(model=model_view(d), optimizer=optimizer_view(d), data=data_view(d),
               classifier_data=classifier_data_view(d), classifier=classifier_view(d),
               classifier_optimizer=optimizer_view(d, "classifier"))
