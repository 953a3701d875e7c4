"""The settings of the modes beyond training and sampling: inpainting and the noise-conditional
classifier (its network, training and guidance)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from score_sde_jax import checks, train
from score_sde_jax.experiment.training import Optimizer


@dataclasses.dataclass(frozen=True)
class Inpaint:
  """``config.inpaint``: ``--mode inpaint``."""

  task: str = "inpaint"            # inpaint | colorize
  mask: str = "half"               # half | center | random
  num_examples: int = 8
  samples_per_example: int = 4
  refine_steps: int = 200        # Langevin steps at eps after the projection (0: the paper's)
  refine_snr: float = 0.16

  TASKS = ("inpaint", "colorize")
  MASKS = ("half", "center", "random")

  def __post_init__(self):
    checks.check_fields(self, {
        "task": checks.one_of(self.TASKS), "mask": checks.one_of(self.MASKS),
        "num_examples": checks.POSITIVE_INT, "samples_per_example": checks.POSITIVE_INT,
        "refine_steps": checks.NON_NEGATIVE_INT, "refine_snr": checks.POSITIVE})

  def check(self, shape: tuple) -> None:
    """The task and mask against the data they complete (examples of ``shape``)."""
    if self.task == "colorize" and (len(shape) != 3 or shape[-1] != 3):
      raise ValueError(f"task='colorize': needs RGB images (data.num_channels=3), not data of "
                       f"shape {shape}")
    if self.mask == "center" and len(shape) != 3:
      raise ValueError(f"mask='center': for images; data of shape {shape} take 'half' or "
                       f"'random'")
    if self.mask == "half" and len(shape) == 1 and shape[0] < 2:
      raise ValueError(f"mask='half': needs at least 2 coordinates, data.dim={shape[0]}")


@dataclasses.dataclass(frozen=True)
class Classifier:
  """``config.classifier``: the noise-conditional classifier and its training, and
  ``--mode conditional``'s guidance."""

  network: Any
  name: str                         # config.classifier.name
  workdir: str = ""                 # "": <workdir>/classifier
  batch_size: int = 128
  n_iters: int = 50000
  optimizer: Optimizer = Optimizer()
  ema_rate: float = 0.999
  ema_warmup: bool = False          # the score model's model.ema_warmup, for the classifier
  eps: float = 1e-5
  log_freq: int = 100
  eval_freq: int = 1000
  snapshot_freq: int = 5000
  max_to_keep: int = 3
  scale: float = 1.0
  classes: tuple = ()               # the classes --mode conditional samples (empty: all)
  samples_per_class: int = 8

  def __post_init__(self):
    checks.check_fields(self, {
        **{f: checks.POSITIVE_INT for f in ("batch_size", "n_iters", "log_freq", "eval_freq",
                                            "snapshot_freq", "max_to_keep", "samples_per_class")},
        "ema_rate": checks.RATE, "ema_warmup": checks.BOOL, "eps": checks.TIME,
        "scale": (checks.FINITE[0], "a finite number (1: the exact conditional)")})
    k = self.num_classes
    if not (isinstance(self.classes, tuple)
            and all(checks.NON_NEGATIVE_INT[0](c) for c in self.classes)):
      raise ValueError(f"classes={self.classes!r}: expected a tuple of class indices 0..{k - 1} "
                       f"(empty: all classes)")
    bad = [c for c in self.classes if c >= k]
    if bad:
      raise ValueError(f"classes={self.classes!r}: {bad} outside the classifier's classes "
                       f"0..{k - 1} (classifier.num_classes={k})")

  @property
  def sampled_classes(self) -> tuple:
    """The classes ``--mode conditional`` samples: ``classes``, or all of them."""
    return tuple(self.classes) if self.classes else tuple(range(self.num_classes))

  def check(self, shape: tuple, n_jitted_steps: int) -> None:
    """The network against the data it classifies (examples of ``shape``)."""
    is_images = len(shape) == 3
    if is_images != self.network.takes_images:
      raise ValueError(f"name={self.name!r}: the data are {'images' if is_images else 'vectors'}; "
                       f"expected {'wideresnet' if is_images else 'classifier_mlp'}")
    if is_images and shape[0] % 4:
      raise ValueError(f"image_size={shape[0]}: the WideResNet halves the image twice; needs a "
                       f"multiple of 4")
    if self.snapshot_freq % n_jitted_steps:
      raise ValueError(f"snapshot_freq={self.snapshot_freq}: must be a multiple of "
                       f"training.n_jitted_steps={n_jitted_steps}")

  @property
  def num_classes(self) -> int:
    return self.network.num_classes

  def directory(self, workdir: str) -> str:
    """Where the classifier of the run in ``workdir`` lives."""
    return (os.path.abspath(self.workdir) if self.workdir
            else os.path.join(os.path.abspath(workdir), "classifier"))

  def init_state(self, key, data_shape, optimizer, mesh=None):
    return train.init_state(key, self.network, data_shape, optimizer, mesh)

  def abstract_state(self, data_shape, optimizer):
    return train.abstract_state(self.network, data_shape, optimizer)
