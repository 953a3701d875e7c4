"""The pieces of work of ``networks.py``, run by the paper's original PyTorch code
(yang-song/score_sde_pytorch), for a same-window comparison: one JSON line per network and piece.

The original is not a dependency of this project: give a checkout of it with ``--original`` and
run this script with a Python that has ``torch`` (CPU build), ``ml_collections`` and ``scipy``.
Nothing is downloaded. The networks and batches are those of ``networks.py`` (``shrink`` sets the
original's config fields, which are named as ours), built from the original's own config files
(``configs/vp/cifar10_ddpmpp_continuous.py``, ``configs/ve/cifar10_ncsnpp_continuous.py``):

- ``train``: the original's ``losses.get_step_fn`` step (loss, backward, Adam with its warm-up
  and clipping, EMA update), the model in train mode (dropout on);
- ``score``: one ``get_score_fn`` evaluation under ``torch.no_grad`` (eval mode);
- ``score_vjp``: that evaluation and ``torch.autograd.grad`` with respect to the input;
- ``pc``: ``get_pc_sampler`` with reverse diffusion + Langevin, ``--pc_steps`` steps;
- ``ode``: ``get_ode_sampler``, scipy RK45, rtol = atol = 1e-5;
- ``bpd``: ``get_likelihood_fn`` with a Gaussian Hutchinson probe, RK45, 1e-5.

The original's ``op`` package compiles CUDA kernels when imported; it is replaced here by the same
package's pure-PyTorch ``upfirdn2d_native`` (what its FIR layers compute), read from the checkout.
Each line also carries the same process's peaks: ``torch_conv_peak_gflops`` (``F.conv2d``,
NCHW 16x128x32x32, 3x3, fp32) and, where JAX is importable, ``conv_peak_gflops`` (the XLA
convolution of ``networks.py``), so times from two processes can be set against each other.

  python benchmarks/original_pytorch.py --original PATH [--networks ...] [--parts ...]
"""

import argparse
import importlib
import importlib.util
import json
import os
import resource
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from benchmarks.networks import (  # noqa: E402  (no JAX imported)
    add_arguments, run_children, shared_argv, shrink, timed)


def _import_original(path):
  """Imports the checkout's modules, with ``op`` replaced by its native ``upfirdn2d``."""
  import torch
  sys.path.insert(0, path)
  source = open(os.path.join(path, "op", "upfirdn2d.py")).read()
  native = source[source.index("def upfirdn2d_native"):]
  op = types.ModuleType("op")
  namespace = {"torch": torch, "F": torch.nn.functional}
  exec(compile(native, os.path.join(path, "op", "upfirdn2d.py"), "exec"), namespace)

  def upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0)):   # the original's signature
    return namespace["upfirdn2d_native"](input, kernel, up, up, down, down,
                                         pad[0], pad[1], pad[0], pad[1])
  op.upfirdn2d = upfirdn2d
  sys.modules["op"] = op


def _config(path, network, batch):
  name = ("configs/vp/cifar10_ddpmpp_continuous.py" if network.startswith("ddpmpp")
          else "configs/ve/cifar10_ncsnpp_continuous.py")
  spec = importlib.util.spec_from_file_location("original_config", os.path.join(path, name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  batch = shrink(config, network, batch)
  return config, batch


def _peaks():
  import torch
  x = torch.ones(16, 128, 32, 32)
  w = torch.ones(128, 128, 3, 3) / (9 * 128)
  times = []
  with torch.no_grad():
    torch.nn.functional.conv2d(x, w, padding=1)
    for _ in range(10):
      t0 = time.perf_counter()
      torch.nn.functional.conv2d(x, w, padding=1)
      times.append(time.perf_counter() - t0)
  peaks = {"torch_conv_peak_gflops": round(2 * 16 * 32 * 32 * 128 * 128 * 9 / min(times) / 1e9, 1)}
  try:
    from benchmarks.common import conv_peak_gflops
    peaks["conv_peak_gflops"] = round(conv_peak_gflops(), 1)
  except ImportError:
    pass
  return peaks


def measure(network, part, args):
  import numpy as np
  import torch
  _import_original(args.original)
  import losses
  import likelihood
  import sampling
  import sde_lib
  from models import utils as mutils
  for name in ("models.ddpm", "models.ncsnpp"):   # importing registers the model classes
    importlib.import_module(name)
  from models.ema import ExponentialMovingAverage
  torch.manual_seed(0)
  config, batch = _config(args.original, network, args.batch)
  config.device = torch.device("cpu")
  shape = (batch, config.data.num_channels, config.data.image_size, config.data.image_size)
  m = config.model
  n = args.pc_steps if part == "pc" else m.num_scales
  sde = (sde_lib.VPSDE(m.beta_min, m.beta_max, N=n) if network.startswith("ddpmpp")
         else sde_lib.VESDE(m.sigma_min, m.sigma_max, N=n))
  model = mutils.create_model(config)
  line = {"bench": "original_pytorch", "network": network, "part": part, "batch": batch,
          "image": list(shape[2:]) + [shape[1]],
          "params": sum(p.numel() for p in model.parameters()),
          "torch": torch.__version__, "threads": torch.get_num_threads()}
  x = torch.rand(shape) * 2 - 1
  t = torch.linspace(0.1, 0.9, batch)
  nfe = None
  if part == "train":
    ema = ExponentialMovingAverage(model.parameters(), decay=m.ema_rate)
    optimizer = losses.get_optimizer(config, model.parameters())
    state = dict(optimizer=optimizer, model=model, ema=ema, step=0)
    step = losses.get_step_fn(sde, train=True, optimize_fn=losses.optimization_manager(config),
                              reduce_mean=config.training.reduce_mean,
                              continuous=config.training.continuous,
                              likelihood_weighting=config.training.likelihood_weighting)
    run = lambda: step(state, x)
    repeats = args.repeats
  elif part in ("score", "score_vjp"):
    model.eval()
    score_fn = mutils.get_score_fn(sde, model, train=False, continuous=True)
    if part == "score":
      def run():
        with torch.no_grad():
          return score_fn(x, t)
    else:
      probe = torch.ones_like(x)

      def run():
        y = x.clone().requires_grad_(True)
        return torch.autograd.grad(score_fn(y, t), y, probe)[0]
    repeats = args.repeats
  else:
    model.eval()
    identity = lambda v: v
    if part == "pc":
      sampler = sampling.get_pc_sampler(
          sde, shape, sampling.ReverseDiffusionPredictor, sampling.LangevinCorrector, identity,
          snr=config.sampling.snr, n_steps=1, continuous=True, denoise=True, eps=1e-3,
          device="cpu")
      run = lambda: sampler(model)
    elif part == "ode":
      sampler = sampling.get_ode_sampler(sde, shape, identity, rtol=1e-5, atol=1e-5,
                                         method="RK45", eps=1e-3, device="cpu")
      run = lambda: sampler(model)
    else:
      bpd = likelihood.get_likelihood_fn(sde, identity, hutchinson_type="Gaussian")
      data = torch.from_numpy(np.random.default_rng(1).integers(0, 256, shape) / 255.0).float()
      data = data * 2 - 1 if config.data.centered else data
      run = lambda: bpd(model, data)
    repeats = args.loop_repeats
  out, first, wall = timed(run, repeats, args.warmup if part in ("train", "score", "score_vjp") else 0)
  if part in ("pc", "ode", "bpd"):
    nfe = int(out[-1])
    line.update(s_per_nfe=round(wall / nfe, 4))
  line.update(first_call_s=round(first, 3), nfe=nfe, wall_s=round(wall, 4), **_peaks(),
              peak_rss_gib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2))
  return line


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--original", required=True,
                      help="a checkout of yang-song/score_sde_pytorch")
  add_arguments(parser)
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if not os.path.isfile(os.path.join(args.original, "models", "ncsnpp.py")):
    parser.error(f"--original: {args.original!r} is not a score_sde_pytorch checkout "
                 "(no models/ncsnpp.py)")
  if args.child:
    network, part = args.child.split(":")
    print(json.dumps(measure(network, part, args)), flush=True)
    return
  run_children(parser, __file__, "original_pytorch", args,
               [f"--original={args.original}"] + shared_argv(args))


if __name__ == "__main__":
  main()
