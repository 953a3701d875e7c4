"""2-D ring of 8 Gaussians, sub-VP SDE."""

from configs.default_toy import get_default_configs


def get_config():
  config = get_default_configs()
  config.training.sde = "subvpsde"
  return config
