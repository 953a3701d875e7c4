"""DDPM++ cont. (deep, sub-VP): the paper's subvp/cifar10_ddpmpp_deep_continuous.py."""

from configs._ncsnpp_common import ncsnpp_model
from configs.default_cifar10_configs import get_default_configs


def get_config():
  config = get_default_configs()
  config.training.sde = "subvpsde"
  config.training.continuous = True
  config.sampling.method = "pc"
  config.sampling.predictor = "euler_maruyama"
  config.sampling.corrector = "none"
  config.data.centered = True
  ncsnpp_model(config.model, num_res_blocks=8, ve=False)
  return config
