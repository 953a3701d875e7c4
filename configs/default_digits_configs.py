"""Defaults for scikit-learn's 8x8 digits (1797 images, 17 grey levels, shipped with scikit-learn):
small NCSN++ / DDPM++ networks that train on a 2-core CPU."""

from ml_collections.config_dict import placeholder

from configs.default_cifar10_configs import get_default_configs as cifar10_defaults


def get_default_configs():
  config = cifar10_defaults()
  data = config.data
  data.dataset = "digits"
  data.path = ""
  data.image_size = 8
  data.num_channels = 1
  data.random_flip = False           # digits are not mirror-symmetric
  data.centered = True
  data.eval_fraction = 0.1           # 180 held-out images

  training = config.training
  training.batch_size = 128
  training.n_iters = 12000
  training.n_jitted_steps = 1        # on a CPU, k > 1 runs k calls of one step anyway (train.steps_loop)
  training.log_freq = 100
  training.eval_freq = 1000
  training.snapshot_freq = 10000
  training.snapshot_freq_for_preemption = 1000
  training.snapshot_sampling = True

  evaluate = config.eval
  evaluate.batch_size = 180
  evaluate.num_batches = 1
  evaluate.num_samples = 64
  evaluate.num_eval_examples = 180
  evaluate.enable_bpd = True
  evaluate.bpd_repeats = 3
  evaluate.divergence = "rademacher"
  evaluate.enable_sampling = True    # FID / KID of num_samples samples (docs/fid.md)
  evaluate.begin_ckpt = placeholder(int)   # None: the newest checkpoint alone
  evaluate.end_ckpt = placeholder(int)

  model = config.model
  model.name = "ncsnpp"
  model.normalization = "GroupNorm"
  model.nonlinearity = "swish"
  model.nf = 32
  model.ch_mult = (1, 2)
  model.num_res_blocks = 2
  model.attn_resolutions = (4,)
  model.dropout = 0.1
  model.resamp_with_conv = True
  model.conditional = True
  model.fir = False
  model.fir_kernel = (1, 3, 3, 1)
  model.skip_rescale = True
  model.resblock_type = "biggan"
  model.progressive = "none"
  model.progressive_input = "none"
  model.progressive_combine = "sum"
  model.attention_type = "ddpm"
  model.init_scale = 0.0
  model.fourier_scale = 16
  model.conv_size = 3
  model.embedding_type = "positional"
  model.scale_by_sigma = False
  model.ema_rate = 0.999
  model.ema_warmup = True   # min(ema_rate, (1 + step) / (10 + step)): short runs' EMA is trained

  config.optim.lr = 5e-4
  config.optim.warmup = 500

  # Noise-conditional digit classifier (--mode train_classifier / conditional): WRN-10-2.
  classifier = config.classifier
  classifier.blocks_per_group = 1
  classifier.channel_multiplier = 2
  classifier.embedding_size = 64
  classifier.n_iters = 4000
  classifier.lr = 1e-3
  classifier.warmup = 200
  classifier.ema_rate = 0.99
  classifier.eval_freq = 500
  classifier.snapshot_freq = 1000
  return config
