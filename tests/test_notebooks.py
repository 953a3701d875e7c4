"""Both notebooks run top to bottom at SIZE="tiny" (papermill, a kernel of this Python), with the
figures they show saved, and the numbers they measure checked where the answer is known."""

import concurrent.futures
import json
import os
import re

import nbformat
import pytest

from conftest import ROOT

NOTEBOOKS = {"score_sde_walkthrough": 13, "image_models": 7}   # name: figures it shows
# The executed runs: each notebook at SIZE="tiny", and the image notebook again on Fashion-MNIST
# (the excerpt in tests/fixtures unless Debian's package is installed).
RUNS = {**{name: (name, {}) for name in NOTEBOOKS},
        "image_models_fashion_mnist": ("image_models", dict(DATASET="fashion_mnist"))}


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
  """Executes both notebooks at once (two kernels: their compilations run on both cores)."""
  papermill = pytest.importorskip("papermill")
  from ipykernel.kernelspec import write_kernel_spec
  tmp = tmp_path_factory.mktemp("notebooks")
  # A kernelspec of this interpreter, so that no other Jupyter installation's "python3" is used.
  write_kernel_spec(str(tmp / "jupyter" / "kernels" / "score_sde_jax_tests"))
  old = os.environ.get("JUPYTER_PATH")
  os.environ["JUPYTER_PATH"] = str(tmp / "jupyter")

  def run(run_name):
    name, extra = RUNS[run_name]
    out = tmp / f"{run_name}.ipynb"
    papermill.execute_notebook(
        os.path.join(ROOT, "notebooks", f"{name}.ipynb"), str(out), cwd=ROOT,
        kernel_name="score_sde_jax_tests", progress_bar=False,
        parameters=dict(SIZE="tiny", FIGURE_DIR=str(tmp / run_name),
                        TRAIN_DIR=str(tmp / f"train_{run_name}"), **extra))
    return run_name, out

  try:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:   # two kernels: both cores busy
      done = dict(pool.map(run, RUNS))
  finally:
    if old is None:
      del os.environ["JUPYTER_PATH"]
    else:
      os.environ["JUPYTER_PATH"] = old
  results = {}
  for run_name in RUNS:
    with open(tmp / run_name / "results.json") as f:
      results[run_name] = json.load(f)
  return tmp, done, results


@pytest.mark.slow
@pytest.mark.parametrize("run_name", sorted(RUNS))
def test_notebook_runs_and_shows_its_figures(executed, run_name):
  tmp, done, results = executed
  nb = nbformat.read(done[run_name], as_version=4)
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  assert not [o for o in outputs if o.output_type == "error"]
  shown = [o for o in outputs if "image/png" in o.get("data", {})]
  figures = NOTEBOOKS[RUNS[run_name][0]]
  assert len(shown) == figures
  saved = sorted(f for f in os.listdir(tmp / run_name) if f.endswith(".png"))
  assert len(saved) == figures
  assert all((tmp / run_name / f).stat().st_size > 2000 for f in saved)
  assert results[run_name]["size"] == "tiny"


def test_committed_notebooks_are_small_and_without_outputs():
  """Outputs are not committed (make notebooks writes executed copies and figures to
  workdirs/notebooks); the first cell is the Colab / local set-up and the parameters cell is
  tagged for papermill."""
  for name in NOTEBOOKS:
    path = os.path.join(ROOT, "notebooks", f"{name}.ipynb")
    assert os.path.getsize(path) < 60_000
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert "google.colab" in code[0].source and "REPOSITORY" in code[0].source
    assert "parameters" in code[1].metadata.get("tags", [])
    assert re.search(r'^SIZE = "full"', code[1].source, flags=re.M)


def test_repository_url_is_the_same_everywhere():
  """The owner sets the repository's URL in pyproject.toml and runs notebooks/set_repository.py;
  the notebooks' set-up cells and the README's Colab links must agree with it."""
  import tomllib
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    url = tomllib.load(f)["project"]["urls"]["Repository"]
  slug = url.removeprefix("https://github.com/")
  for name in NOTEBOOKS:
    nb = nbformat.read(os.path.join(ROOT, "notebooks", f"{name}.ipynb"), as_version=4)
    assert f'REPOSITORY = "{url}"' in nb.cells[1].source
  readme = open(os.path.join(ROOT, "README.md")).read()
  links = re.findall(r"colab\.research\.google\.com/github/([^)\s]+)/blob/main/notebooks/(\w+)\.ipynb",
                     readme)
  assert sorted(n for _, n in links) == sorted(NOTEBOOKS)
  assert {s for s, _ in links} == {slug}


@pytest.mark.slow
def test_walkthrough_numbers_match_their_exact_answers(executed):
  r = executed[2]["score_sde_walkthrough"]
  # DSM(s) - DSM(exact score) equals the weighted Fisher divergence of s (section 2): both are
  # Monte-Carlo means over the same 20000 draws; their difference has SE <= the sum of the SEs.
  (diff, diff_se), (fisher, fisher_se) = r["dsm_difference"], r["weighted_fisher_divergence"]
  assert abs(diff - fisher) < 4 * (diff_se + fisher_se)
  assert fisher > 20 * fisher_se
  # Forward VP / sub-VP at t = 1 with 200 particles: var(x1) ~ 1; SE of a variance sqrt(2/n).
  for name in ("VP", "sub-VP"):
    simulated, exact = r[f"forward_var_x1_t1_{name}"]
    assert abs(exact - 1.0) < 1e-3 and abs(simulated - exact) < 4 * exact * (2 / 200) ** 0.5
  assert r["mesh_max_difference"] < 1e-5


@pytest.mark.slow
def test_converted_checkpoint_in_the_image_notebook_matches_the_original(executed):
  r = executed[2]["image_models"]
  assert r["converted_score_max_relative_difference"] < 2e-5   # the fixture README's tolerance
  assert r["nfe_pc"] == 20 and r["train_steps"] == 4


@pytest.mark.slow
def test_the_image_notebook_runs_on_fashion_mnist(executed):
  r = executed[2]["image_models_fashion_mnist"]
  assert r["train_steps"] == 4 and r["nfe_pc"] == 20
  assert r["bits_per_dim"][0] > 0 and r["bits_per_dim"][1] >= 0   # 8-bit 32x32 images
  assert r["converted_score_max_relative_difference"] < 2e-5
