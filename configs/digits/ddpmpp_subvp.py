"""Digits, DDPM++ (small), sub-VP SDE, continuous time."""

from configs.default_digits_configs import get_default_configs


def get_config():
  config = get_default_configs()
  config.training.sde = "subvpsde"
  config.sampling.predictor = "euler_maruyama"
  config.sampling.corrector = "none"
  return config
