# make demo: set up .venv, train the default toy model, sample from it, write figures.
# make test: set up .venv, run the test suite.
# make notebooks: set up .venv, run both notebooks at full size (executed copies and figures in workdirs/notebooks).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKDIR ?= workdirs/demo
CONFIG ?= configs/default_toy.py

.PHONY: demo test notebooks bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p $(dir $(WORKDIR))
	$(PY) run.py --config $(CONFIG) --workdir $(WORKDIR) --mode train
	$(PY) run.py --config $(CONFIG) --workdir $(WORKDIR) --mode sample
	@echo "demo done: figures in $(WORKDIR)/figures, samples in $(WORKDIR)/samples, metrics in $(WORKDIR)/eval"

test: $(STAMP)
	$(PY) -m pytest -q tests

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
