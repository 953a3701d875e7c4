"""The paper's 39 configs (its 28 and the 11 NCSN / NCSNv2 baselines) against the original's
values, parameter counts and objectives; the original's data preprocessing; its probability-flow
convention for discrete-time VP models."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs.toy import gmm_vp
from score_sde_jax import build, likelihood, modes, train
from score_sde_jax.data import files, images as image_data
from score_sde_jax.score import get_score_fn
from score_sde_jax.sde import VESDE, VPSDE, subVPSDE
from score_sde_jax.workdir import TrainedRun

pytestmark = pytest.mark.usefixtures("cheap_compiles")   # conftest.py: compiling is their time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
with open(os.path.join(FIXTURES, "original_configs.json")) as f:
  ORIGINAL = json.load(f)["configs"]  # 39 configs: every field the original's get_config() sets
with open(os.path.join(FIXTURES, "paper_param_counts.json")) as f:
  ORIGINAL_COUNTS = json.load(f)["counts"]  # 27: the PyTorch port cannot build the unconditional one
with open(os.path.join(FIXTURES, "ncsn", "param_counts.json")) as f:
  # The 11 baselines as ermongroup's PyTorch builds them (whose checkpoints users load), and the
  # NCSNv2 ones as the original JAX code builds them (its NCSN cannot be built).
  _BASELINE_COUNTS = json.load(f)
  ERMONGROUP_COUNTS, ORIGINAL_JAX_COUNTS = (_BASELINE_COUNTS["ermongroup"],
                                            _BASELINE_COUNTS["original_jax"])
PAPER_CONFIGS = sorted(ORIGINAL)

# Fields of the original that this library does not have, each with the reason (README "Configs").
DELIBERATE_DIFFERENCES = {
    "data.tfrecords_path": "the original's paths on its authors' clusters; this library reads "
                           "data.path (a folder of images or an npz), never TFRecords",
}


def load(rel_path):
  spec = importlib.util.spec_from_file_location(rel_path.replace("/", "_")[:-3],
                                                os.path.join(ROOT, rel_path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_all_39_paper_configs_and_their_defaults_exist():
  assert len(PAPER_CONFIGS) == 39
  for rel in PAPER_CONFIGS + [f"configs/default_{n}_configs.py" for n in ("cifar10", "celeba", "lsun")]:
    assert os.path.isfile(os.path.join(ROOT, rel)), rel
  assert sum("/ncsn/" in p or "/ncsnv2/" in p for p in PAPER_CONFIGS) == 11


def _same(ours, theirs):
  if isinstance(theirs, (list, tuple)):
    return isinstance(ours, (list, tuple)) and list(ours) == list(theirs)
  if isinstance(theirs, bool) or isinstance(ours, bool):
    return type(ours) is type(theirs) and ours == theirs
  return ours == theirs


@pytest.mark.parametrize("rel", PAPER_CONFIGS)
def test_every_field_has_the_originals_value(rel):
  """training, model, sampling, optim, data (and eval, seed): every field the original sets."""
  ours, theirs = load(rel).to_dict(), ORIGINAL[rel]
  wrong = []
  for section in ("training", "model", "sampling", "optim", "data", "eval"):
    for field, value in theirs[section].items():
      path = f"{section}.{field}"
      if path in DELIBERATE_DIFFERENCES:
        assert field not in ours[section], f"{path}: listed as a deliberate difference"
      elif field not in ours[section]:
        wrong.append(f"{path}: missing (original {value!r})")
      elif not _same(ours[section][field], value):
        wrong.append(f"{path}={ours[section][field]!r}, original {value!r}")
  if ours["seed"] != theirs["seed"]:
    wrong.append(f"seed={ours['seed']}, original {theirs['seed']}")
  assert not wrong, wrong


def test_the_issue_13_fixes_hold():
  """The four DDPM++ configs average over dimensions, the deep ones stop at 950001, and
  vp/ddpm/cifar10 carries the original's (unused) embedding_type."""
  for rel in ("vp/cifar10_ddpmpp_continuous", "vp/cifar10_ddpmpp_deep_continuous",
              "subvp/cifar10_ddpmpp_continuous", "subvp/cifar10_ddpmpp_deep_continuous"):
    assert load(f"configs/{rel}.py").training.reduce_mean is True, rel
  for rel in PAPER_CONFIGS:
    if "deep" in rel:
      assert load(rel).training.n_iters == 950001, rel
  assert load("configs/vp/ddpm/cifar10.py").model.embedding_type == "fourier"


def _ddpm_time_embedding_params(nf, ch_mult, num_res_blocks):
  """Parameters of DDPM's time conditioning (Ho et al.'s U-Net, the original's models/ddpm.py):
  the embedding MLP (nf -> 4 nf -> 4 nf) and each ResNet block's projection 4 nf -> its width.
  Down path: num_res_blocks blocks per level; middle: 2; up path: num_res_blocks + 1 per level."""
  widths = [nf * m for m in ch_mult for _ in range(num_res_blocks)]
  widths += [nf * ch_mult[-1]] * 2
  widths += [nf * m for m in reversed(ch_mult) for _ in range(num_res_blocks + 1)]
  temb = 4 * nf
  mlp = (nf * temb + temb) + (temb * temb + temb)
  return mlp + sum(temb * w + w for w in widths)


def original_count(rel):
  """The original's parameter count; for vp/ddpm/cifar10_unconditional (which the PyTorch port
  cannot build) the conditional network's count less its time conditioning; for the NCSN /
  NCSNv2 baselines, ermongroup's networks' (test_ncsnv2_differs_from_the_jax_port_by_one_width)."""
  if rel in ORIGINAL_COUNTS:
    return ORIGINAL_COUNTS[rel]
  if rel in ERMONGROUP_COUNTS:
    return ERMONGROUP_COUNTS[rel]
  assert rel == "configs/vp/ddpm/cifar10_unconditional.py"
  m = ORIGINAL[rel]["model"]
  assert m["conditional"] is False
  conditional = ORIGINAL["configs/vp/ddpm/cifar10.py"]["model"]
  assert {k: v for k, v in conditional.items() if k != "conditional"} == \
         {k: v for k, v in m.items() if k != "conditional"}
  return ORIGINAL_COUNTS["configs/vp/ddpm/cifar10.py"] - _ddpm_time_embedding_params(
      m["nf"], m["ch_mult"], m["num_res_blocks"])


def test_ncsnv2_differs_from_the_jax_port_by_one_width():
  """The paper's JAX NCSNv2 (``ncsnv2_64``) gives its third RefineBlock 2 nf features where
  ermongroup's, whose checkpoints users load and which this library follows, has nf. With F that
  width: refine3's fusion convs (2 x 3x3 from 2 nf, with bias), pooling convs (2) and output
  RCU (2 convs) hold 36 nf F + 2 F + 36 F^2 parameters, and refine4's RCU on refine3's output
  (4 convs) and fusion conv (to nf) 36 F^2 + 9 F nf. The 128-pixel networks agree."""
  nf = 128
  def width_terms(f):
    return 36 * nf * f + 2 * f + 36 * f**2 + 36 * f**2 + 9 * f * nf
  for rel in ("configs/ve/ncsnv2/cifar10.py", "configs/ve/ncsnv2/celeba.py"):
    assert ORIGINAL_JAX_COUNTS[rel] - ERMONGROUP_COUNTS[rel] == width_terms(2 * nf) - width_terms(nf)
  assert ORIGINAL_JAX_COUNTS["configs/ve/ncsnv2/bedroom.py"] == \
      ERMONGROUP_COUNTS["configs/ve/ncsnv2/bedroom.py"]


def test_the_unconditional_ddpm_count_is_derived():
  assert original_count("configs/vp/ddpm/cifar10_unconditional.py") == 35_218_947 - 2_889_600


@pytest.mark.parametrize("rel", PAPER_CONFIGS)
def test_info_prints_the_originals_parameter_count(rel, capsys):
  """What ``run.py --config <rel> --mode info`` runs: shapes only, nothing allocated."""
  summary = modes.run("info", load(rel))
  assert summary["params"] == original_count(rel)
  assert f"{original_count(rel):>12,d}" in capsys.readouterr().out


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="peak RSS read from Linux /proc")
def test_run_py_info_on_a_1024_network_allocates_no_parameters():
  """The 106M-parameter FFHQ 1024 network would take 423 MB in float32; the whole process
  (Python, JAX, XLA) stays below that."""
  rel = "configs/ve/ffhq_ncsnpp_continuous.py"
  code = ("import resource, runpy, sys\n"
          f"sys.argv = ['run.py', '--config', {rel!r}, '--mode', 'info']\n"
          "try:\n  runpy.run_path('run.py', run_name='__main__')\n"
          "except SystemExit as e:\n  assert not e.code, e.code\n"
          # VmHWM: this process's peak RSS (ru_maxrss would include pytest's, inherited at fork)
          "print('maxrss_kb', [l.split()[1] for l in open('/proc/self/status')\n"
          "                    if l.startswith('VmHWM')][0])\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, check=True).stdout
  assert json.loads(out.splitlines()[-2])["params"] == ORIGINAL_COUNTS[rel]
  maxrss_mb = int(out.split("maxrss_kb")[1]) / 1024
  assert maxrss_mb < ORIGINAL_COUNTS[rel] * 4 / 2**20, maxrss_mb


# --- A few training steps of each (SDE, continuous, network) combination, at 16 x 16 ---------------

SMOKE = {  # one config per combination; the richest network variant where several share one
    ("subvpsde", True, "ddpm"): "configs/subvp/cifar10_ddpm_continuous.py",
    ("subvpsde", True, "ncsnpp"): "configs/subvp/cifar10_ncsnpp_continuous.py",
    ("vesde", True, "ncsnpp"): "configs/ve/bedroom_ncsnpp_continuous.py",  # output / input skip
    ("vesde", False, "ncsnpp"): "configs/ve/cifar10_ncsnpp.py",
    ("vesde", False, "ddpm"): "configs/ve/cifar10_ddpm.py",
    ("vpsde", False, "ncsnpp"): "configs/vp/cifar10_ddpmpp.py",
    ("vpsde", True, "ncsnpp"): "configs/vp/cifar10_ddpmpp_continuous.py",
    ("vpsde", False, "ddpm"): "configs/vp/ddpm/cifar10_unconditional.py",  # and unconditional
    ("vpsde", True, "ddpm"): "configs/vp/ddpm/cifar10_continuous.py",
}


# The NCSN / NCSNv2 baselines: one config per network (ncsnv2_256 has no paper config).
REFINENET_SMOKE = {"ncsn": "configs/ve/ncsn/cifar10.py", "ncsnv2_64": "configs/ve/ncsnv2/cifar10.py",
                   "ncsnv2_128": "configs/ve/ncsnv2/bedroom.py",
                   "ncsnv2_256": "configs/ve/ncsnv2/cifar10.py"}


def test_the_smoke_table_covers_every_combination():
  combos = {(o["training"]["sde"], o["training"]["continuous"], o["model"]["name"])
            for o in ORIGINAL.values() if not o["model"]["name"].startswith("ncsnv2")
            and o["model"]["name"] != "ncsn"}
  assert combos == set(SMOKE)
  assert {o["model"]["name"] for o in ORIGINAL.values()} - {n for _, _, n in SMOKE} == \
      set(REFINENET_SMOKE) - {"ncsnv2_256"}
  for (sde, continuous, name), rel in SMOKE.items():
    o = ORIGINAL[rel]
    assert (o["training"]["sde"], o["training"]["continuous"], o["model"]["name"]) == (sde, continuous, name)


# Slow, all nine (make test-all, CI): compiling a paper network's gradient is 36 s of make test.
# make test checks the same train step exactly on an MLP (tests/test_train.py) and NCSN++'s
# forward against the original's outputs (tests/test_convert.py).
@pytest.mark.slow
@pytest.mark.parametrize("rel", sorted(SMOKE.values()))
def test_a_few_training_steps_at_16x16(rel):
  """The config's network family and objective, shrunk. Its last layer starts at zero
  (init_scale = 0), so every objective's first loss is that of a zero network: the mean of
  z^2 over the batch, averaged over dimensions (reduce_mean) or half-summed. Over 8 x 768
  normals its relative standard deviation is sqrt(2 / 6144) = 0.018; the bound is 5.5 of them."""
  config = load(rel)
  m = config.model
  config.data.image_size = 16
  m.nf = 32 if m.name == "ddpm" else 16   # DDPM normalises with 32 groups
  m.ch_mult, m.num_res_blocks, m.attn_resolutions = (1, 2), 1, (8,)
  experiment = build.experiment(config)
  state = experiment.init_state()
  step = train.make_train_step(experiment.loss_fn(train_mode=True), experiment.optimizer.make(),
                               ema_rate=m.ema_rate, donate=False)
  x = jax.random.uniform(jax.random.PRNGKey(1), (8, 16, 16, 3))
  x = 2 * x - 1 if config.data.centered else x
  losses, new = [], state
  for _ in range(3):
    new, metrics = step(new, x)
    losses.append(float(metrics["loss"]))
  zero_network_loss = 1.0 if config.training.reduce_mean else 16 * 16 * 3 / 2
  assert abs(losses[0] / zero_network_loss - 1) < 0.1, losses
  assert np.all(np.isfinite(losses)) and int(new.step) == 3
  moved = [float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(new.params),
                                                           jax.tree.leaves(state.params))]
  assert max(moved) > 0 and all(np.isfinite(moved))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REFINENET_SMOKE))
def test_each_refinenet_learns_in_a_few_steps_at_16x16(name):
  """NCSN / NCSNv2 with their configs' objective (SMLD on the discrete levels; the bedroom
  config's continuous VE), nf 8, on one batch: the loss of the last 10 of 40 steps is below 0.95
  of the first 10 (measured 0.85-0.88; a batch's loss varies by about 2% from step to step)."""
  config = load(REFINENET_SMOKE[name])
  config.model.name, config.model.nf, config.data.image_size = name, 8, 16
  experiment = build.experiment(config)
  state = experiment.init_state()
  step = train.make_train_step(experiment.loss_fn(train_mode=True), experiment.optimizer.make(),
                               ema_rate=config.model.ema_rate, donate=False)
  x = jax.random.uniform(jax.random.PRNGKey(1), (8, 16, 16, 3))
  losses = []
  for _ in range(40):
    state, metrics = step(state, x)
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses)) and int(state.step) == 40
  assert np.mean(losses[-10:]) < 0.95 * np.mean(losses[:10]), losses


# --- The original's preprocessing per data set -----------------------------------------------------

A, B = (200, 10, 50), (0, 250, 0)


def _noise(h, w, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_celeba_crops_the_centre_140_then_resizes():
  """178 x 218 aligned faces: the crop is rows 39..178, columns 19..158 (the original's
  ``(218 - 140) // 2`` and ``(178 - 140) // 2``); only that region reaches the output."""
  img = _noise(218, 178)
  img[39:179, 19:159] = A
  out = np.asarray(files.celeba_preprocess(Image.fromarray(img), 64))
  assert out.shape == (64, 64, 3) and np.all(out == A)
  img[39, 19:159] = B   # the crop's first row: now it shows
  out = np.asarray(files.celeba_preprocess(Image.fromarray(img), 64))
  assert np.any(out[0] != A) and np.all(out[2:] == A)


def test_lsun_crops_the_centred_square_then_resizes():
  img = _noise(30, 50)   # h 30, w 50: the square is columns 10..39
  img[:, 10:40] = A
  out = np.asarray(files.lsun_preprocess(Image.fromarray(img), 16))
  assert out.shape == (16, 16, 3) and np.all(out == A)
  # At 128 the original resizes the shorter side first, then takes the centre.
  img = np.zeros((256, 384, 3), np.uint8) + np.uint8(A)
  img[:, :64] = B   # the left 64 columns: after halving, 32 columns left of the crop
  out = np.asarray(files.lsun_preprocess(Image.fromarray(img), 128))
  assert out.shape == (128, 128, 3) and np.all(out[:, 2:] == A)


def test_named_data_sets_read_a_folder_lazily_with_their_preprocessing(tmp_path, monkeypatch):
  folder = tmp_path / "img_align_celeba"
  os.makedirs(folder)
  colours = np.random.default_rng(1).integers(0, 256, (10, 3), dtype=np.uint8)
  for i, colour in enumerate(colours):
    img = _noise(218, 178, seed=i)
    img[39:179, 19:159] = colour
    Image.fromarray(img).save(folder / f"{i:06d}.png")
  config = load("configs/ve/celeba_ncsnpp.py")
  config.data.path = str(folder)
  config.data.image_size = 16
  config.model.ch_mult = (1, 2)
  loaded = []
  original_load = files.ImageFiles.load
  monkeypatch.setattr(files.ImageFiles, "load",
                      lambda self, i: loaded.append(i) or original_load(self, i))
  dataset = build.experiment(config).data.load()
  assert len(loaded) == 1   # the first file, read to check the folder
  batch = next(dataset.batches(4, seed=0))
  assert len(loaded) == 5 and batch.shape == (4, 16, 16, 3)
  # Every image is its centre colour, as 8-bit levels k / 255.
  levels = np.round(batch * 255).reshape(4, -1, 3)
  assert np.all(levels == levels[:, :1]) and all(
      any(np.array_equal(l[0], c) for c in colours) for l in levels)
  held_out = dataset.held_out(1)
  assert held_out.dtype == np.uint8 and held_out.shape == (1, 16, 16, 3)


def test_ffhq_images_at_the_config_size_are_taken_as_they_are(tmp_path):
  os.makedirs(tmp_path / "ffhq")
  images = [_noise(16, 16, seed=i) for i in range(4)]
  for i, img in enumerate(images):
    Image.fromarray(img).save(tmp_path / "ffhq" / f"{i}.png")
  data = image_data.from_path(str(tmp_path / "ffhq"), image_size=16, num_channels=3,
                              preprocess=image_data.PREPROCESS["ffhq"], eval_fraction=0.25)
  everything = np.concatenate([data.train_levels[:], data.test_levels[:]])
  assert sorted(x.tobytes() for x in everything) == sorted(x.tobytes() for x in images)
  # An npz of larger images goes through the same preprocessing.
  big = np.stack([np.kron(img, np.ones((2, 2, 1), np.uint8)) for img in images])
  np.savez(tmp_path / "ffhq.npz", images=big)
  data = image_data.from_path(str(tmp_path / "ffhq.npz"), image_size=16, num_channels=3,
                              preprocess=image_data.PREPROCESS["ffhq"], eval_fraction=0.25)
  assert data.shape == (16, 16, 3)


def test_a_held_out_folder_is_the_eval_split(tmp_path):
  for name, n in (("train", 5), ("val", 2)):
    os.makedirs(tmp_path / name)
    for i in range(n):
      Image.fromarray(_noise(16, 16, seed=10 * n + i)).save(tmp_path / name / f"{i}.png")
  data = image_data.image_folder(str(tmp_path / "train"), image_size=16, num_channels=3,
                                 eval_path=str(tmp_path / "val"))
  assert len(data.train_levels) == 5 and len(data.test_levels) == 2
  np.testing.assert_array_equal(data.held_out(2)[1], _noise(16, 16, seed=21))


# --- The original's conventions beside the configs ------------------------------------------------

def test_small_t_noise_levels_use_expm1():
  """1 - exp(-x) in float32 made the VP std 23% off at t = 1e-6; expm1 is exact to rounding."""
  t = np.array([1e-7, 1e-6, 1e-5, 1e-3], np.float64)
  for sde in (VPSDE(), subVPSDE()):
    log_mean = -0.25 * t**2 * (sde.beta_max - sde.beta_min) - 0.5 * t * sde.beta_min
    var = -np.expm1(2 * log_mean)
    exact = np.sqrt(var) if isinstance(sde, VPSDE) else var
    std = np.asarray(sde.marginal_prob(jnp.zeros((4, 1)), jnp.asarray(t, jnp.float32))[1])
    np.testing.assert_allclose(std, exact, rtol=1e-5)


def test_discrete_vp_models_use_the_continuous_score_for_the_flow():
  """As the original's ODE sampler and likelihood: DDPM's sqrt(1 - alphabar_i) jumps at every
  chain step (10x the kernel's std at t = 1e-5); the flow uses the smooth kernel std."""
  sde = VPSDE()
  t = jnp.array([1e-5])
  discrete = float(sde.sqrt_1m_alphas_cumprod[sde.chain_index(t)][0])
  kernel = float(sde.marginal_prob(jnp.zeros((1, 1)), t)[1][0])
  assert discrete / kernel > 9
  assert VPSDE().flow_continuous(False) and not VESDE().flow_continuous(False)

  config = gmm_vp.get_config()
  config.training.continuous = False
  config.model.hidden, config.model.num_layers = 16, 1
  sde, model = build.score_model(config).sde, build.score_model(config).network
  state = build.experiment(config).init_state()
  # Non-zero outputs: the MLP's last layer is zero at initialisation.
  state = state.replace(ema_params=jax.tree.map(
      lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(3), p.shape), state.ema_params))
  run = TrainedRun("", build.experiment(config), 0, state)
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 2))
  times = jnp.linspace(1e-3, 1.0, 16)
  training_score = build.score_model(config).score_fn(state.ema_params)
  smooth = get_score_fn(sde, model, state.ema_params, True)
  np.testing.assert_allclose(run.flow_score_fn(x, times), smooth(x, times), rtol=1e-6, atol=1e-6)
  assert float(jnp.max(jnp.abs(run.score_fn(x, times) - smooth(x, times)))) > 1e-2
  assert float(jnp.max(jnp.abs(training_score(x, times) - run.score_fn(x, times)))) == 0
  logp = run.log_likelihood(None, x, divergence="exact").logp
  expected = likelihood.log_likelihood(None, sde, smooth, x, divergence="exact",
                                       rtol=config.eval.rtol, atol=config.eval.atol,
                                       eps=config.eval.likelihood_eps).logp
  np.testing.assert_allclose(logp, expected, rtol=1e-6)
