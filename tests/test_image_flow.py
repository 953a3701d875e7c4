"""Image eval's probability-flow figures: semantic interpolation grid and encode-decode
reconstructions, with their error, against the exact flow of a network that outputs zero."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs.digits import ddpmpp_vp
from score_sde_jax import build, figures
from score_sde_jax.workdir import TrainedRun


@pytest.mark.slow
def test_interpolation_and_reconstruction_of_held_out_digits(tmp_path):
  """At initialisation the network's last layer is zero (init_scale = 0), so the score is 0 and
  the VP probability-flow ODE is dx/dt = -beta(t) x / 2: linear, x(T) = m x(eps) with
  m = exp(log_mean_coeff(T)) = 0.0065. The decode's absolute tolerance (1e-5) at the latents'
  scale maps back to 1e-5 / m = 1.5e-3 in model units ([-1, 1]); the bound is twice that
  (3e-3 model units, 1.5e-3 in [0, 1]); measured 3.6e-4.
  """
  config = ddpmpp_vp.get_config()
  config.model.nf, config.model.num_res_blocks = 16, 1
  sde, model = build.score_model(config).sde, build.score_model(config).network
  state = build.experiment(config).init_state()
  run = TrainedRun(str(tmp_path), build.experiment(config, inpaint=True), 0, state)
  dataset = build.experiment(config).data.load()
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


@pytest.mark.slow
def test_inpaint_mode_on_digits_keeps_known_pixels_and_draws_rows(tmp_path):
  """``--mode inpaint``'s work on images (a network at initialisation; the numbers of the method
  are tested against exact conditionals in test_controllable.py): the known pixels are the
  held-out digit exactly, each example gets its own samples, and the figure has one row per
  example (input, samples, truth)."""
  from score_sde_jax.modes.inpaint import complete, make_mask
  config = ddpmpp_vp.get_config()
  config.model.nf, config.model.num_res_blocks, config.model.num_scales = 16, 1, 20
  config.inpaint.mask, config.inpaint.num_examples, config.inpaint.samples_per_example = "center", 3, 2
  config.inpaint.refine_steps = 2      # the default 200 would cost 200 more network calls here
  sde, model = build.score_model(config).sde, build.score_model(config).network
  state = build.experiment(config).init_state()
  run = TrainedRun(str(tmp_path), build.experiment(config, inpaint=True), 0, state)
  dataset = build.experiment(config).data.load()
  samples, result = complete(run, dataset)
  truth = dataset.to_unit(dataset.held_out(3))
  mask = make_mask("center", (8, 8, 1), 3, config.seed)
  assert mask[0, :, :, 0].sum() == 64 - 16 and mask[0, 3, 3, 0] == 0
  from score_sde_jax.sampling.pc import pc_nfe
  s = config.sampling
  assert samples.shape == (3, 2, 8, 8, 1)
  assert result["nfe"] == pc_nfe(s.predictor, s.corrector, s.n_steps_each, 20) + 2
  known = np.broadcast_to(mask[:, None] == 1, samples.shape)
  np.testing.assert_allclose(samples[known], np.broadcast_to(truth[:, None], samples.shape)[known],
                             atol=1e-6)
  assert result["max_abs_error_known"] < 1e-6
  assert not np.allclose(samples[:, 0], samples[:, 1])
  with Image.open(os.path.join(str(tmp_path), "figures", "inpaint_center_step0.png")) as img:
    assert img.size[0] > img.size[1] > 100     # 3 rows of 4 images


def test_inpaint_config_errors_name_the_field():
  import pytest
  config = ddpmpp_vp.get_config()
  config.inpaint.task = "colorize"
  with pytest.raises(build.ConfigError, match=r"config.inpaint.task='colorize': needs RGB images"):
    build.experiment(config, inpaint=True)
  config.inpaint.task, config.inpaint.mask = "inpaint", "left"
  with pytest.raises(build.ConfigError, match=r"config.inpaint.mask='left': expected one of"):
    build.experiment(config, inpaint=True)


@pytest.mark.slow
def test_colorize_mode_keeps_the_grey_of_rgb_images(tmp_path):
  """``inpaint.task='colorize'`` on 8x8 RGB images from an npz (a network at initialisation):
  every sample's channel mean is the held-out image's grey, the figure shows grey inputs."""
  from score_sde_jax.modes.inpaint import complete
  rng = np.random.default_rng(0)
  path = str(tmp_path / "rgb.npz")
  np.savez(path, images=rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8))
  config = ddpmpp_vp.get_config()
  config.data.dataset, config.data.path, config.data.num_channels = "npz", path, 3
  config.model.nf, config.model.num_res_blocks, config.model.num_scales = 16, 1, 10
  config.inpaint.task, config.inpaint.num_examples, config.inpaint.samples_per_example = (
      "colorize", 2, 2)
  build.experiment(config, inpaint=True)
  sde, model = build.score_model(config).sde, build.score_model(config).network
  state = build.experiment(config).init_state()
  run = TrainedRun(str(tmp_path / "wd"), build.experiment(config, inpaint=True), 0, state)
  dataset = build.experiment(config).data.load()
  samples, result = complete(run, dataset)
  truth = dataset.to_unit(dataset.held_out(2))
  assert samples.shape == (2, 2, 8, 8, 3)
  inside = (samples > 0).all(-1) & (samples < 1).all(-1)   # not clipped to [0, 1]
  grey = np.broadcast_to(truth.mean(-1)[:, None], samples.shape[:-1])
  np.testing.assert_allclose(samples.mean(-1)[inside], grey[inside], atol=1e-5)
  assert result["mask"] is None and result["task"] == "colorize"
  assert os.path.isfile(os.path.join(str(tmp_path / "wd"), "figures",
                                     "colorize_luminance_step0.png"))


@pytest.mark.slow
def test_classifier_modes_on_digits_write_checkpoints_reports_and_class_rows(tmp_path):
  """``--mode train_classifier`` on digits (a WRN-10-1 for 4 steps: the method's numbers are
  tested on the mixture in test_modes.py) writes its checkpoint, metrics and report into
  ``<workdir>/classifier``; guided sampling with it and a score network at initialisation
  returns one row per requested class, in [0, 1], and a figure with one row per class."""
  from score_sde_jax import modes
  from score_sde_jax.modes.conditional import sample_classes
  from score_sde_jax.sampling.pc import pc_nfe
  from score_sde_jax.workdir import load_classifier
  config = ddpmpp_vp.get_config()
  config.model.nf, config.model.num_res_blocks, config.model.num_scales = 16, 1, 10
  c = config.classifier
  c.blocks_per_group, c.channel_multiplier, c.embedding_size = 1, 1, 16
  c.n_iters, c.batch_size, c.log_freq, c.eval_freq, c.snapshot_freq = 4, 16, 2, 2, 2
  workdir = str(tmp_path / "wd")
  modes.run("train_classifier", config, workdir)
  folder = os.path.join(workdir, "classifier")
  assert sorted(os.listdir(os.path.join(folder, "checkpoints"))) == ["2", "4"]
  with open(os.path.join(folder, "eval", "classifier_step4.json")) as f:
    report = json.load(f)
  assert report["num_evaluations"] == 180 * 23 and 0.0 <= report["accuracy"] <= 1.0
  clf = load_classifier(folder)
  assert clf.step == 4 and clf.num_classes == 10
  # Its features (WRN-10-1: 64 channels pooled) are what its output layer reads.
  x, t = jnp.linspace(-1, 1, 2 * 64).reshape(2, 8, 8, 1), jnp.asarray([0.01, 0.5])
  features = clf.feature_fn(x, t)
  dense = clf.params[max((k for k in clf.params if k.startswith("Dense_")),
                         key=lambda k: int(k.split("_")[1]))]
  assert features.shape == (2, 64)
  np.testing.assert_allclose(features @ dense["kernel"] + dense["bias"], clf.classifier_fn(x, t),
                             rtol=1e-5, atol=1e-5)
  sde, model = build.score_model(config).sde, build.score_model(config).network
  state = build.experiment(config).init_state()
  run = TrainedRun(workdir, build.experiment(config, inpaint=True), 0, state)
  samples, labels, result = sample_classes(run, clf, (0, 7, 3), samples_per_class=2, scale=2.0,
                                           dataset=build.experiment(config).data.load())
  s = config.sampling
  assert samples.shape == (3, 2, 8, 8, 1) and labels.tolist() == [0, 7, 3]
  assert samples.min() >= 0.0 and samples.max() <= 1.0
  assert result["nfe"] == pc_nfe(s.predictor, s.corrector, s.n_steps_each, 10)
  assert len(result["classifier_agreement_by_class"]) == 3
  path = os.path.join(workdir, "figures", "conditional_pc_euler_maruyama_none_scale2_step0.png")
  with Image.open(path) as img:
    assert img.size[1] > img.size[0] > 100     # 3 rows of 2 images
