"""Fashion-MNIST, NCSN++ cont. (VE) at the paper's width for a GPU (62M parameters): ``ncsnpp_ve.py``
with :func:`configs.default_fashion_mnist_configs.at_paper_width`."""

from configs.default_fashion_mnist_configs import at_paper_width
from configs.fashion_mnist import ncsnpp_ve


def get_config():
  return at_paper_width(ncsnpp_ve.get_config())
