"""Model fields shared by the paper's NCSN++ (VE) and DDPM++ (VP, sub-VP) CIFAR-10 configs."""


def ncsnpp_model(model, *, num_res_blocks=4, ve=True):
  """NCSN++ (``ve=True``: FIR, residual input pyramid) or DDPM++ (``ve=False``) as the paper sets them."""
  model.name = "ncsnpp"
  model.scale_by_sigma = ve
  model.ema_rate = 0.999 if ve else 0.9999
  model.normalization = "GroupNorm"
  model.nonlinearity = "swish"
  model.nf = 128
  model.ch_mult = (1, 2, 2, 2)
  model.num_res_blocks = num_res_blocks
  model.attn_resolutions = (16,)
  model.resamp_with_conv = True
  model.conditional = True
  model.fir = ve
  model.fir_kernel = (1, 3, 3, 1)
  model.skip_rescale = True
  model.resblock_type = "biggan"
  model.progressive = "none"
  model.progressive_input = "residual" if ve else "none"
  model.progressive_combine = "sum"
  model.attention_type = "ddpm"
  model.init_scale = 0.0
  model.fourier_scale = 16
  model.conv_size = 3
  model.embedding_type = "fourier" if ve else "positional"
  return model
