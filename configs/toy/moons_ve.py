"""Two moons, VE SDE (sigma_max about the diameter of the data)."""

from configs.default_toy import get_default_configs


def get_config():
  config = get_default_configs()
  config.data.dataset = "moons"
  config.training.sde = "vesde"
  config.model.sigma_max = 4.0
  config.model.embedding_type = "fourier"
  config.model.scale_by_sigma = True
  # VE's likelihood weight g^2 / sigma^2 is a constant, 2 log(sigma_max / sigma_min): weighting by
  # it only rescales the loss (and the gradients that optim.grad_clip sees); measured with VP only.
  config.training.likelihood_weighting = False
  config.training.importance_sampling = False
  return config
