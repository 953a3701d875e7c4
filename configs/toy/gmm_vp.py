"""2-D ring of 8 Gaussians, VP SDE (the default toy model)."""

from configs.default_toy import get_default_configs


def get_config():
  return get_default_configs()
