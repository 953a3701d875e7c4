"""Optimizer, EMA, the jitted train step, and a short training run against the exact score."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs.toy import gmm_vp
from score_sde_jax.metric_writer import read_metrics
from score_sde_jax import build, modes, parallel, train
from score_sde_jax.losses import denoising_score_matching
from score_sde_jax.score import get_score_fn


def test_learning_rate_warmup_matches_paper():
  schedule = train.learning_rate_schedule(2e-4, 5000)
  for step, lr in [(0, 0.0), (2500, 1e-4), (5000, 2e-4), (100000, 2e-4)]:
    np.testing.assert_allclose(float(schedule(step)), lr, rtol=1e-6, atol=1e-12)
  np.testing.assert_allclose(float(train.learning_rate_schedule(1e-3, 0)(0)), 1e-3)


def test_cosine_decay_after_warmup():
  """``lr * (1 + cos(pi s / S)) / 2`` over the ``S = total - warmup`` steps after the warm-up."""
  schedule = train.learning_rate_schedule(1e-3, 200, "cosine", 8000)
  for step, lr in [(100, 5e-4), (200, 1e-3), (4100, 5e-4), (2150, 1e-3 * (1 + np.cos(np.pi / 4)) / 2),
                   (8000, 0.0), (9000, 0.0)]:
    np.testing.assert_allclose(float(schedule(step)), lr, rtol=1e-5, atol=1e-10)
  no_warmup = train.learning_rate_schedule(1e-3, 0, "cosine", 100)
  np.testing.assert_allclose([float(no_warmup(s)) for s in (0, 50, 100)], [1e-3, 5e-4, 0.0],
                             atol=1e-9)
  short = train.learning_rate_schedule(1e-3, 200, "cosine", 100)  # ends within the warm-up
  np.testing.assert_allclose([float(short(s)) for s in (50, 100)], [2.5e-4, 5e-4], rtol=1e-6)
  config = gmm_vp.get_config()
  config.optim.lr_decay = "cosine"
  config.training.n_iters = 0
  with pytest.raises(build.ConfigError, match=r"training.n_iters=0: it must be > 0"):
    build.get_optimizer(config)
  config.optim.lr_decay = "step"
  with pytest.raises(build.ConfigError, match=r"optim.lr_decay='step': expected one of"):
    build.get_optimizer(config)


def test_gradient_clipping_and_adam():
  """Clip to global norm 1 then Adam: the first step of Adam moves each weight by lr * sign(g)."""
  tx = train.make_optimizer(lr=0.1, warmup=0, grad_clip=1.0)
  params = {"w": jnp.zeros(3)}
  grads = {"w": jnp.array([30.0, -40.0, 0.0])}  # norm 50
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], [-0.1, 0.1, 0.0], atol=1e-6)
  clip_only = optax.clip_by_global_norm(1.0)
  clipped, _ = clip_only.update(grads, clip_only.init(params))
  np.testing.assert_allclose(clipped["w"], [0.6, -0.8, 0.0], rtol=1e-6)


def test_ema_update():
  ema = train.ema_update({"a": jnp.array(1.0)}, {"a": jnp.array(3.0)}, 0.9)
  np.testing.assert_allclose(ema["a"], 0.9 * 1 + 0.1 * 3)


@pytest.mark.parametrize("warmup", [False, True])
@pytest.mark.parametrize("k", [1, 5])
def test_ema_is_the_closed_form_weighting_of_the_iterates(warmup, k):
  """With decays d_t (d_t = rate; warm-up: min(rate, t / (9 + t)) in update t), the EMA after n
  updates is w_0 p_0 + sum_t w_t p_t with w_0 = prod_t d_t and w_t = (1 - d_t) prod_{s > t} d_s.
  Parameters that SGD moves by known amounts make each iterate p_t known."""
  rate, n = 0.95, 30
  moves = jnp.asarray(np.random.default_rng(0).normal(size=(n, 3)), jnp.float32)
  loss_fn = lambda key, params, batch: -jnp.sum(params["w"] * batch[0])   # SGD(1): w += batch
  state = train.TrainState(step=jnp.asarray(0), params={"w": jnp.zeros(3)},
                           ema_params={"w": jnp.zeros(3)}, opt_state=optax.sgd(1.0).init(
                               {"w": jnp.zeros(3)}), key=jax.random.PRNGKey(0))
  step = train.make_train_step(loss_fn, optax.sgd(1.0), ema_rate=rate, ema_warmup=warmup,
                               n_jitted_steps=k, donate=False)
  batches = moves[:, None, :]                                          # (n, batch of 1, 3)
  for i in range(0, n, k):
    state, _ = step(state, batches[i:i + k] if k > 1 else batches[i])
  t = np.arange(1, n + 1)
  d = np.minimum(rate, t / (9.0 + t)) if warmup else np.full(n, rate)
  later = np.append(np.cumprod(d[::-1])[::-1][1:], 1.0)               # prod_{s > t} d_s
  iterates = np.cumsum(np.asarray(moves, np.float64), axis=0)          # p_1 .. p_n (p_0 = 0)
  expected = ((1 - d) * later) @ iterates
  np.testing.assert_allclose(state.ema_params["w"], expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(train.ema_initial_weight(n, rate, warmup), np.prod(d), rtol=1e-12)
  np.testing.assert_allclose(np.prod(d) + np.sum((1 - d) * later), 1.0, rtol=1e-12)


def test_a_short_runs_ema_without_warm_up_is_named_when_loaded(capsys):
  """The README's digits recipe: 1500 steps at ema_rate 0.999 keep 0.999^1500 = 0.223 of the
  initial parameters; with the warm-up, prod_{n < 1500} (1 + n) / (10 + n) = 9! 1500! / 1509!
  (about 1e-23)."""
  from score_sde_jax.workdir import trained
  config = _small(gmm_vp.get_config())
  config.model.ema_rate, config.model.ema_warmup = 0.999, False
  weight = trained.warn_if_ema_is_untrained(build.experiment(config), 1500)
  np.testing.assert_allclose(weight, 0.999**1500, rtol=1e-12)
  err = capsys.readouterr().err
  assert err.startswith("warning: the EMA parameters of step 1500 still weigh the initial "
                        "(random) parameters by 0.22 (model.ema_rate=0.999, without "
                        "model.ema_warmup)"), err
  assert err.count("\n") == 1
  config.model.ema_warmup = True
  weight = trained.warn_if_ema_is_untrained(build.experiment(config), 1500)
  from math import lgamma
  np.testing.assert_allclose(weight, np.exp(lgamma(10) + lgamma(1501) - lgamma(1510)), rtol=1e-9)
  assert capsys.readouterr().err == ""
  # Long enough without warm-up: 0.999^3000 = 0.0497 < 0.05, nothing said.
  config.model.ema_warmup = False
  trained.warn_if_ema_is_untrained(build.experiment(config), 3000)
  assert capsys.readouterr().err == ""


def test_a_short_classifier_runs_ema_is_named_too(capsys):
  """The classifier has the same warm-up (classifier.ema_warmup, on in new configs) and the
  same warning when it is loaded."""
  from score_sde_jax.workdir import trained
  config = _small(gmm_vp.get_config())
  assert config.classifier.ema_warmup is True
  config.classifier.ema_rate, config.classifier.ema_warmup = 0.999, False
  weight = trained.warn_if_ema_is_untrained(build.experiment(config, classifier=True), 2000,
                                            classifier=True)
  np.testing.assert_allclose(weight, 0.999**2000, rtol=1e-12)
  err = capsys.readouterr().err
  assert err.startswith("warning: the classifier's EMA parameters of step 2000 still weigh the "
                        "initial (random) parameters by 0.14 (classifier.ema_rate=0.999, without "
                        "classifier.ema_warmup): the classifier's guidance and features are "
                        "those of a partly trained network"), err
  config.classifier.ema_warmup = True
  trained.warn_if_ema_is_untrained(build.experiment(config, classifier=True), 2000,
                                   classifier=True)
  assert capsys.readouterr().err == ""


def _small(config):
  config.model.hidden = 32
  config.model.num_layers = 1
  config.training.batch_size = 64
  return config


def _setup(n_jitted, loop="scan"):
  config = _small(gmm_vp.get_config())
  config.training.n_jitted_steps = n_jitted
  exp = build.experiment(config)
  sde, model, dataset = exp.sde, exp.model.network, exp.data.load()
  mesh = parallel.make_mesh()
  optimizer = exp.optimizer.make()
  state = exp.init_state(mesh)
  loss_fn = exp.loss_fn(train_mode=True)
  step = train.make_train_step(loss_fn, optimizer, ema_rate=0.9, mesh=mesh, n_jitted_steps=n_jitted,
                               donate=False, loop=loop)
  return config, dataset, state, step, loss_fn, optimizer


@pytest.mark.usefixtures("cheap_compiles")   # a step or four: compiling is their time
def test_train_step_is_one_adam_update_with_ema():
  config, dataset, state, step, loss_fn, optimizer = _setup(1)
  batch = next(dataset.batches(64, 0))
  new_state, metrics = step(state, jnp.asarray(batch))
  _, step_key = jax.random.split(state.key)
  # Jitted (op-by-op dispatch of the loss and Adam compiles every operation: 15 s), separately
  # from the train step's one program.
  loss, grads = jax.jit(jax.value_and_grad(loss_fn, argnums=1))(step_key, state.params, batch)
  updates, _ = jax.jit(optimizer.update)(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  for e, p0, p1 in zip(jax.tree.leaves(new_state.ema_params), jax.tree.leaves(state.params),
                       jax.tree.leaves(params)):
    np.testing.assert_allclose(e, 0.9 * p0 + 0.1 * p1, rtol=1e-5, atol=1e-7)
  assert int(new_state.step) == 1


@pytest.mark.parametrize("loop", [loop if loop == "scan" else pytest.param(loop, marks=pytest.mark.slow)
                                  for loop in train.LOOPS])
@pytest.mark.usefixtures("cheap_compiles")
def test_n_jitted_steps_equals_single_steps(loop):
  _, dataset, state, step1, _, _ = _setup(1)
  _, _, state_k, step4, _, _ = _setup(4, loop)
  batches = next(dataset.batches(64, 0, steps_per_batch=4))
  s = state
  losses = []
  for b in batches:
    s, m = step1(s, jnp.asarray(b))
    losses.append(m["loss"])
  sk, mk = step4(state_k, jnp.asarray(batches))
  np.testing.assert_allclose(mk["loss"], losses, rtol=1e-4)
  for a, b in zip(jax.tree.leaves(sk), jax.tree.leaves(s)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert mk["loss"].shape == (4,) and int(sk.step) == 4


def test_the_steps_loop_is_the_host_for_image_networks_on_a_cpu_only():
  assert train.steps_loop("cpu", image_data=True) == "host"
  assert train.steps_loop("cpu", image_data=False) == "scan"
  assert train.steps_loop("gpu", image_data=True) == "scan"
  assert train.steps_loop("tpu", image_data=True) == "scan"
  with pytest.raises(ValueError, match="loop='python': expected one of \\['host', 'scan'\\]"):
    train.make_train_step(lambda k, p, b: 0.0, train.make_optimizer(), ema_rate=0.9, loop="python")


@pytest.mark.slow
def test_short_training_learns_the_exact_score(tmp_path):
  """2-D ring mixture, VP: eval loss falls and the EMA score is near the exact marginal score."""
  config = gmm_vp.get_config()
  config.training.n_iters = 3000
  config.training.eval_freq = 1000
  config.model.ema_rate = 0.99
  state = modes.run("train", config, str(tmp_path / "wd"))
  rows = read_metrics(str(tmp_path / "wd" / "metrics.jsonl"))
  train_losses = [r["loss"] for r in rows if "loss" in r]
  assert len(train_losses) == 30 and np.mean(train_losses[-5:]) < 0.7 * train_losses[0]
  for name in ("loss.png", "forward_diffusion.png", "score_field.png"):
    assert (tmp_path / "wd" / "figures" / name).stat().st_size > 10_000

  exp = build.experiment(config)

  sde, model, gmm = exp.sde, exp.model.network, exp.data.load()
  score_fn = jax.jit(get_score_fn(sde, model, state.ema_params, continuous=True))
  exact_fn = lambda x, t: gmm.marginal_score(sde, x, t)
  # The exact score attains the minimum of the DSM loss; the model comes within 3 %.
  x0 = jnp.asarray(gmm.sample(np.random.default_rng(1), 20000), jnp.float32)
  key = jax.random.PRNGKey(5)
  model_loss = float(denoising_score_matching(key, sde, score_fn, x0))
  exact_loss = float(denoising_score_matching(key, sde, exact_fn, x0))
  assert exact_loss * 0.99 < model_loss < exact_loss * 1.03, (model_loss, exact_loss)
  for t, tol in [(0.05, 0.3), (0.1, 0.25), (0.3, 0.15), (0.7, 0.1)]:
    x = jnp.asarray(gmm.marginal_sample(sde, np.random.default_rng(0), 4000, t), jnp.float32)
    tt = jnp.full((4000,), t)
    exact, learned = gmm.marginal_score(sde, x, tt), score_fn(x, tt)
    rel = float(jnp.sqrt(jnp.sum((learned - exact) ** 2) / jnp.sum(exact**2)))
    assert rel < tol, (t, rel)


@pytest.mark.slow
@pytest.mark.parametrize("config_name", ["gmm_vp", "gmm_ve"])
def test_discrete_time_training_lowers_the_loss(config_name, tmp_path):
  """training.continuous=False: DDPM's loss (VP) and SMLD's (VE) through the same loop."""
  import importlib
  config = importlib.import_module(f"configs.toy.{config_name}").get_config()
  config.training.continuous = False
  config.training.n_iters = 1000
  config.training.eval_freq = 1000
  config.model.embedding_type = "positional"  # discrete labels are step indices
  config.model.hidden = 64
  modes.run("train", config, str(tmp_path / "wd"))
  rows = [r["loss"] for r in read_metrics(str(tmp_path / "wd" / "metrics.jsonl")) if "loss" in r]
  assert np.all(np.isfinite(rows)) and np.mean(rows[-3:]) < 0.7 * rows[0], rows


def _tiny_run_config(n_iters):
  config = _small(gmm_vp.get_config())
  config.model.hidden = 16
  t = config.training
  t.n_iters, t.n_jitted_steps, t.log_freq, t.eval_freq = n_iters, 10, 10, 1000
  t.snapshot_freq_for_preemption, t.snapshot_freq = 20, 1000
  config.eval.num_batches = 0
  return config


@pytest.mark.slow
def test_training_stops_exactly_at_n_iters_and_resumes_off_the_grid(tmp_path):
  """n_iters = 35 with n_jitted_steps = 10: calls of 10, 10, 10 and 5 steps, a checkpoint at 35;
  resuming to 50 from there runs 5 then 10 steps and reaches the state of a straight run (same
  batches and keys, step by step; only the compiled scan lengths differ: bit-identical here,
  the tolerance allows another machine's compiler to fuse a 5-step scan differently)."""
  from score_sde_jax import workdir as workdir_lib
  wd = str(tmp_path / "wd")
  state = modes.run("train", _tiny_run_config(35), wd)
  assert int(state.step) == 35
  assert workdir_lib.checkpoints(wd).all_steps() == [20, 35]
  rows = read_metrics(f"{wd}/metrics.jsonl")
  assert [r["step"] for r in rows if "loss" in r] == [10, 20, 30, 35]
  resumed = modes.run("train", _tiny_run_config(50), wd)
  assert int(resumed.step) == 50
  assert [r["step"] for r in read_metrics(f"{wd}/metrics.jsonl") if "loss" in r] == [
      10, 20, 30, 35, 40, 50]
  straight = modes.run("train", _tiny_run_config(50), str(tmp_path / "straight"))
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
