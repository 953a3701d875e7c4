"""NCSN++ cont. (deep, VE): the paper's ve/cifar10_ncsnpp_deep_continuous.py (FID 2.20, IS 9.89)."""

from configs._ncsnpp_common import ncsnpp_model
from configs.default_cifar10_configs import get_default_configs


def get_config():
  config = get_default_configs()
  config.training.sde = "vesde"
  config.training.continuous = True
  config.sampling.method = "pc"
  config.sampling.predictor = "reverse_diffusion"
  config.sampling.corrector = "langevin"
  ncsnpp_model(config.model, num_res_blocks=8, ve=True)
  return config
