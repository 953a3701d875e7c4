"""Defaults for low-dimensional toy data (the default toy model: 2-D ring of 8 Gaussians, VP SDE).

Sections and field names follow the paper's ``configs/default_cifar10_configs.py``
so its configs and overrides carry over; values are scaled down for 2-D data
on a CPU. Experiment files import :func:`get_default_configs` and change a few fields.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs.library_fields import CLASSIFIER_FIELDS, FID_FIELDS, INPAINT_FIELDS


def get_default_configs():
  config = ml_collections.ConfigDict()

  # training
  config.training = training = ml_collections.ConfigDict()
  training.sde = "vpsde"                # vpsde | subvpsde | vesde
  training.continuous = True
  training.reduce_mean = False          # False: half sum over dimensions (paper's default)
  training.likelihood_weighting = False  # True: DSM weighted by g^2 (the paper's: std^2)
  training.importance_sampling = False  # with likelihood_weighting: t ~ g^2 / std^2 (ScoreFlow)
  training.batch_size = 512             # global batch
  training.n_iters = 8000
  training.n_jitted_steps = 50          # optimizer steps per jitted call (lax.scan)
  training.log_freq = 100
  training.eval_freq = 500
  training.snapshot_freq = 4000         # checkpoints kept for good
  training.snapshot_freq_for_preemption = 1000  # checkpoints for resuming (last max_to_keep kept)
  training.max_to_keep = 3
  training.snapshot_sampling = False    # sample figures at snapshots (sampling issue)
  training.eps = 1e-5                   # smallest training time
  training.resume_new_data = False      # resume a workdir with another data.dataset / data.path

  # sampling (used by --mode sample)
  config.sampling = sampling = ml_collections.ConfigDict()
  sampling.method = "pc"
  sampling.predictor = "reverse_diffusion"
  sampling.corrector = "langevin"
  sampling.n_steps_each = 1
  sampling.noise_removal = True
  sampling.probability_flow = False
  sampling.snr = 0.16
  # Each other method's options, in its own section (score_sde_jax.sampling.SAMPLERS).
  sampling.ode = ml_collections.ConfigDict(dict(
      solver="tsit5",                   # tsit5 | dopri5 (adaptive), euler | heun (fixed steps)
      rtol=1e-5, atol=1e-5,             # tolerances of the adaptive solver
      num_steps=0))                     # steps of a fixed-step solver (0: adaptive)
  sampling.sde = ml_collections.ConfigDict(dict(num_steps=1000))   # Euler-Maruyama steps
  # The few-step samplers' noise range, as sigma / alpha (0: the SDE's own at eps / T):
  # 0.01 .. 10 (10 = 5x the ring's radius).
  sampling.dpm_solver = ml_collections.ConfigDict(dict(
      order=2,                          # 1 (DDIM), 2, 3
      num_steps=20,                     # steps (one score evaluation each)
      schedule="edm",                   # time grid: edm (rho = 7) | logsnr | time
      sigma_min=0.01, sigma_max=10.0))
  sampling.edm = ml_collections.ConfigDict(dict(
      num_steps=20, schedule="edm",     # Heun steps (two score evaluations each), time grid
      sigma_min=0.01, sigma_max=10.0,
      churn=0.0,                        # S_churn (0: deterministic), S_tmin, S_tmax, S_noise
      s_tmin=0.0, s_tmax=1e6, s_noise=1.0))

  # evaluation
  config.eval = evaluate = ml_collections.ConfigDict()
  evaluate.batch_size = 1024
  evaluate.num_batches = 4              # eval-loss batches per evaluation during training
  evaluate.enable_loss = True
  evaluate.num_samples = 4000           # --mode sample: samples drawn, in batches of eval.batch_size
  evaluate.enable_bpd = True            # --mode eval: negative log-likelihood on the test split
  evaluate.num_eval_examples = 2000     # --mode eval: test examples for the loss and likelihood
  evaluate.divergence = "exact"         # exact | gaussian | rademacher (Hutchinson)
  evaluate.rtol = 1e-5
  evaluate.atol = 1e-5
  evaluate.likelihood_eps = 1e-5        # the paper's eps for likelihoods
  evaluate.bound_num_times = 1000       # ScoreFlow's bound on -log p beside it: time samples per
                                        # example (0: not computed)
  evaluate.bound_importance_sampling = True  # times drawn in proportion to g^2 / std^2
  evaluate.figures = True               # False: the modes write metrics and samples, no figures
  evaluate.begin_ckpt = placeholder(int)  # --mode eval: checkpoints step // snapshot_freq in
  evaluate.end_ckpt = placeholder(int)    #   [begin, end] (None: the newest alone)
  evaluate.enable_sampling = False      # --mode eval, image data: FID / KID of num_samples samples
  evaluate.update(FID_FIELDS)

  # data
  config.data = data = ml_collections.ConfigDict()
  data.dataset = "gmm"                  # gmm | swissroll | moons | checkerboard | rings
  data.dim = 2
  data.centered = False                 # toy data is used in its natural range
  data.n_modes = 8                      # gmm: modes on a ring
  data.radius = 2.0                     # gmm: ring radius
  data.mode_std = 0.15                  # gmm: std of each mode
  data.noise = 0.05                     # swissroll / moons / rings: observation noise

  # model
  config.model = model = ml_collections.ConfigDict()
  model.name = "mlp"
  model.hidden = 256
  model.num_layers = 3
  model.nonlinearity = "swish"
  model.embedding_type = "positional"   # positional (VP, sub-VP) | fourier (VE)
  model.embedding_dim = 64
  model.fourier_scale = 16.0
  model.dropout = 0.0
  model.scale_by_sigma = False          # VE only: score = output / sigma
  model.ema_rate = 0.999
  model.ema_warmup = True               # min(ema_rate, (1 + step) / (10 + step)): short runs' EMA
  model.beta_min = 0.1
  model.beta_max = 20.0
  model.sigma_min = 0.01
  model.sigma_max = 50.0
  model.num_scales = 1000

  # optimization
  config.optim = optim = ml_collections.ConfigDict()
  optim.optimizer = "Adam"
  optim.lr = 2e-3
  optim.beta1 = 0.9
  optim.eps = 1e-8
  optim.weight_decay = 0.0
  optim.warmup = 200
  # The cosine decay brings the ring's NLL to within 0.02 nats of the data's entropy, against 0.06
  # with a constant rate (docs/likelihood-training.md, "The toy model's gap").
  optim.lr_decay = "cosine"             # none (the paper) | cosine: to 0 at training.n_iters
  optim.grad_clip = 1.0

  config.seed = 42
  # --mode inpaint (fields in configs/library_fields.py)
  config.inpaint = ml_collections.ConfigDict(dict(INPAINT_FIELDS))
  # --mode train_classifier / conditional: the mixture's components are the classes
  config.classifier = classifier = ml_collections.ConfigDict(dict(CLASSIFIER_FIELDS))
  classifier.name = "classifier_mlp"
  classifier.num_classes = 8            # = data.n_modes (checked against the data)
  for field in ("blocks_per_group", "channel_multiplier"):
    del classifier[field]
  classifier.hidden = 128
  classifier.num_layers = 3
  classifier.embedding_size = 32
  classifier.fourier_scale = 4.0
  classifier.activation = "swish"
  classifier.batch_size = 512
  classifier.n_iters = 3000
  classifier.lr = 1e-3
  classifier.warmup = 100
  classifier.ema_rate = 0.99
  classifier.log_freq = 100
  classifier.eval_freq = 500
  classifier.snapshot_freq = 1000
  classifier.samples_per_class = 500

  return config


def get_config():
  return get_default_configs()
