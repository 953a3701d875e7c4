"""Defaults for CIFAR-10, with the values of the paper's ``configs/default_cifar10_configs.py``.

Fields this library adds (``training.max_to_keep``, ``training.eps``,
``eval.num_batches``, the ODE solver fields, ``data.path``, ...) sit in the
section a reader would look in. CIFAR-10 is read from ``data.path`` (the
python-pickle archive ``cifar-10-python.tar.gz`` or its extracted folder);
nothing is downloaded.
"""

import ml_collections


def get_default_configs():
  config = ml_collections.ConfigDict()
  # training
  config.training = training = ml_collections.ConfigDict()
  training.batch_size = 128
  training.n_iters = 1300001
  training.snapshot_freq = 50000
  training.log_freq = 50
  training.eval_freq = 100
  training.snapshot_freq_for_preemption = 10000  # checkpoints for resuming
  training.snapshot_sampling = True              # a sample grid at each snapshot
  training.likelihood_weighting = False
  training.continuous = True
  training.n_jitted_steps = 5
  training.reduce_mean = False
  training.max_to_keep = 3
  training.eps = 1e-5

  # sampling
  config.sampling = sampling = ml_collections.ConfigDict()
  sampling.method = "pc"
  sampling.predictor = "reverse_diffusion"
  sampling.corrector = "langevin"
  sampling.n_steps_each = 1
  sampling.noise_removal = True
  sampling.probability_flow = False
  sampling.snr = 0.16
  sampling.ode_solver = "tsit5"
  sampling.rtol = 1e-5
  sampling.atol = 1e-5
  sampling.ode_num_steps = 0
  sampling.sde_num_steps = 1000

  # evaluation
  config.eval = evaluate = ml_collections.ConfigDict()
  evaluate.begin_ckpt = 9
  evaluate.end_ckpt = 26
  evaluate.batch_size = 1024
  evaluate.enable_sampling = False
  evaluate.num_samples = 50000
  evaluate.enable_loss = True
  evaluate.enable_bpd = False
  evaluate.bpd_dataset = "test"
  evaluate.num_batches = 1              # eval-loss batches per evaluation during training
  evaluate.num_eval_examples = 10000    # --mode eval: the whole CIFAR-10 test set
  evaluate.bpd_repeats = 5              # dequantization rounds for bits/dim
  evaluate.divergence = "rademacher"    # Hutchinson, as the paper
  evaluate.rtol = 1e-5
  evaluate.atol = 1e-5
  evaluate.likelihood_eps = 1e-5

  # data
  config.data = data = ml_collections.ConfigDict()
  data.dataset = "CIFAR10"
  data.path = ""                        # cifar-10-python.tar.gz or its extracted folder
  data.image_size = 32
  data.random_flip = True
  data.centered = False
  data.uniform_dequantization = False
  data.num_channels = 3

  # model
  config.model = model = ml_collections.ConfigDict()
  model.sigma_min = 0.01
  model.sigma_max = 50.0  # the paper writes 50; a float so configs can set e.g. 12.0
  model.num_scales = 1000
  model.beta_min = 0.1
  model.beta_max = 20.0
  model.dropout = 0.1
  model.embedding_type = "fourier"

  # optimization
  config.optim = optim = ml_collections.ConfigDict()
  optim.weight_decay = 0
  optim.optimizer = "Adam"
  optim.lr = 2e-4
  optim.beta1 = 0.9
  optim.eps = 1e-8
  optim.warmup = 5000
  optim.grad_clip = 1.0

  config.seed = 42
  return config
