"""What a checkpoint's parameters mean (the SDE, the network, the time convention) and the data
they model."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from score_sde_jax import checks, losses, train
from score_sde_jax.data import get_data_inverse_scaler, get_data_scaler
from score_sde_jax.score import get_score_fn


@dataclasses.dataclass(frozen=True)
class ScoreModel:
  """The SDE, the score network and how its output is read: what a checkpoint's parameters mean."""

  sde: Any                          # the forward SDE (score_sde_jax.sde.SDE)
  network: Any                      # the Flax module
  data_shape: tuple                 # one example: (dim,) or (H, W, C)
  continuous: bool = True           # trained in continuous time (else on the SDE's chain)
  scale_by_sigma: bool = False      # VE only: score = output / sigma
  sde_name: str = ""                # the config's names (titles, ``--mode info``)
  network_name: str = ""

  def __post_init__(self):
    checks.check_fields(self, {"continuous": checks.BOOL, "scale_by_sigma": checks.BOOL})
    if not self.continuous:
      losses.check_discrete(self.sde)
    if getattr(self.network, "embedding_type", None) == "fourier" and not self.continuous:
      raise ValueError("embedding_type='fourier': needs continuous=True (it embeds log sigma(t))")
    self.sde.check_scale_by_sigma(self.scale_by_sigma)

  @property
  def is_image(self) -> bool:
    return len(self.data_shape) == 3

  def score_fn(self, params, *, flow: bool = False):
    """The score of ``params``. ``flow=True``: the score the probability-flow ODE uses (the SDE's
    ``flow_continuous``: discrete-time VP models are evaluated with the continuous convention,
    as the paper's ODE sampler and likelihood do)."""
    continuous = self.sde.flow_continuous(self.continuous) if flow else self.continuous
    return get_score_fn(self.sde, self.network, params, continuous,
                        scale_by_sigma=self.scale_by_sigma)

  def init_state(self, key, optimizer, mesh=None):
    """A fresh train state from ``key`` (replicated over ``mesh``)."""
    return train.init_state(key, self.network, self.data_shape, optimizer, mesh)

  def abstract_state(self, optimizer):
    """Shapes and dtypes of the train state, without allocating it (a restore target)."""
    return train.abstract_state(self.network, self.data_shape, optimizer)


@dataclasses.dataclass(frozen=True)
class Data:
  """The data set: its name, example shape and scaling; :meth:`load` reads it."""

  name: str                        # config.data.dataset
  shape: tuple                     # one example
  centered: bool = False           # model space [-1, 1] (else [0, 1] for images, as is for points)
  source: Callable[[], Any] = dataclasses.field(default=None, compare=False, repr=False)

  @property
  def is_image(self) -> bool:
    return len(self.shape) == 3

  def load(self):
    """The toy distribution or image data set (read now; nothing is downloaded)."""
    return self.source()

  @property
  def scaler(self):
    return get_data_scaler(self.centered)

  @property
  def inverse_scaler(self):
    return get_data_inverse_scaler(self.centered)
