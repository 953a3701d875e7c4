"""2-D swiss roll, VP SDE."""

from configs.default_toy import get_default_configs


def get_config():
  config = get_default_configs()
  config.data.dataset = "swissroll"
  config.data.noise = 0.05
  return config
