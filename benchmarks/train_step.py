"""Train-step throughput of the toy score MLP, with achieved GFLOP/s from XLA's cost analysis.

Prints one JSON line per setting. FLOPs per step come from the compiled
single-step function (XLA does not multiply a scanned body by its trip count);
wall time is measured on the ``n_jitted_steps`` version that training uses,
after a warm-up call, as the median of several repeats.

  python benchmarks/train_step.py [--batch_sizes 256,512,2048] [--repeats 5]
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from score_sde_jax import compilation  # noqa: E402
compilation.add_xla_cpu_flags()   # before JAX's backends start, as run.py does

from configs import default_toy  # noqa: E402
from score_sde_jax import build, models, parallel, train  # noqa: E402
from benchmarks.common import flops_of  # noqa: E402


def bench(config, repeats):
  exp = build.experiment(config)
  dataset = exp.data.load()
  mesh = parallel.make_mesh()
  optimizer = exp.optimizer.make()
  state = exp.init_state(mesh)
  loss_fn = exp.loss_fn(train_mode=True)
  k = config.training.n_jitted_steps
  b = config.training.batch_size

  single = train.make_train_step(loss_fn, optimizer, ema_rate=0.999, mesh=mesh, donate=False)
  one_batch = jnp.asarray(next(dataset.batches(b, 0)))
  flops = flops_of(single.lower(state, one_batch).compile())

  step = train.make_train_step(loss_fn, optimizer, ema_rate=0.999, mesh=mesh, n_jitted_steps=k)
  batches = parallel.shard_batch(np.asarray(next(dataset.batches(b, 0, steps_per_batch=k))), mesh, 1)
  state, m = step(state, batches)  # compile + warm up
  jax.block_until_ready(m)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    state, m = step(state, batches)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  sec_per_step = float(np.median(times)) / k
  return {
      "bench": "train_step", "model": f"mlp{config.model.num_layers}x{config.model.hidden}",
      "sde": config.training.sde, "batch_size": b, "n_jitted_steps": k,
      "params": models.param_count(state.params),
      "ms_per_step": round(sec_per_step * 1e3, 4), "steps_per_sec": round(1 / sec_per_step, 1),
      "gflop_per_step": round(flops / 1e9, 5),
      "achieved_gflops": round(flops / 1e9 / sec_per_step, 2),
      "device": jax.devices()[0].device_kind, "n_devices": jax.device_count(),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_sizes", default="128,512,2048")
  parser.add_argument("--hidden", default="256")
  parser.add_argument("--n_jitted_steps", type=int, default=50)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  for hidden in map(int, args.hidden.split(",")):
    for b in map(int, args.batch_sizes.split(",")):
      config = default_toy.get_config()
      config.training.batch_size = b
      config.training.n_jitted_steps = args.n_jitted_steps
      config.model.hidden = hidden
      print(json.dumps(bench(config, args.repeats)), flush=True)


if __name__ == "__main__":
  main()
