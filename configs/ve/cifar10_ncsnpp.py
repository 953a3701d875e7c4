"""NCSN++ with the VE SDE, discrete-time SMLD training (the paper's ve/cifar10_ncsnpp.py)."""

from configs._ncsnpp_common import ncsnpp_model
from configs.default_cifar10_configs import get_default_configs


def get_config():
  config = get_default_configs()
  config.training.sde = "vesde"
  config.training.continuous = False
  config.sampling.method = "pc"
  config.sampling.predictor = "reverse_diffusion"
  config.sampling.corrector = "langevin"
  ncsnpp_model(config.model, num_res_blocks=4, ve=True)
  config.model.embedding_type = "positional"  # discrete labels: NCSN noise-level indices
  return config
