"""Digits, NCSN++ (small), VE SDE, continuous time: Fourier embedding of log sigma, output / sigma.

sigma_max follows the paper's Technique 1: about the largest distance between two training
images in model space (8x8 in [-1, 1]: at most 16; about 12 for digits).
"""

from configs.default_digits_configs import get_default_configs


def get_config():
  config = get_default_configs()
  config.training.sde = "vesde"
  config.model.sigma_max = 12.0
  config.model.embedding_type = "fourier"
  config.model.scale_by_sigma = True
  config.model.fir = True
  config.model.progressive_input = "residual"
  config.sampling.predictor = "reverse_diffusion"
  config.sampling.corrector = "langevin"
  return config
