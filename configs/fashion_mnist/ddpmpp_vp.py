"""Fashion-MNIST, DDPM++ (narrowed for a CPU), VP SDE, continuous time: the paper's
``configs/vp/cifar10_ddpmpp_continuous.py`` at nf = 32 with one residual block per resolution."""

from configs.default_fashion_mnist_configs import get_default_configs


def get_config():
  config = get_default_configs()
  config.training.sde = "vpsde"
  config.training.continuous = True
  config.training.reduce_mean = True
  config.sampling.method = "pc"
  config.sampling.predictor = "euler_maruyama"
  config.sampling.corrector = "none"
  config.data.centered = True
  m = config.model
  m.name = "ncsnpp"
  m.scale_by_sigma = False
  m.normalization = "GroupNorm"
  m.nonlinearity = "swish"
  m.resamp_with_conv = True
  m.conditional = True
  m.fir = False
  m.skip_rescale = True
  m.resblock_type = "biggan"
  m.progressive = "none"
  m.progressive_input = "none"
  m.progressive_combine = "sum"
  m.attention_type = "ddpm"
  m.init_scale = 0.0
  m.embedding_type = "positional"
  m.conv_size = 3
  return config
