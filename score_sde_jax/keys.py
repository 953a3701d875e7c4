"""Named random streams of a run: one key per purpose, all derived from ``config.seed`` here.

The train state's key starts from ``PRNGKey(seed)`` itself (and travels in the
checkpoint); training batches come from ``numpy`` generators seeded with
``(seed, split, step)`` in ``data``. Everything else draws from one of these
streams, so no two purposes share randomness and none depends on the order in
which modes run.
"""

from __future__ import annotations

import jax
import numpy as np

STREAMS = {
    "eval_loss": 1,        # the EMA model's loss during training (and the exact score's floor)
    "sample": 2,           # --mode sample / load_workdir(...).sample: batch i uses fold_in(key, i)
    "figure_latents": 3,   # prior draws for the trajectory figures
    "figure_paths": 4,     # Brownian motion of the reverse-SDE paths in the figures
    "eval": 5,             # --mode eval: the DSM loss of test batch i uses fold_in(key, i)
    "entropy": 6,          # Monte-Carlo entropy of toy data (numpy)
    "reference": 7,        # the reference sample set for MMD noise levels (data batches)
    "likelihood": 8,       # --mode eval: probes and dequantization noise of test batch i
    "snapshot": 9,         # sample grids at snapshots during training
    "figures": 10,         # choice of points for figures (numpy)
    "inpaint": 11,         # --mode inpaint: the projection PC sampler
    "inpaint_mask": 12,    # --mode inpaint: random masks (numpy)
    "classifier": 13,      # --mode train_classifier: the classifier's init and step keys
    "classifier_eval": 14, # --mode train_classifier: times and noise of the held-out evaluation
    "conditional": 15,     # --mode conditional: the guided sampler
    "likelihood_bound": 16,  # --mode eval: times, noise, dequantization of the bound on batch i
}


def stream(seed: int, name: str) -> jax.Array:
  """The PRNG key of stream ``name`` for a run seeded with ``seed``."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), STREAMS[name])


def numpy_stream(seed: int, name: str) -> np.random.Generator:
  """A ``numpy`` generator for stream ``name`` (host-side draws: figures, entropy estimates)."""
  return np.random.default_rng([seed, STREAMS[name]])


def stream_seed(seed: int, name: str) -> int:
  """An integer seed for stream ``name``, for APIs that take one (data batches)."""
  return int(np.random.default_rng([seed, STREAMS[name]]).integers(2**31))
