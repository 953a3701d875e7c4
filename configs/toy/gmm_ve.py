"""2-D ring of 8 Gaussians, VE SDE.

sigma_max follows the paper's Technique 1 (about the largest distance between
data points: 4 for a ring of radius 2); the network embeds log sigma with
Fourier features and its output is divided by sigma, as NCSN++ does.
"""

from configs.default_toy import get_default_configs


def get_config():
  config = get_default_configs()
  config.training.sde = "vesde"
  config.model.sigma_min = 0.01
  config.model.sigma_max = 5.0
  config.model.embedding_type = "fourier"
  config.model.scale_by_sigma = True
  return config
