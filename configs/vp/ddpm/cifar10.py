"""DDPM (Ho et al. 2020) with the VP SDE in discrete time: the paper's vp/ddpm/cifar10.py."""

from configs.default_cifar10_configs import get_default_configs


def get_config():
  config = get_default_configs()
  config.training.sde = "vpsde"
  config.training.continuous = False
  config.training.reduce_mean = True
  config.sampling.method = "pc"
  config.sampling.predictor = "ancestral_sampling"
  config.sampling.corrector = "none"
  config.data.centered = True
  model = config.model
  model.name = "ddpm"
  model.scale_by_sigma = False
  model.ema_rate = 0.9999
  model.normalization = "GroupNorm"
  model.nonlinearity = "swish"
  model.nf = 128
  model.ch_mult = (1, 2, 2, 2)
  model.num_res_blocks = 2
  model.attn_resolutions = (16,)
  model.resamp_with_conv = True
  model.conditional = True
  model.embedding_type = "positional"
  return config
