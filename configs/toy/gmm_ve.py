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
  # VE's likelihood weight g^2 / sigma^2 is a constant, 2 log(sigma_max / sigma_min): weighting by
  # it only rescales the loss (and the gradients that optim.grad_clip sees); measured with VP only.
  config.training.likelihood_weighting = False
  config.training.importance_sampling = False
  return config
