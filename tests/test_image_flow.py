"""Image eval's probability-flow figures: semantic interpolation grid and encode-decode
reconstructions, with their error, against the exact flow of a network that outputs zero."""

import os

import jax.numpy as jnp
import numpy as np
from PIL import Image

from configs.digits import ddpmpp_vp
from score_sde_jax import build, figures
from score_sde_jax.workdir import TrainedRun


def test_interpolation_and_reconstruction_of_held_out_digits(tmp_path):
  """At initialisation the network's last layer is zero (init_scale = 0), so the score is 0 and
  the VP probability-flow ODE is dx/dt = -beta(t) x / 2: linear, x(T) = m x(eps) with
  m = exp(log_mean_coeff(T)) = 0.0065. The decode's absolute tolerance (1e-5) at the latents'
  scale maps back to 1e-5 / m = 1.5e-3 in model units ([-1, 1]); the bound is twice that
  (3e-3 model units, 1.5e-3 in [0, 1]); measured 3.6e-4.
  """
  config = ddpmpp_vp.get_config()
  config.model.nf, config.model.num_res_blocks = 16, 1
  sde, model = build.get_sde(config), build.get_model(config)
  state = build.init_state(config, model, build.get_optimizer(config))
  run = TrainedRun(str(tmp_path), config, 0, sde, model, state)
  dataset = build.get_dataset(config)
  held_out = dataset.held_out(16)
  paths, stats = figures.image_flow_figures(run, dataset, held_out, n_pairs=2, n_alphas=5,
                                            n_reconstructions=8)
  assert [os.path.basename(p) for p in paths] == ["interpolation.png", "reconstruction.png"]
  for p in paths:
    with Image.open(p) as img:
      assert min(img.size) > 100
  assert stats["reconstruction_examples"] == 8
  m = float(sde.marginal_prob(jnp.ones((1, 1)), sde.T)[0][0, 0])  # mean coefficient at T
  bound = 2 * config.eval.atol / m / 2   # in [0, 1]: half the model units
  assert 0 < stats["reconstruction_max_abs_error"] < bound, (stats, bound)
  assert stats["reconstruction_mean_abs_error"] <= stats["reconstruction_max_abs_error"]
  assert np.isclose(stats["reconstruction_mean_abs_error"] * 16,  # 17 levels: 0..16
                    stats["reconstruction_mean_abs_error_levels"])
