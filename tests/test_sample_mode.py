"""run.py --mode sample on a trained toy workdir: samples, metrics and figures."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs.toy import gmm_vp
from score_sde_jax import loop, metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config():
  config = gmm_vp.get_config()
  config.training.n_iters = 1500
  config.training.eval_freq = 1500
  config.model.ema_rate = 0.99
  config.model.num_scales = 200
  config.eval.num_samples = 600
  config.eval.batch_size = 300
  return config


@pytest.mark.slow
def test_sample_mode_writes_samples_metrics_and_figures(tmp_path):
  workdir = str(tmp_path / "wd")
  config = _config()
  loop.train_and_evaluate(config, workdir)
  for method in ("pc", "ode"):
    config.sampling.method = method
    samples, result = loop.sample(config, workdir)
    tag = f"{result['sampler']}_step1500"
    saved = np.load(os.path.join(workdir, "samples", f"{tag}.npz"))
    np.testing.assert_array_equal(saved["samples"], samples)
    assert samples.shape == (600, 2)
    with open(os.path.join(workdir, "eval", f"samples_{tag}.json")) as f:
      written = json.load(f)
    assert written == result
    held_out = next(loop.build.get_dataset(config).batches(600, config.seed, split="test"))
    np.testing.assert_allclose(result["mmd"], metrics.mmd(samples, held_out), rtol=1e-5)
    # A 1500-step model already puts its samples on the ring: close to the held-out density.
    assert result["mmd"] < 0.02
    assert result["exact_log_prob_of_samples"] > result["exact_log_prob_of_held_out"] - 0.6
    assert result["nfe_per_batch"] == (400 if method == "pc" else result["nfe_per_batch"])
  for name in ("samples.png", "trajectories.png"):
    assert os.path.getsize(os.path.join(workdir, "figures", name)) > 10_000


def test_sample_mode_without_checkpoint_is_a_clear_error(tmp_path):
  cmd = [sys.executable, os.path.join(ROOT, "run.py"), "--config",
         os.path.join(ROOT, "configs", "toy", "gmm_vp.py"), f"--workdir={tmp_path}", "--mode=sample"]
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode == 2
  assert "no checkpoint" in out.stderr and "--mode train" in out.stderr
