"""Fashion-MNIST, NCSN++ (narrowed for a CPU), VE SDE, continuous time: the paper's
``configs/ve/cifar10_ncsnpp_continuous.py`` at nf = 32 with one residual block per resolution.

sigma_max follows the paper's Technique 1: about the largest distance between two training
images (32x32 in [0, 1]: at most 32; Fashion-MNIST's pairs reach about 25)."""

from configs.default_fashion_mnist_configs import get_default_configs


def get_config():
  config = get_default_configs()
  config.training.sde = "vesde"
  config.training.continuous = True
  config.sampling.method = "pc"
  config.sampling.predictor = "reverse_diffusion"
  config.sampling.corrector = "langevin"
  config.data.centered = False
  m = config.model
  m.name = "ncsnpp"
  m.sigma_max = 25.0
  m.scale_by_sigma = True
  m.normalization = "GroupNorm"
  m.nonlinearity = "swish"
  m.resamp_with_conv = True
  m.conditional = True
  m.fir = True
  m.fir_kernel = (1, 3, 3, 1)
  m.skip_rescale = True
  m.resblock_type = "biggan"
  m.progressive = "none"
  m.progressive_input = "residual"
  m.progressive_combine = "sum"
  m.attention_type = "ddpm"
  m.init_scale = 0.0
  m.fourier_scale = 16
  m.embedding_type = "fourier"
  m.conv_size = 3
  return config
