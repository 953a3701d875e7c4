"""Defaults for Fashion-MNIST (Xiao et al. 2017: 60,000 training and 10,000 test images of
clothing, 28x28 grey, 10 classes, MIT licence), read from Debian's package folder
(``apt-get install dataset-fashion-mnist``) or the folder ``data.path`` names.

Images are padded to 32x32 with 2 background pixels each side (``data.image_size = 32``; 28
reads them as they are), so the paper's CIFAR-10 layout (resolutions 32, 16, 8, 4) applies.
The networks here are that layout narrowed to train on a 2-core CPU in about two hours (nf = 32,
one residual block per resolution: 1.77 M parameters; batch 32, 5000 steps); the ``*_paper``
configs are the paper's widths for a GPU. The optimizer is the paper's (Adam, lr 2e-4,
gradient clipping at 1) but for the warm-up and EMA of the short CPU runs (500 steps; EMA 0.999
with TensorFlow's warm-up of the decay, instead of 5000 and 0.9999).
"""

from ml_collections.config_dict import placeholder

from configs.default_cifar10_configs import get_default_configs as cifar10_defaults


def get_default_configs():
  config = cifar10_defaults()
  data = config.data
  data.dataset = "fashion_mnist"
  data.path = ""                     # "": /usr/share/datasets/fashion-mnist (Debian's package)
  data.image_size = 32               # 28 padded by 2 each side
  data.num_channels = 1
  data.random_flip = False           # as the original does for its grey data sets: off
  data.uniform_dequantization = False

  training = config.training
  training.batch_size = 32           # 0.73 steps/s on a 2-core CPU: 5000 steps in about 2 hours
  training.n_iters = 5000
  training.n_jitted_steps = 1        # on a CPU, image networks run one compiled step per call
  training.log_freq = 50
  training.eval_freq = 500
  training.snapshot_freq = 1000
  training.snapshot_freq_for_preemption = 250
  training.snapshot_sampling = False # a 1000-step sample of a batch costs minutes on a CPU

  evaluate = config.eval
  evaluate.batch_size = 100
  evaluate.num_batches = 1
  evaluate.num_samples = 1000        # --mode sample and FID / KID (the paper: 50,000)
  evaluate.num_eval_examples = 500   # --mode eval: test images for the loss and bits/dim
  evaluate.enable_bpd = True
  evaluate.bpd_repeats = 1
  evaluate.divergence = "rademacher"
  evaluate.enable_sampling = True
  evaluate.fid_split = "test"        # the 10,000 test images: the reference FID is against
  evaluate.begin_ckpt = placeholder(int)
  evaluate.end_ckpt = placeholder(int)

  model = config.model
  model.nf = 32
  model.ch_mult = (1, 2, 2, 2)
  model.num_res_blocks = 1
  model.attn_resolutions = (16,)
  model.dropout = 0.1
  model.ema_rate = 0.999
  model.ema_warmup = True

  optim = config.optim
  optim.lr = 2e-4
  optim.warmup = 500
  optim.grad_clip = 1.0

  classifier = config.classifier      # --mode train_classifier: a WRN-16-2 for guidance
  classifier.blocks_per_group = 2
  classifier.channel_multiplier = 2
  classifier.embedding_size = 64
  classifier.n_iters = 4000
  classifier.batch_size = 64
  classifier.lr = 1e-3
  classifier.warmup = 200
  classifier.ema_rate = 0.99
  classifier.eval_freq = 500
  classifier.snapshot_freq = 1000
  return config


def at_paper_width(config):
  """``config`` (a CPU config of this folder) at the paper's width for a GPU: nf = 128, four
  residual blocks per resolution, the paper's optimizer warm-up (5000 steps) and EMA (0.9999,
  no warm-up), batch 128, and evaluation at 10,000 samples and test images."""
  config.model.nf = 128
  config.model.num_res_blocks = 4
  config.model.ema_rate = 0.9999
  config.model.ema_warmup = False
  config.optim.warmup = 5000
  t = config.training
  t.batch_size, t.n_iters = 128, 200000
  t.log_freq, t.eval_freq, t.snapshot_freq, t.snapshot_freq_for_preemption = 100, 5000, 20000, 5000
  t.snapshot_sampling = True
  config.eval.batch_size = 500
  config.eval.num_samples = 10000
  config.eval.num_eval_examples = 10000
  return config
