"""Fields this library adds to the paper's configs, set in one place.

The paper's defaults files (``default_cifar10_configs.py``, ``default_celeba_configs.py``,
``default_lsun_configs.py``) hold the original's values and then call
:func:`add_library_fields`, which adds what the original does not have: checkpoint
retention, the training ``eps``, the ODE / diffrax SDE samplers' settings, the likelihood
evaluation's settings, and where the data are read from (``data.path``; nothing is
downloaded). Fields already in the config are left as they are.
"""

import ml_collections

INPAINT_FIELDS = dict(
    task="inpaint",              # inpaint | colorize (RGB images: the grey image is kept)
    mask="half",                 # half (images: right half generated; vectors: second half of
                                 # the coordinates) | center (images) | random (each pixel or
                                 # coordinate known with probability 1/2, per example)
    num_examples=8,              # held-out examples completed
    samples_per_example=4,
    refine_steps=200,            # Langevin steps at eps with the known part fixed, after the
                                 # projection (0: the paper's projection alone, biased where the
                                 # known and unknown parts are correlated; docs/controllable.md)
    refine_snr=0.16,
)


# Sample quality in --mode eval (image data): FID and KID of eval.num_samples samples against a
# data set's statistics, written once by --mode fid_stats (docs/fid.md). The original's
# eval.enable_sampling switches it on; begin_ckpt / end_ckpt (already in the paper's configs)
# choose checkpoints.
FID_FIELDS = dict(
    fid_stats="",                # reference statistics (.npz: mu and sigma, pool_3 or features);
                                 # "": <workdir>/fid_stats/<data set>_<fid_split>.npz
    fid_split="train",           # --mode fid_stats: the split it reads (the paper: train)
    fid_num_images=0,            # --mode fid_stats: its first n images (0: all)
    inception_batch_size=100,    # images per Inception-v3 call (each resized to 299 x 299)
    kid_subset_size=1000,        # KID: subsets of min(this, samples, reference) rows
)


# Noise-conditional classifier p_t(y | x_t) for class-conditional sampling: --mode
# train_classifier trains it (its own checkpoints, metrics and resume, in classifier.workdir),
# --mode conditional samples with score + scale * grad log p_t(y | x). The network reads the
# fields of its own (WideResNet: num_classes, blocks_per_group, channel_multiplier,
# embedding_size, fourier_scale; classifier_mlp: num_classes, hidden, num_layers,
# embedding_size, fourier_scale, activation). The paper's CIFAR-10 classifier is WRN-28-10.
CLASSIFIER_FIELDS = dict(
    workdir="",                  # "" : <workdir>/classifier
    name="wideresnet",           # wideresnet (images) | classifier_mlp (vectors)
    num_classes=10,
    blocks_per_group=4,          # WRN-(6 * 4 + 4)-10 = WRN-28-10
    channel_multiplier=10,
    embedding_size=128,
    fourier_scale=16.0,
    batch_size=128,
    n_iters=50000,
    lr=2e-4,
    warmup=1000,
    grad_clip=1.0,
    weight_decay=0.0,
    ema_rate=0.999,
    ema_warmup=True,             # the EMA's decay min(ema_rate, (1 + step) / (10 + step)), as
                                 # model.ema_warmup: a short run's EMA is not its initial weights
    eps=1e-5,                    # smallest training time (t ~ U(eps, T))
    log_freq=100,
    eval_freq=1000,              # held-out loss and accuracy (eval.batch_size examples)
    snapshot_freq=5000,          # checkpoints (the last max_to_keep kept, and the final one)
    max_to_keep=3,
    scale=1.0,                   # --mode conditional: guidance scale (1: the exact conditional)
    classes=(),                  # --mode conditional: the classes sampled (empty: all)
    samples_per_class=8,
)


def add_library_fields(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  extra = {
      "training": dict(
          max_to_keep=3,           # checkpoints kept (the original keeps all snapshots)
          eps=1e-5,                # smallest training time, as the original's losses.py
          importance_sampling=False,  # with likelihood_weighting: t ~ g^2 / std^2 (ScoreFlow)
          resume_new_data=False,   # resume a workdir with another data.dataset / data.path
      ),
      "sampling": dict(
          method="pc", predictor="reverse_diffusion", corrector="langevin",
          # The other methods' options, each in its own section (sampling.SAMPLERS).
          ode=ml_collections.ConfigDict(dict(
              solver="tsit5",      # probability-flow ODE (the original: scipy RK45)
              rtol=1e-5, atol=1e-5,
              num_steps=0)),       # 0: adaptive steps
          sde=ml_collections.ConfigDict(dict(num_steps=1000)),   # diffrax reverse SDE
          dpm_solver=ml_collections.ConfigDict(dict(
              order=2,             # 1 (DDIM), 2, 3
              num_steps=20,        # steps (one score evaluation each)
              schedule="edm",      # time grid: edm (rho = 7) | logsnr | time
              sigma_min=0.0,       # noise range of the steps as sigma / alpha
              sigma_max=0.0)),     #   (0: the SDE's own at eps / T)
          edm=ml_collections.ConfigDict(dict(
              num_steps=20, schedule="edm", sigma_min=0.0, sigma_max=0.0,
              churn=0.0,           # S_churn (0: deterministic), S_tmin, S_tmax, S_noise
              s_tmin=0.0, s_tmax=1e6, s_noise=1.0)),
      ),
      "optim": dict(
          lr_decay="none",         # none (the original) | cosine: to 0 at training.n_iters
      ),
      "eval": dict(
          num_batches=1,           # eval-loss batches per evaluation during training
          num_eval_examples=10000, # --mode eval
          bpd_repeats=5,           # dequantization rounds for bits/dim
          bound_num_times=1000,    # ScoreFlow's bound on -log p beside the ODE likelihood: time
                                   # samples per example (0: not computed)
          bound_importance_sampling=True,  # times drawn in proportion to g^2 / std^2
          divergence="rademacher", # Hutchinson, as the paper
          rtol=1e-5, atol=1e-5, likelihood_eps=1e-5,
          figures=True,            # False: metrics and samples only (sweeps, pods)
          **FID_FIELDS,
      ),
      "data": dict(
          path="",                 # a folder of images, an npz, or CIFAR-10's archive
          eval_path="",            # image folders: a held-out folder (else eval_fraction)
          eval_fraction=0.1,       # share held out when there is no held-out set
          npz_key="",              # the array of an npz with several (empty: its only array)
      ),
      # --mode inpaint: held-out examples completed by the projection PC sampler (the PC settings
      # are sampling's). Added to every config here and in default_toy.py.
      "inpaint": INPAINT_FIELDS,
      "classifier": CLASSIFIER_FIELDS,
  }
  for section, fields in extra.items():
    if section not in config:
      config[section] = ml_collections.ConfigDict()
    for name, value in fields.items():
      if name not in config[section]:
        config[section][name] = value
  return config
