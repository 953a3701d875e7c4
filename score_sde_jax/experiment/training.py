"""How a score model is trained and evaluated: the optimizer, the objective, the loop's settings
and the evaluation's."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from score_sde_jax import checks, likelihood, losses, train

if TYPE_CHECKING:
  from score_sde_jax.experiment.model import ScoreModel


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """Global-norm clipping and Adam(W) with linear warm-up and optionally a cosine decay to 0 at
  the last step (:func:`train.make_optimizer`)."""

  lr: float = 2e-4
  warmup: int = 5000
  grad_clip: float = 1.0           # < 0: no clipping
  beta1: float = 0.9
  eps: float = 1e-8
  weight_decay: float = 0.0        # > 0: AdamW
  optimizer: str = "Adam"          # the paper's name; Adam(W) is the only one
  lr_decay: str = "none"           # none (the paper) | cosine: to 0 at total_steps
  total_steps: int = 0             # the run's last step (training.n_iters)

  def __post_init__(self):
    checks.check_fields(self, {
        "optimizer": checks.one_of(("Adam",)), "lr": checks.POSITIVE, "beta1": checks.RATE,
        "lr_decay": checks.one_of(train.LR_DECAYS), "total_steps": checks.NON_NEGATIVE_INT,
        "eps": checks.POSITIVE, "weight_decay": checks.NON_NEGATIVE,
        "warmup": checks.NON_NEGATIVE_INT,
        "grad_clip": (lambda v: checks.FINITE[0](v) and v != 0,
                      "a finite number > 0, or < 0 for no clipping (0 would zero every update)")})
    if self.lr_decay != "none" and self.total_steps <= 0:
      raise ValueError(f"optim.lr_decay={self.lr_decay!r} decays the learning rate to 0 at the "
                       f"run's last step, training.n_iters={self.total_steps}: it must be > 0")

  def make(self):
    return train.make_optimizer(self.lr, self.warmup, self.grad_clip, beta1=self.beta1,
                                eps=self.eps, weight_decay=self.weight_decay,
                                decay=self.lr_decay, total_steps=self.total_steps)

  def lr_schedule(self):
    return train.learning_rate_schedule(self.lr, self.warmup, self.lr_decay, self.total_steps)


@dataclasses.dataclass(frozen=True)
class Objective:
  """Denoising score matching (continuous time), or the discrete SMLD / DDPM losses."""

  reduce_mean: bool = False
  likelihood_weighting: bool = False
  importance_sampling: bool = False   # t drawn in proportion to g^2 / std^2 (ScoreFlow)
  eps: float = losses.TIME_EPS      # smallest training time

  def __post_init__(self):
    checks.check_fields(self, {"reduce_mean": checks.BOOL, "likelihood_weighting": checks.BOOL,
                               "importance_sampling": checks.BOOL, "eps": checks.TIME})
    if self.importance_sampling and not self.likelihood_weighting:
      raise ValueError("training.importance_sampling=True: draws t in proportion to the "
                       "likelihood weight g(t)^2 / std(t)^2; it needs "
                       "training.likelihood_weighting=True")

  def loss_fn(self, model: ScoreModel, *, train_mode: bool):
    """``loss_fn(key, params, batch) -> scalar`` of ``model``'s network."""
    if not model.continuous:
      if self.likelihood_weighting:
        raise ValueError("training.likelihood_weighting=True: defined for continuous-time "
                         "training (training.continuous=True), not the discrete SMLD / DDPM "
                         "losses (as the original)")
      return losses.get_discrete_loss_fn(model.sde, model.network, train=train_mode,
                                         reduce_mean=self.reduce_mean,
                                         scale_by_sigma=model.scale_by_sigma)
    return losses.get_sde_loss_fn(model.sde, model.network, train=train_mode,
                                  reduce_mean=self.reduce_mean, continuous=True,
                                  likelihood_weighting=self.likelihood_weighting,
                                  importance_sampling=self.importance_sampling, eps=self.eps,
                                  scale_by_sigma=model.scale_by_sigma)


@dataclasses.dataclass(frozen=True)
class Training:
  """The training loop's settings (``config.training``, ``config.optim``, ``model.ema_rate``,
  ``model.ema_warmup``)."""

  batch_size: int
  n_iters: int
  n_jitted_steps: int = 1
  log_freq: int = 100
  eval_freq: int = 500
  snapshot_freq: int = 10000
  snapshot_freq_for_preemption: int = 1000
  max_to_keep: int = 3
  snapshot_sampling: bool = False
  resume_new_data: bool = False
  ema_rate: float = 0.999
  ema_warmup: bool = False     # train.ema_decay: TF's warm-up of the decay (False: the paper)
  objective: Objective = Objective()

  def __post_init__(self):
    checks.check_fields(self, {
        **{f: checks.POSITIVE_INT for f in ("batch_size", "n_iters", "n_jitted_steps", "log_freq",
                                            "eval_freq", "snapshot_freq",
                                            "snapshot_freq_for_preemption", "max_to_keep")},
        "snapshot_sampling": checks.BOOL, "resume_new_data": checks.BOOL,
        "ema_rate": checks.RATE, "ema_warmup": checks.BOOL})
    k = self.n_jitted_steps
    if self.snapshot_freq_for_preemption % k or self.snapshot_freq % k:
      raise ValueError(
          f"snapshot_freq_for_preemption={self.snapshot_freq_for_preemption} and snapshot_freq="
          f"{self.snapshot_freq}: must be multiples of n_jitted_steps={k} (checkpoints are taken "
          f"between jitted calls)")

  def checkpoint_due(self, step: int) -> bool:
    return step % self.snapshot_freq_for_preemption == 0 or step % self.snapshot_freq == 0


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """``config.eval``: evaluation during training, ``--mode sample`` and ``--mode eval``."""

  batch_size: int
  num_batches: int = 1              # eval-loss batches per evaluation during training
  enable_loss: bool = True
  num_samples: int = 1000           # --mode sample
  enable_bpd: bool = True           # --mode eval: the likelihood
  num_eval_examples: int = 1000
  divergence: str = "rademacher"
  rtol: float = 1e-5
  atol: float = 1e-5
  likelihood_eps: float = 1e-5
  bpd_repeats: int = 1              # dequantization rounds for bits/dim
  bound_num_times: int = 1000       # ScoreFlow's bound beside the likelihood: time samples (0: off)
  bound_importance_sampling: bool = True
  figures: bool = True              # False: the modes write their metrics and samples, no figures
  # Sample quality (image data): FID and KID of num_samples samples in --mode eval.
  enable_sampling: bool = False     # the original's name: sample and report FID / KID
  fid_stats: str = ""               # reference statistics (.npz); "": <workdir>/fid_stats/<data>_<split>.npz
  fid_split: str = "train"          # --mode fid_stats: the split whose statistics it writes
  fid_num_images: int = 0           # --mode fid_stats: the first n images of the split (0: all)
  inception_batch_size: int = 100   # images per Inception call (299 x 299 each)
  kid_subset_size: int = 1000       # KID: subsets of min(this, samples, reference) rows
  begin_ckpt: int | None = None     # checkpoints step // training.snapshot_freq in [begin, end];
  end_ckpt: int | None = None       # None: the newest checkpoint alone

  def __post_init__(self):
    checks.check_fields(self, {
        "batch_size": checks.POSITIVE_INT, "num_batches": checks.NON_NEGATIVE_INT,
        "enable_loss": checks.BOOL, "num_samples": checks.POSITIVE_INT,
        "enable_bpd": checks.BOOL, "num_eval_examples": checks.POSITIVE_INT,
        "divergence": checks.one_of(likelihood.DIVERGENCES), "rtol": checks.POSITIVE,
        "atol": checks.POSITIVE, "likelihood_eps": checks.TIME,
        "bpd_repeats": checks.POSITIVE_INT, "figures": checks.BOOL,
        "bound_num_times": checks.NON_NEGATIVE_INT, "bound_importance_sampling": checks.BOOL,
        "enable_sampling": checks.BOOL, "fid_stats": checks.STRING,
        "fid_split": checks.one_of(("train", "test")),
        "fid_num_images": checks.NON_NEGATIVE_INT,
        "inception_batch_size": checks.POSITIVE_INT, "kid_subset_size": checks.at_least(2),
        "begin_ckpt": checks.OPTIONAL_NON_NEGATIVE_INT,
        "end_ckpt": checks.OPTIONAL_NON_NEGATIVE_INT})
    if (self.begin_ckpt is None) != (self.end_ckpt is None):
      raise ValueError(f"begin_ckpt={self.begin_ckpt!r} and end_ckpt={self.end_ckpt!r}: set both "
                       f"(a range of checkpoints) or neither (the newest checkpoint)")
    if self.begin_ckpt is not None and self.begin_ckpt > self.end_ckpt:
      raise ValueError(f"begin_ckpt={self.begin_ckpt!r}: must be <= end_ckpt={self.end_ckpt!r}")

  @property
  def checkpoint_range(self) -> tuple[int, int] | None:
    """``(begin_ckpt, end_ckpt)``, or None: the newest checkpoint alone."""
    return None if self.begin_ckpt is None else (self.begin_ckpt, self.end_ckpt)

  def flow_options(self) -> dict:
    """The probability-flow solves' settings (likelihood, encode, decode)."""
    return dict(rtol=self.rtol, atol=self.atol, eps=self.likelihood_eps)
