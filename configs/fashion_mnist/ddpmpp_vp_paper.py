"""Fashion-MNIST, DDPM++ cont. (VP) at the paper's width for a GPU (62M parameters): ``ddpmpp_vp.py``
with :func:`configs.default_fashion_mnist_configs.at_paper_width`."""

from configs.default_fashion_mnist_configs import at_paper_width
from configs.fashion_mnist import ddpmpp_vp


def get_config():
  return at_paper_width(ddpmpp_vp.get_config())
