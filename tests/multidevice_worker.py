"""Run by tests/test_parallel.py in a subprocess with several forced CPU devices.

Computes the same things on a 1-device mesh and on an n-device mesh (both in
this process) and prints one JSON object of their largest differences, so the
rest of the test suite keeps its single device. Usage:

  XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/multidevice_worker.py [--x64]

Float32 (default): train steps, PC and SDE sampling. Adaptive solves (ODE
sampling, likelihood, encoding) amplify round-off through their accept /
reject decisions (a 1-ulp difference in one stage can flip a step), so they
are compared with ``--x64`` (JAX_ENABLE_X64 set by the caller), where the
same solves agree to ~1e-13 and any mixing of examples across devices or a
wrong probe would show at once.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from configs.toy import gmm_vp  # noqa: E402
from score_sde_jax import build, likelihood, parallel, train  # noqa: E402
from score_sde_jax.sampling import ode_sample, pc_sample, sde_sample  # noqa: E402
from score_sde_jax.score import get_score_fn  # noqa: E402


def max_diff(a, b):
  """Largest absolute difference over two pytrees, and the largest magnitude (for scale)."""
  la, lb = jax.tree.leaves(parallel.to_host(a)), jax.tree.leaves(parallel.to_host(b))
  assert len(la) == len(lb)
  diff = max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(la, lb))
  scale = max(float(np.max(np.abs(np.asarray(x)))) for x in la)
  return diff, scale


def train_states(mesh, config, n_steps, k, loop="scan"):
  """``n_steps`` optimizer steps from the same init and batches, ``k`` steps per call (by
  ``loop``)."""
  config.training.n_jitted_steps = k
  exp = build.experiment(config)
  sde, model, dataset = exp.sde, exp.model.network, exp.data.load()
  optimizer = exp.optimizer.make()
  state = exp.init_state(mesh)
  step = train.make_train_step(exp.loss_fn(train_mode=True), optimizer,
                               ema_rate=config.model.ema_rate, mesh=mesh, n_jitted_steps=k,
                               loop=loop)
  b = config.training.batch_size
  batches = dataset.batches(b, config.seed, steps_per_batch=k if k > 1 else 0,
                            rows=parallel.local_rows(mesh, b) if k == 1 else None)
  losses = []
  for _ in range(n_steps // k):
    state, metrics = step(state, parallel.shard_batch(next(batches), mesh, 1 if k > 1 else 0))
    losses.append(np.asarray(metrics["loss"]))
  return state, np.concatenate([np.ravel(x) for x in losses] or [np.zeros(0)])


def mixed_score(config, params):
  """The exact mixture score plus a small term from the network.

  The parameters travel through the sharded samplers (replicated) while the
  solves stay well conditioned (a barely trained network alone makes the
  adaptive solves stiff).
  """
  exp = build.experiment(config)
  sde, model, dataset = exp.sde, exp.model.network, exp.data.load()
  network = get_score_fn(sde, model, params, True)

  def mixed(network, x, t):
    std = sde.marginal_prob(x, t)[1]
    return dataset.marginal_score(sde, x, t) + 0.05 * std[:, None] * network(x, t).astype(x.dtype)

  return sde, jax.tree_util.Partial(mixed, network)


def small_config():
  config = gmm_vp.get_config()
  config.model.hidden = 64
  config.model.num_layers = 2
  config.training.batch_size = 64
  config.optim.warmup = 0
  config.optim.lr = 1e-3
  return config


def main_float32(one, many, out):
  config = small_config()
  for n_steps, k, loop in [(1, 1, "scan"), (10, 1, "scan"), (10, 5, "scan"), (10, 5, "host")]:
    s1, l1 = train_states(one, config, n_steps, k, loop)
    sn, ln = train_states(many, config, n_steps, k, loop)
    out[f"train_{n_steps}_k{k}" + ("_host" if loop == "host" else "")] = {
        "n_steps": n_steps, "lr": config.optim.lr, "beta1": config.optim.beta1, "beta2": 0.999,
        "params": max_diff(s1.params, sn.params), "ema": max_diff(s1.ema_params, sn.ema_params),
        "first_loss": max_diff(l1[:1], ln[:1]), "loss": max_diff(l1, ln),
        # Adam's first moment: after one step (1 - beta1) times the clipped gradient.
        "mu": max_diff(optax.tree_utils.tree_get(s1.opt_state, "mu"),
                       optax.tree_utils.tree_get(sn.opt_state, "mu")),
        "param_sharding": str(jax.tree.leaves(sn.params)[0].sharding.spec),
        "moved_from_init": max_diff(s1.params, train_states(one, config, 0, 1)[0].params)[0]}

  sde, score_fn = mixed_score(config, parallel.to_host(s1.params))
  key = jax.random.PRNGKey(3)
  shape = (32, 2)
  for name, fn in {
      "pc_langevin": lambda m: pc_sample(key, sde, score_fn, shape, num_steps=50, mesh=m),
      "pc_euler_ald": lambda m: pc_sample(key, sde, score_fn, shape, predictor="euler_maruyama",
                                          corrector="ald", num_steps=50, mesh=m),
      "sde": lambda m: sde_sample(key, sde, score_fn, shape, num_steps=50, mesh=m),
  }.items():
    x1, nfe1 = fn(one)
    xn, nfen = fn(many)
    out[name] = {"x": max_diff(x1, xn), "nfe": [nfe1, nfen], "sharding": str(xn.sharding.spec),
                 "std": float(np.std(np.asarray(x1)))}


def main_float64(one, many, out):
  config = small_config()
  s1, _ = train_states(one, config, 10, 1)
  sde, score_fn = mixed_score(config, parallel.to_host(s1.params))
  key = jax.random.PRNGKey(3)
  shape = (32, 2)
  tol = dict(rtol=1e-4, atol=1e-4)
  x1, nfe1 = ode_sample(key, sde, score_fn, shape, mesh=one, **tol)
  xn, nfen = ode_sample(key, sde, score_fn, shape, mesh=many, **tol)
  out["ode"] = {"x": max_diff(x1, xn), "nfe": [nfe1, nfen], "sharding": str(xn.sharding.spec),
                "dtype": str(xn.dtype), "std": float(np.std(np.asarray(x1)))}
  x = parallel.to_host(x1)
  for div in ["exact", "rademacher"]:
    r1 = likelihood.log_likelihood(key, sde, score_fn, x, divergence=div, mesh=one, **tol)
    rn = likelihood.log_likelihood(key, sde, score_fn, x, divergence=div, mesh=many, **tol)
    out[f"loglik_{div}"] = {"logp": max_diff(r1[0], rn[0]), "z": max_diff(r1[1], rn[1]),
                            "nfe_equal": bool(np.array_equal(parallel.to_host(r1[2]),
                                                             parallel.to_host(rn[2]))),
                            "sharding": str(rn[0].sharding.spec)}
  z1 = likelihood.encode(sde, score_fn, x, mesh=one, **tol)
  zn = likelihood.encode(sde, score_fn, x, mesh=many, **tol)
  out["encode"] = {"z": max_diff(z1, zn)}


def main():
  one, many = parallel.make_mesh(jax.devices()[:1]), parallel.make_mesh()
  out = {"devices": jax.device_count(), "mesh_shape": dict(many.shape),
         "x64": bool(jax.config.jax_enable_x64)}
  (main_float64 if "--x64" in sys.argv else main_float32)(one, many, out)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
