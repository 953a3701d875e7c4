"""Every Python example of the README and of docs/ runs as written, and the documentation's
tables point at tests that exist. Examples that load a trained workdir ("workdirs/demo") run in
tests/test_workdir.py on a tiny one."""

import glob
import os
import re

import numpy as np
import pytest

from conftest import ROOT

DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT)
                              for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))


def python_blocks(path: str) -> list[str]:
  with open(os.path.join(ROOT, path)) as f:
    return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def blocks_with_workdir(path: str):
  """``(blocks before it, the block)`` for each example of ``path`` that loads "workdirs/demo"."""
  blocks = python_blocks(path)
  return [(blocks[:i], b) for i, b in enumerate(blocks) if "workdirs/demo" in b]


def _run(path):
  namespace = {}
  for block in python_blocks(path):
    if "workdirs/demo" not in block:
      exec(block, namespace)
  return namespace


def test_every_documentation_page_with_examples_is_run():
  """README.md and docs/library.md here (their workdir examples in tests/test_workdir.py),
  docs/controllable.md in tests/test_controllable.py, docs/fid.md in tests/test_inception.py,
  docs/likelihood-training.md in tests/test_likelihood_weighting.py, with the numbers each
  example must give."""
  with_examples = [p for p in DOCS if python_blocks(p)]
  assert with_examples == ["README.md", "docs/controllable.md", "docs/fid.md", "docs/library.md",
                           "docs/likelihood-training.md"]


def test_the_readmes_example_runs():
  ns = _run("README.md")
  assert ns["x"].shape == (1000, 2) and np.all(ns["nfe"] > 0)
  # The probability-flow log-density of the exact score is the data's exact one (at eps = 1e-5
  # the marginal's std is 1e-3 against the modes' 0.15; the solve's error is about 1e-4 nats).
  assert abs(float(np.mean(ns["logp"])) - float(np.mean(ns["ring"].log_prob(ns["x"][:16])))) < 0.05


@pytest.mark.slow
def test_the_library_page_runs():
  ns = _run("docs/library.md")
  assert ns["x"].shape == (1000, 2) and ns["path"].shape == (8, 9, 2)
  np.testing.assert_allclose(ns["x_back"], ns["x0"][:16], atol=5e-3)
  assert np.all(np.isfinite(ns["bpd"])) and ns["bpd"].shape == (16,)
  sde = ns["CosineVPSDE"]()
  mean, std = sde.marginal_prob(np.ones((1, 2), np.float32), 0.0)
  np.testing.assert_allclose(mean[0], np.sqrt(1 / (1 + np.exp(-10.0))), rtol=1e-5)  # cos u at t = 0


def test_every_row_of_the_failure_mode_table_names_a_test_that_exists():
  text = open(os.path.join(ROOT, "docs", "troubleshooting.md")).read()
  rows = [line for line in text.splitlines() if re.match(r"\| \d+ \|", line)]
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


def test_the_readme_is_short_and_its_links_exist():
  text = open(os.path.join(ROOT, "README.md")).read()
  assert len(text.splitlines()) <= 200
  for path in DOCS:
    text = open(os.path.join(ROOT, path)).read()
    folder = os.path.dirname(os.path.join(ROOT, path))
    for link in re.findall(r"\]\(([^)#:]+)\)", text):
      assert os.path.exists(os.path.join(folder, link)), (path, link)
