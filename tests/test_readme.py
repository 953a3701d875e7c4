"""The README's library examples run as written (with the exact scores they use)."""

import os
import re

import numpy as np

from conftest import ROOT


def _library_blocks():
  text = open(os.path.join(ROOT, "README.md")).read()
  section = text.split("## As a library", 1)[1].split("\n## ", 1)[0]
  return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def library_blocks_with_workdir():
  """The README's examples that use a trained workdir (run in test_workdir.py on a tiny one)."""
  return [b for b in _library_blocks() if "load_workdir" in b]


def test_as_a_library_examples_run():
  blocks = [b for b in _library_blocks() if "load_workdir" not in b]
  assert len(blocks) == 4 and len(library_blocks_with_workdir()) == 1
  namespace = {}
  exec(blocks[0], namespace)
  # The one name the README leaves to the reader: a model of data in [-1, 1] (here exact).
  from score_sde_jax.data import GaussianMixture
  broad = GaussianMixture([1.0], np.zeros((1, 2)), [0.6])
  namespace["score_fn"] = lambda x, t: broad.marginal_score(namespace["sde"], x, t)
  for block in blocks[1:]:
    exec(block, namespace)
  assert namespace["x"].shape == (1000, 2) and namespace["path"].shape == (8, 9, 2)
  np.testing.assert_allclose(namespace["x_back"], namespace["x0"][:16], atol=5e-3)
  assert np.all(np.isfinite(namespace["bpd"])) and namespace["bpd"].shape == (16,)
  sde = namespace["CosineVPSDE"]()
  mean, std = sde.marginal_prob(np.ones((1, 2), np.float32), 0.0)
  np.testing.assert_allclose(mean[0], np.sqrt(1 / (1 + np.exp(-10.0))), rtol=1e-5)  # cos u at t = 0


def test_every_row_of_the_failure_mode_table_names_a_test_that_exists():
  text = open(os.path.join(ROOT, "README.md")).read()
  table = text.split("### When something goes wrong", 1)[1].split("\n#", 1)[0]
  rows = [line for line in table.splitlines() if re.match(r"\| \d+ \|", line)]
  assert len(rows) >= 25
  assert [int(r.split("|")[1]) for r in rows] == list(range(1, len(rows) + 1))
  for row in rows:
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 4, row
    match = re.fullmatch(r"`(tests/\w+\.py)::(\w+)`", cells[3])
    assert match, row
    path, name = match.groups()
    source = open(os.path.join(ROOT, path)).read()
    assert re.search(rf"^def {name}\(", source, flags=re.M), (path, name)
