"""What the benchmarks share: XLA's FLOP count of a compiled function and the machine's
convolution peak, measured in the same process (achieved GFLOP/s only mean something as a ratio
to a peak of the same run: these machines vary from day to day)."""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np


def flops_of(compiled) -> float:
  """XLA's FLOP count of a compiled function (``jax.jit(f).lower(...).compile()``)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get("flops", float("nan"))) if cost else float("nan")


def conv_peak_gflops(shape=(16, 32, 32, 128), repeats: int = 10) -> float:
  """GFLOP/s of one 3x3 ``conv_general_dilated`` (NHWC, ``shape``, channels in = out, fp32):
  the best of ``repeats`` calls after a warm-up, the reference for the other numbers."""
  x = jnp.ones(shape, jnp.float32)
  w = jnp.ones((3, 3, shape[-1], shape[-1]), jnp.float32) / (9 * shape[-1])
  return _best_gflops(lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")), (x, w), repeats)


def best_seconds(compiled, args, repeats: int) -> float:
  """The fastest of ``repeats`` calls of a compiled function, after one warm-up call."""
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t0)
  return float(np.min(times))


def _best_gflops(fn, args, repeats):
  compiled = jax.jit(fn).lower(*args).compile()   # one compilation: counted and timed
  return flops_of(compiled) / 1e9 / best_seconds(compiled, args, repeats)


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
  """GFLOP/s of one ``n x n @ n x n`` fp32 matmul: the best of ``repeats`` calls after a warm-up."""
  a = jnp.ones((n, n), jnp.float32) / n
  return _best_gflops(jnp.matmul, (a, a), repeats)


# --- Where the time goes: per-op times from a profiler trace, grouped by what the op is ----------

CATEGORIES = ("convolution", "matmul (dense, 1x1, attention)", "GroupNorm", "attention softmax",
              "up/down sampling", "elementwise (activations, adds, scaling)",
              "random bits (dropout, noise)", "layout (transposes, copies)",
              "optimizer, EMA and loss", "other")


def _hlo_instructions(hlo_text: str):
  """``{instruction: (op_name metadata, fused computation text or "")}`` of a compiled HLO module."""
  import re
  computations, instructions, current = {}, {}, None
  for line in hlo_text.splitlines():
    if line and not line.startswith(" "):
      m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) ", line)
      current = m.group(1) if m else None
      computations.setdefault(current, [])
      continue
    m = re.match(r"^\s+(?:ROOT )?%([\w.\-]+) = (.*)$", line)
    if m and current is not None:
      computations[current].append(m.group(2))
      op = re.search(r'op_name="([^"]*)"', line)
      calls = re.search(r"calls=%([\w.\-]+)", line)
      instructions[m.group(1)] = (op.group(1) if op else "", calls.group(1) if calls else None)
  return {name: (op, "\n".join(computations.get(calls, [])) if calls else "")
          for name, (op, calls) in instructions.items()}


def categorize(name: str, op_name: str, fused: str, network_names=("NCSNpp", "DDPM")) -> str:
  """What an XLA:CPU thunk does, from its instruction name, its ``op_name`` metadata (the JAX
  call path: Flax module names, ``named_scope``s, primitives) and its fused computation."""
  in_network = any(n in op_name for n in network_names)
  if not op_name and name.startswith(("copy", "transpose", "bitcast")):
    return "layout (transposes, copies)"
  if any(s in op_name for s in ("Dropout", "_uniform", "_normal", "_bernoulli", "threefry",
                                "random_bits")):
    return "random bits (dropout, noise)"
  if op_name and not in_network:
    return "optimizer, EMA and loss"
  # A fusion is named after its root op: a convolution or a matmul fused with the reduction or
  # normalisation that follows it is counted as the convolution / matmul (most of its time).
  if " convolution(" in fused or name.startswith("convolution") or "conv_general" in op_name:
    depthwise = "feature_group_count" in fused or "feature_group_count" in op_name
    return "up/down sampling" if "resample" in op_name and depthwise else "convolution"
  if " dot(" in fused or name.startswith("dot") or "dot_general" in op_name:
    return "matmul (dense, 1x1, attention)"
  if "resample" in op_name:
    return "up/down sampling"
  if "GroupNorm" in op_name:
    return "GroupNorm"
  if "attention" in op_name:
    return "attention softmax"
  if "transpose" in name or name.startswith("copy"):
    return "layout (transposes, copies)"
  if in_network:
    return "elementwise (activations, adds, scaling)"
  return "other"


def op_breakdown(compiled, args, calls: int = 3, network_names=("NCSNpp", "DDPM")) -> dict:
  """Seconds per call of ``compiled(*args)`` by :data:`CATEGORIES`, summed over the ops' own
  durations in a ``jax.profiler`` trace of ``calls`` calls (XLA:CPU runs independent ops on
  several threads, so the sum can exceed the wall time); ``"wall"`` is the traced wall time per
  call. Convolutions that leave no event (XLA:CPU's Eigen ones) get the wall time the traced ops
  leave over. CPU only: other backends name their ops differently."""
  import collections
  import glob
  import gzip
  import json
  import tempfile
  text = compiled.as_text()
  instructions = _hlo_instructions(text)
  jax.block_until_ready(compiled(*args))
  with tempfile.TemporaryDirectory() as folder:
    t0 = time.perf_counter()
    with jax.profiler.trace(folder):
      for _ in range(calls):
        jax.block_until_ready(compiled(*args))
    wall = (time.perf_counter() - t0) / calls
    trace = glob.glob(os.path.join(folder, "**", "*.trace.json.gz"), recursive=True)
    events = json.load(gzip.open(trace[0]))["traceEvents"] if trace else []
  seconds = collections.Counter()
  for e in events:
    name = e.get("name")
    if e.get("ph") != "X" or name not in instructions or name.startswith(("while", "call")):
      continue   # loops and calls contain their bodies' events
    op_name, fused = instructions[name]
    seconds[categorize(name, op_name, fused, network_names)] += e["dur"] * 1e-6 / calls
  # XLA:CPU's Eigen convolutions leave no event in the trace (YNNPACK's do): their time is
  # estimated as the wall time the traced ops leave over (ops that overlap make it an underestimate).
  entry = text[text.find("\nENTRY"):]
  entry = entry[:entry.find("\n}")]
  if " convolution(" in entry:   # a convolution run by itself, not in a (YNNPACK) fusion
    seconds["convolution"] += max(0.0, wall - sum(seconds.values()))
  return {"wall": wall, **{c: seconds[c] for c in CATEGORIES if seconds[c]}}


def load_config(path, overrides=()):
  """The config file's ``get_config()`` with ``--set section.field=value`` overrides."""
  import ast
  import importlib.util
  spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for item in overrides:
    key, _, text = item.partition("=")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    *sections, field = key.split(".")
    node = config
    for part in sections:
      node = node[part]
    node[field] = value
  return config
