"""Two moons, VE SDE (sigma_max about the diameter of the data)."""

from configs.default_toy import get_default_configs


def get_config():
  config = get_default_configs()
  config.data.dataset = "moons"
  config.training.sde = "vesde"
  config.model.sigma_max = 4.0
  config.model.embedding_type = "fourier"
  config.model.scale_by_sigma = True
  return config
