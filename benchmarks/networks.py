"""Speed of the paper's networks (DDPM++ / NCSN++): one JSON line per network and piece of work.

Pieces (``--parts``): ``train`` (one train step: loss, gradient, Adam, EMA), ``score`` (one score
evaluation, the network's forward), ``score_vjp`` (forward + VJP with respect to the input, what a
Hutchinson divergence costs), ``pc`` (the PC sampler, reverse diffusion + Langevin, ``--pc_steps``
steps, 2 NFE per step), ``ode`` (the probability-flow ODE, Tsit5, rtol = atol = 1e-5) and ``bpd``
(bits/dim through that ODE with a Gaussian Hutchinson probe). Networks (``--networks``):

  ddpmpp_32_b16   vp/cifar10_ddpmpp_continuous shrunk to nf=32, ch_mult=(1,2,2), 1 res block,
                  attention at 16; 32x32x3, batch 16 (the size compared with the original in
                  issue 18)
  ddpmpp_8_b64    the same with ch_mult=(1,2), attention at 4; 8x8x1, batch 64
  ddpmpp_cifar10  vp/cifar10_ddpmpp_continuous as the paper sets it (--batch, default 8)
  ncsnpp_cifar10  ve/cifar10_ncsnpp_continuous as the paper sets it (--batch, default 8)

Each line runs in its own child process, so ``peak_rss_gib`` is that line's own peak (process
start, compilation and the run). Every line carries the same-process peaks ``conv_peak_gflops``
(a 3x3 ``conv_general_dilated``, NHWC 16x32x32x128, fp32) and ``matmul_peak_gflops`` (a 2048^3
fp32 matmul), and ``conv_peak_ratio``: achieved GFLOP/s over the conv peak. These machines vary
from day to day; the ratio is the figure to compare. FLOPs are XLA's cost analysis of the compiled
program; for the loops (``pc``, ``ode``, ``bpd``), whose bodies XLA counts once, they are the
compiled ``score`` (``score_vjp`` for ``bpd``) FLOPs times the NFE. ``first_call_s`` is the first
call (compilation included), ``wall_s`` the median of ``--repeats`` later calls, after
``--warmup`` untimed ones for train / score. ``--profile``
adds ``op_shares``: the ops' own time in a profiler trace, by kind (``common.op_breakdown``).
``--cpu_devices N`` (or ``auto``) splits the CPU into N devices and each batch over them, as
``run.py --cpu_devices`` does; FLOPs stay those of the whole batch.

  python benchmarks/networks.py [--networks ddpmpp_32_b16,ddpmpp_8_b64] [--parts train,score]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from score_sde_jax import compilation  # noqa: E402
compilation.add_xla_cpu_flags()   # before JAX's backends start, as run.py does

NETWORKS = ("ddpmpp_32_b16", "ddpmpp_8_b64", "ddpmpp_cifar10", "ncsnpp_cifar10")
PARTS = ("train", "score", "score_vjp", "pc", "ode", "bpd")


def network_config(name: str, batch: int | None = None):
  """``(config, batch)`` of a benchmark network (see the module docstring)."""
  if name not in NETWORKS:
    raise ValueError(f"--networks: {name!r} unknown; known: {', '.join(NETWORKS)}")
  if name.startswith("ddpmpp"):
    from configs.vp import cifar10_ddpmpp_continuous as paper
  else:
    from configs.ve import cifar10_ncsnpp_continuous as paper
  config = paper.get_config()
  return config, shrink(config, name, batch)


def shrink(config, name: str, batch: int | None = None) -> int:
  """Sets ``config`` (this project's or the original's: the fields are named alike) to network
  ``name`` and returns its batch."""
  m = config.model
  if name == "ddpmpp_32_b16":
    m.nf, m.ch_mult, m.num_res_blocks, m.attn_resolutions, m.fir = 32, (1, 2, 2), 1, (16,), False
    default_batch = 16
  elif name == "ddpmpp_8_b64":
    m.nf, m.ch_mult, m.num_res_blocks, m.attn_resolutions, m.fir = 32, (1, 2), 1, (4,), False
    config.data.image_size, config.data.num_channels = 8, 1
    default_batch = 64
  else:   # the paper's full networks
    default_batch = 8
  batch = batch or default_batch
  config.training.batch_size = config.eval.batch_size = batch
  return batch


def timed(fn, repeats, warmup=0):
  """``(last output, first call's seconds, median of ``repeats`` later calls)`` of ``fn()``, after
  ``warmup`` untimed calls; ``fn`` must return only when its work is done (JAX callers block on
  the result)."""
  import numpy as np
  t0 = time.perf_counter()
  out = fn()
  first = time.perf_counter() - t0
  for _ in range(warmup):
    out = fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t0)
  return out, first, float(np.median(times))


def programs(config, batch, mesh=None):
  """The jitted pieces of one network: ``{name: (jitted, args)}`` for ``train``, ``score``,
  ``score_vjp``, plus what the loops need; with a ``mesh``, ``{name}_sharded`` holds the same
  arguments with the batch split over it and the rest replicated."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from score_sde_jax import build, train
  exp = build.experiment(config)
  sde, optimizer = exp.sde, exp.optimizer.make()
  state = exp.init_state()
  shape = (batch,) + exp.data.shape
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, shape), jnp.float32)
  t = jnp.linspace(0.1, 0.9, batch)
  loss_fn = exp.loss_fn(train_mode=True)
  step = train.make_train_step(loss_fn, optimizer, ema_rate=exp.training.ema_rate, donate=False)
  score_fn = exp.model.score_fn(state.ema_params)

  def score(s, x, t):
    return s(x, t)

  def score_vjp(s, x, t, probe):
    out, vjp = jax.vjp(lambda y: s(y, t), x)
    return out, vjp(probe)[0]

  pieces = dict(train=(jax.jit(step), (state, x)),
                score=(jax.jit(score), (score_fn, x, t)),
                score_vjp=(jax.jit(score_vjp), (score_fn, x, t, jnp.ones_like(x))))
  if mesh is not None:
    from score_sde_jax import parallel
    for name, (fn, (shared, *batched)) in list(pieces.items()):
      pieces[f"{name}_sharded"] = (fn, (jax.device_put(shared, parallel.replicated(mesh)),
                                        *jax.device_put(batched, parallel.batch_sharding(mesh))))
  return dict(sde=sde, shape=shape, x=x, t=t, state=state, score_fn=score_fn, **pieces)


def measure(network, part, args):
  """One benchmark line (run in a child process)."""
  import jax
  import numpy as np
  from benchmarks.common import conv_peak_gflops, flops_of, matmul_peak_gflops, op_breakdown
  from score_sde_jax import likelihood, models, parallel, sampling
  mesh = None
  if args.cpu_devices:   # before any computation
    parallel.split_cpu(args.cpu_devices, "--cpu_devices")
    mesh = parallel.make_mesh()
  config, batch = network_config(network, args.batch)
  p = programs(config, batch, mesh)
  line = {"bench": "networks", "network": network, "part": part, "batch": batch,
          "devices": jax.device_count(),
          "image": list(p["shape"][1:]), "params": models.param_count(p["state"].params)}
  if part in ("train", "score", "score_vjp"):
    fn, fargs = p[part] if mesh is None else p[f"{part}_sharded"]
    t0 = time.perf_counter()
    compiled = fn.lower(*fargs).compile()
    compile_s = time.perf_counter() - t0
    # The whole batch's FLOPs, on one device (a sharded program counts one shard's).
    flops = flops_of(compiled if mesh is None else p[part][0].lower(*p[part][1]).compile())
    _, first, wall = timed(lambda: jax.block_until_ready(compiled(*fargs)), args.repeats,
                           args.warmup)
    line.update(compile_s=round(compile_s, 2), first_call_s=round(first, 3), nfe=None)
    if args.profile:
      times = op_breakdown(compiled, fargs)
      total = sum(v for k, v in times.items() if k != "wall")
      line["op_seconds"] = round(total, 4)
      line["op_shares"] = {k: round(v / total, 3) for k, v in times.items() if k != "wall"}
  else:
    per_nfe = "score_vjp" if part == "bpd" else "score"
    fn, fargs = p[per_nfe]
    flops_per_nfe = flops_of(fn.lower(*fargs).compile())
    key = jax.random.PRNGKey(0)
    if part == "pc":
      run = lambda: sampling.pc_sample(key, p["sde"], p["score_fn"], p["shape"],
                                       predictor="reverse_diffusion", corrector="langevin",
                                       num_steps=args.pc_steps, mesh=mesh)
    elif part == "ode":
      run = lambda: sampling.ode_sample(key, p["sde"], p["score_fn"], p["shape"], mesh=mesh)
    else:
      x_int = np.random.default_rng(1).integers(0, 256, p["shape"])
      run = lambda: likelihood.bits_per_dim(key, p["sde"], p["score_fn"], x_int,
                                            divergence="gaussian", mesh=mesh)
    out, first, wall = timed(lambda: jax.block_until_ready(run()), args.loop_repeats)
    nfe = int(np.max(np.asarray(out[1])))
    flops = flops_per_nfe * nfe
    line.update(first_call_s=round(first, 2), nfe=nfe, s_per_nfe=round(wall / nfe, 4))
  conv_peak, mm_peak = conv_peak_gflops(), matmul_peak_gflops()
  achieved = flops / 1e9 / wall
  line.update(wall_s=round(wall, 4), gflop=round(flops / 1e9, 3),
              achieved_gflops=round(achieved, 1), conv_peak_gflops=round(conv_peak, 1),
              matmul_peak_gflops=round(mm_peak, 1), conv_peak_ratio=round(achieved / conv_peak, 3),
              peak_rss_gib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
              device=jax.devices()[0].device_kind, backend=jax.default_backend())
  return line


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_arguments(parser)
  parser.add_argument("--cpu_devices", default=None,
                      help="split the CPU into this many devices ('auto': one per core) and the "
                           "batch over them (parallel.split_cpu)")
  parser.add_argument("--profile", action="store_true",
                      help="add op_shares: the ops' time by kind (train, score, score_vjp)")
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    network, part = args.child.split(":")
    print(json.dumps(measure(network, part, args)), flush=True)
    return
  argv = shared_argv(args) + ([f"--cpu_devices={args.cpu_devices}"] if args.cpu_devices else [])
  run_children(parser, __file__, "networks", args, argv + (["--profile"] if args.profile else []))


def add_arguments(parser):
  """The flags networks.py and original_pytorch.py share."""
  parser.add_argument("--networks", default="ddpmpp_32_b16,ddpmpp_8_b64")
  parser.add_argument("--parts", default=",".join(PARTS))
  parser.add_argument("--batch", type=int, default=None, help="batch (default: the network's)")
  parser.add_argument("--repeats", type=int, default=5, help="timed calls of train / score")
  parser.add_argument("--warmup", type=int, default=3,
                      help="untimed calls of train / score after the first: a process's first "
                           "calls of a program run slower (the full DDPM++ train step on XLA:CPU: "
                           "4.3, 4.1, 2.8, 2.5, then 2.32-2.36 s)")
  parser.add_argument("--loop_repeats", type=int, default=1, help="timed calls of pc / ode / bpd")
  parser.add_argument("--pc_steps", type=int, default=100)


def shared_argv(args) -> list[str]:
  """The :func:`add_arguments` flags a child measures with (all but ``--networks`` and ``--parts``,
  which choose the children)."""
  return ([f"--repeats={args.repeats}", f"--warmup={args.warmup}",
           f"--loop_repeats={args.loop_repeats}", f"--pc_steps={args.pc_steps}"]
          + ([f"--batch={args.batch}"] if args.batch else []))


def run_children(parser, script, bench, args, argv):
  """Checks ``args.networks`` / ``args.parts`` (one ``parser.error`` before any child runs), then
  runs ``script --child=network:part`` with ``argv`` for each pair, each in its own process, and
  prints its JSON line (an ``error`` line where the child failed)."""
  networks, parts = args.networks.split(","), args.parts.split(",")
  for field, values, known in [("networks", networks, NETWORKS), ("parts", parts, PARTS)]:
    for value in values:
      if value not in known:
        parser.error(f"--{field}: {value!r} unknown; known: {', '.join(known)}")
  for network in networks:
    for part in parts:
      result = subprocess.run([sys.executable, script, *argv, f"--child={network}:{part}"],
                              stdout=subprocess.PIPE, text=True)
      if result.returncode:
        print(json.dumps({"bench": bench, "network": network, "part": part,
                          "error": f"child exited {result.returncode}"}), flush=True)
      else:
        sys.stdout.write(result.stdout.strip().splitlines()[-1] + "\n")
        sys.stdout.flush()

if __name__ == "__main__":
  main()
