"""Train state, optimizer and the jitted, sharded train step."""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from score_sde_jax import parallel


@flax.struct.dataclass
class TrainState:
  """Everything a training run needs to continue exactly: a pytree of arrays."""

  step: jax.Array        # int32 scalar: number of optimizer updates taken
  params: Any            # the network's ``params`` collection
  ema_params: Any        # exponential moving average of ``params`` (used for sampling)
  opt_state: Any         # optax state
  key: jax.Array         # PRNG key (raw uint32[2]) for the next step


LR_DECAYS = ("none", "cosine")


def learning_rate_schedule(lr: float, warmup: int, decay: str = "none",
                           total_steps: int = 0) -> optax.Schedule:
  """``lr * min(step / warmup, 1)``: the paper's linear warm-up (no warm-up if ``warmup == 0``);
  with ``decay="cosine"`` the rate then falls as a half cosine from ``lr`` at ``warmup`` to 0 at
  ``total_steps`` (and stays 0 after it). A run that ends within its warm-up has no decay."""
  if decay not in LR_DECAYS:
    raise ValueError(f"decay={decay!r}: expected one of {LR_DECAYS}")
  rise = optax.constant_schedule(lr) if warmup <= 0 else optax.linear_schedule(0.0, lr, warmup)
  if decay == "none":
    return rise
  if not (isinstance(total_steps, int) and total_steps > 0):
    raise ValueError(f"total_steps={total_steps!r}: a cosine decay needs the run's last step "
                     "(a positive integer)")
  if total_steps <= warmup:
    return rise
  fall = optax.cosine_decay_schedule(lr, total_steps - warmup)
  return fall if warmup <= 0 else optax.join_schedules([rise, fall], [warmup])


def make_optimizer(lr: float = 2e-4, warmup: int = 5000, grad_clip: float = 1.0, *,
                   beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                   weight_decay: float = 0.0, decay: str = "none",
                   total_steps: int = 0) -> optax.GradientTransformation:
  """Global-norm clipping then Adam(W) with linear warm-up (the paper's ``optimize_fn``), and
  optionally a cosine decay to 0 at ``total_steps`` (:func:`learning_rate_schedule`).

  ``grad_clip < 0`` disables clipping, as in the paper's config.
  """
  schedule = learning_rate_schedule(lr, warmup, decay, total_steps)
  parts = []
  if grad_clip >= 0:
    parts.append(optax.clip_by_global_norm(grad_clip))
  if weight_decay > 0:
    parts.append(optax.adamw(schedule, b1=beta1, b2=beta2, eps=eps, weight_decay=weight_decay))
  else:
    parts.append(optax.adam(schedule, b1=beta1, b2=beta2, eps=eps))
  return optax.chain(*parts)


def init_train_state(key: jax.Array, model, example_input: jax.Array, example_labels: jax.Array,
                     optimizer: optax.GradientTransformation) -> TrainState:
  """Initialises parameters (EMA starts equal to them) and the optimizer state."""
  key_init, key_state = jax.random.split(key)
  params = model.init({"params": key_init, "dropout": key_init}, example_input, example_labels,
                      train=False)["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    ema_params=jax.tree.map(jnp.copy, params),
                    opt_state=optimizer.init(params), key=key_state)


def _init_fn(network, example_shape, optimizer):
  example = jnp.zeros((1,) + tuple(example_shape))
  return lambda key: init_train_state(key, network, example, jnp.ones((1,)), optimizer)


def init_state(key, network, example_shape, optimizer, mesh=None) -> TrainState:
  """A fresh train state of ``network`` (a score network or a classifier: both take
  ``(x, label)``) for examples of ``example_shape``, compiled, replicated over ``mesh``."""
  init = jax.jit(_init_fn(network, example_shape, optimizer),
                 out_shardings=None if mesh is None else parallel.replicated(mesh))
  return init(key)


def abstract_state(network, example_shape, optimizer) -> TrainState:
  """Shapes and dtypes of :func:`init_state`'s result, without allocating it (a restore target)."""
  return jax.eval_shape(_init_fn(network, example_shape, optimizer), jax.random.PRNGKey(0))


def ema_update(ema_params, params, rate):
  """``ema <- rate * ema + (1 - rate) * params``.

  Written out rather than ``optax.ema``: that is a gradient transformation
  (with bias correction) over updates, whereas the paper averages parameters.
  """
  return jax.tree.map(lambda e, p: rate * e + (1.0 - rate) * p, ema_params, params)


def ema_decay(step, rate: float, warmup: bool = False):
  """The EMA's decay in the update that follows ``step`` updates: ``rate`` (the paper), or with
  ``warmup`` ``min(rate, (1 + step) / (10 + step))``, the warm-up of TensorFlow's
  ``ExponentialMovingAverage(num_updates=step)``: the first update keeps a tenth of the initial
  parameters, and the average covers about the last ``step / 10`` ... ``1 / (1 - rate)`` steps.
  Without it, the initial (random) parameters keep the weight ``rate ** step``: 0.22 after 1500
  steps at 0.999."""
  if not warmup:
    return rate
  return _warmed_up(jnp.asarray(step, jnp.float32), rate, jnp)


def _warmed_up(step, rate, xp):
  """The warm-up's decay after ``step`` updates, in ``xp`` (jax.numpy in the step, numpy on the host)."""
  return xp.minimum(rate, (1.0 + step) / (10.0 + step))


def ema_initial_weight(step: int, rate: float, warmup: bool = False) -> float:
  """The weight of the initial parameters in the EMA after ``step`` updates (host side, in float64):
  the product of :func:`ema_decay` over the updates."""
  if not warmup:
    return float(rate) ** int(step)
  decays = _warmed_up(np.arange(int(step), dtype=np.float64), rate, np)
  return float(np.exp(np.sum(np.log(decays))))


# Above this weight of the initial parameters, loading a checkpoint to sample or evaluate says so.
EMA_INITIAL_WEIGHT_WARNING = 0.05


def make_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation, *,
                    ema_rate: float, mesh=None, n_jitted_steps: int = 1, lr_schedule=None,
                    donate: bool = True, has_aux: bool = False, scan: bool | None = None,
                    loop: str = "scan", ema_warmup: bool = False):
  """The train step ``(state, batch) -> (state, metrics)``, jit-compiled over ``mesh``.

  ``loss_fn(key, params, batch) -> scalar`` (``has_aux=True``: ``-> (scalar, {name: scalar})``,
  whose entries join the step's metrics). With a mesh the batch is split
  over its ``data`` axis and the state is replicated; the gradient of the mean
  loss over the global batch is reduced by the compiler from the shardings,
  so there is no hand-written ``pmean``. ``mesh=None``: one device, plain
  ``jit``. The state is donated unless ``donate=False``. With
  ``n_jitted_steps = k > 1`` the batch has a leading axis of ``k`` steps run
  by ``lax.scan`` in one call, and every metric is ``(k,)``; ``scan=True`` gives that form for
  ``k = 1`` too (a loop's last, shorter call). ``loop="host"`` runs those ``k`` steps as ``k``
  calls of one compiled step instead (same inputs and outputs; :func:`steps_loop` says which is
  faster where): XLA:CPU runs the backward pass of convolutions 10-30x slower inside a loop.
  The EMA decays by :func:`ema_decay` (``ema_warmup``: with TensorFlow's warm-up).
  """
  if loop not in LOOPS:
    raise ValueError(f"loop={loop!r}: expected one of {sorted(LOOPS)}")

  def one_step(state: TrainState, batch):
    key, step_key = jax.random.split(state.key)
    out, grads = jax.value_and_grad(loss_fn, argnums=1, has_aux=has_aux)(
        step_key, state.params, batch)
    loss, aux = out if has_aux else (out, {})
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **aux}
    if lr_schedule is not None:
      metrics["lr"] = lr_schedule(state.step)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              ema_params=ema_update(state.ema_params, params,
                                                           ema_decay(state.step, ema_rate, ema_warmup)),
                              key=key)
    return new_state, metrics

  stacked = n_jitted_steps > 1 or bool(scan)
  host = stacked and loop == "host"
  if host:
    def step_fn(state, batches, i):   # step i of the stacked batches, compiled once
      return one_step(state, jax.tree.map(lambda b: b[i], batches))
  elif stacked:
    def step_fn(state, batches):
      return jax.lax.scan(one_step, state, batches)
  else:
    step_fn = one_step
  batch_axis = 1 if stacked else 0

  donate_argnums = (0,) if donate else ()
  if mesh is None:
    jitted = jax.jit(step_fn, donate_argnums=donate_argnums)
  else:
    state_sharding = parallel.replicated(mesh)
    in_shardings = (state_sharding, parallel.batch_sharding(mesh, batch_axis))
    if host:
      in_shardings += (parallel.replicated(mesh),)
    jitted = jax.jit(step_fn, in_shardings=in_shardings,
                     out_shardings=(state_sharding, parallel.replicated(mesh)),
                     donate_argnums=donate_argnums)
  if not host:
    return jitted

  def host_loop(state, batches):
    """The stacked steps as calls of one compiled step; metrics stacked as the scan's."""
    metrics = []
    for i in range(jax.tree.leaves(batches)[0].shape[0]):
      # With a mesh the index is a replicated global array: every process passes the same one.
      index = np.int32(i) if mesh is None else parallel.replicate(np.int32(i), mesh)
      state, m = jitted(state, batches, index)
      metrics.append(m)
    return state, jax.tree.map(lambda *ms: jnp.stack(ms), *metrics)

  return host_loop


LOOPS = ("scan", "host")


def steps_loop(backend: str, image_data: bool) -> str:
  """How to run several train steps per call (``make_train_step``'s ``loop``) on ``backend``:
  ``"host"`` for image networks on a CPU, ``"scan"`` everywhere else.

  Measured on the 2-core CPU (README, "Speed of the paper's networks"): a ``lax.scan`` of 5
  DDPM++ train steps ran 10x (8x8 images) to 33x (32x32) slower per step than one compiled
  step called 5 times, while a scan of the toy MLP's 50 steps is 8% faster than the host loop.
  On accelerators the scan is kept (one call, no host round trip per step).
  """
  return "host" if backend == "cpu" and image_data else "scan"


def make_eval_step(loss_fn: Callable, mesh=None):
  """``(state, batch, key) -> loss`` of the EMA parameters (as the paper evaluates)."""

  def eval_step(state, batch, key):
    return loss_fn(key, state.ema_params, batch)

  if mesh is None:
    return jax.jit(eval_step)
  return jax.jit(eval_step, in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh),
                                          parallel.replicated(mesh)),
                 out_shardings=parallel.replicated(mesh))
