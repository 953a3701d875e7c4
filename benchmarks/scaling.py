"""Train-step throughput on meshes of 1, 2, 4, ... devices, as JSON lines.

The same global batch (strong scaling) split over the ``data`` axis of a mesh
of the first ``n`` devices. On a CPU the devices are forced with
``--xla_force_host_platform_device_count`` in a child process (the flag must
be set before JAX starts); a child with one device is the baseline, and each
line reports its speed relative to that baseline measured in the same run.
With accelerators present (``jax.default_backend() != "cpu"``) the real
devices are used instead.

FLOPs come from XLA's cost analysis of the compiled single step: for a
partitioned program that is per device, so the total is multiplied by the
device count. Forced CPU devices share the same cores (here 2), so on this
machine they measure overhead, not speed-up.

  python benchmarks/scaling.py [--devices 1,2,4] [--hidden 256,1024] [--batch_sizes 512,4096]
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from score_sde_jax import compilation  # noqa: E402
compilation.add_xla_cpu_flags()   # before JAX's backends start, as run.py does


def child(args):
  import jax
  import numpy as np

  from configs import default_toy
  from score_sde_jax import build, parallel, train
  sys.path.insert(0, HERE)
  from train_step import flops_of

  counts = [n for n in map(int, args.devices.split(",")) if n <= jax.device_count()]
  if args.single:
    counts = [jax.device_count()]
  for hidden in map(int, args.hidden.split(",")):
    for b in map(int, args.batch_sizes.split(",")):
      for n in counts:
        config = default_toy.get_config()
        config.training.batch_size = b
        config.model.hidden = hidden
        k = config.training.n_jitted_steps = args.n_jitted_steps
        mesh = parallel.make_mesh(jax.devices()[:n])
        exp = build.experiment(config)
        dataset = exp.data.load()
        optimizer = exp.optimizer.make()
        state = exp.init_state(mesh)
        loss_fn = exp.loss_fn(train_mode=True)
        single = train.make_train_step(loss_fn, optimizer, ema_rate=0.999, mesh=mesh,
                                       donate=False)
        one = parallel.shard_batch(np.asarray(next(dataset.batches(b, 0))), mesh)
        flops = flops_of(single.lower(state, one).compile()) * n
        step = train.make_train_step(loss_fn, optimizer, ema_rate=0.999, mesh=mesh,
                                     n_jitted_steps=k)
        batches = parallel.shard_batch(next(dataset.batches(b, 0, steps_per_batch=k)), mesh, 1)
        state, m = step(state, batches)  # compile and warm up
        jax.block_until_ready(m)
        times = []
        for _ in range(args.repeats):
          t0 = time.perf_counter()
          state, m = step(state, batches)
          jax.block_until_ready(m)
          times.append(time.perf_counter() - t0)
        sec = float(np.median(times)) / k
        print(json.dumps({
            "bench": "scaling", "model": f"mlp{config.model.num_layers}x{hidden}",
            "global_batch": b, "mesh_devices": n, "process_devices": jax.device_count(),
            "device": jax.devices()[0].device_kind, "platform": jax.default_backend(),
            "ms_per_step": round(sec * 1e3, 4), "examples_per_sec": round(b / sec, 1),
            "gflop_per_step": round(flops / 1e9, 5),
            "achieved_gflops": round(flops / 1e9 / sec, 2)}), flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--devices", default="1,2,4")
  parser.add_argument("--hidden", default="256,1024")
  parser.add_argument("--batch_sizes", default="512,4096")
  parser.add_argument("--n_jitted_steps", type=int, default=10)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    return child(args)

  import jax
  if jax.default_backend() != "cpu":
    return child(args)  # real devices: meshes over the first n of them, in this process
  # CPU: a one-device process (the baseline), then one process with the most devices whose
  # meshes take the first n. Children so that XLA_FLAGS applies before JAX starts.
  counts = sorted(map(int, args.devices.split(",")))
  rows = []
  for forced, extra in [(1, ["--single"]), (counts[-1], [])]:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={forced}",
               JAX_PLATFORMS="cpu")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", *extra] + [
        f"--{k}={v}" for k, v in vars(args).items() if k not in ("child", "single")]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    rows += [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
  base = {(r["model"], r["global_batch"]): r["ms_per_step"] for r in rows
          if r["process_devices"] == 1}
  for r in rows:
    r["speed_vs_1_device_process"] = round(base[(r["model"], r["global_batch"])] /
                                           r["ms_per_step"], 3)
    print(json.dumps(r), flush=True)


if __name__ == "__main__":
  main()
