# nic-repro: one entry point for people and CI.
#   make figures   create the environment if needed, regenerate every committed figure (cpu profile),
#                  with progress and estimates; NB=01 (or NB=ood-nic, a paper) for one; then `make site`
#   make test      create the environment if needed, run unit tests + a smoke run of every notebook,
#                  then verify notebook 04 (cpu profile) against its committed tables
#   make smoke     only the smoke execution of every notebook (what CI runs after the unit tests)
#   make smoke-full  every notebook's full profile (published weights) at smoke size, against the
#                  stand-in zoo on a loopback server: no internet (part of `make test` too)
#   make verify NB=04   re-execute notebooks (cpu profile, caches bypassed) into build/verify/ and compare
#                  their tables with paper_figures/ within the declared tolerances; fails on drift (all without NB)
#   make lab       JupyterLab on notebooks/, printing its URL; a double click on NN_*.py opens a notebook
#   make site      the executed notebooks as static HTML in build/site/ (nbconvert), summaries in paper_figures/
#   make notebook NB=00 PROFILE=cpu ARGS="-p N_IMAGES 4"   run one notebook with other parameters
#   make sync      write the paired .ipynb next to each notebooks/NN_*.py (jupytext)
# The environment is a virtualenv in $(VENV) (override: make test VENV=/path/to/venv).
# With conda: `conda env create -f environment.yml && conda activate nic-repro`, then
# `make test VENV=$$CONDA_PREFIX`.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.nic-repro-installed
PROFILE ?= cpu
NB ?=
# what `make test` verifies against the committed tables (cpu profile; notebook 04: under a minute)
VERIFY_IN_TEST ?= 04
ARGS ?=

.PHONY: env test smoke smoke-full figures notebook lab site sync clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

env: $(STAMP)

test: env
	$(PY) -m pytest
	$(PY) -m nic_lib.notebooks verify $(VERIFY_IN_TEST)

smoke: env
	$(PY) -m nic_lib.notebooks run --profile smoke

.PHONY: smoke-full
smoke-full: env
	$(PY) -m pytest tests/test_notebooks_full.py tests/test_zoo.py

figures: env
	$(PY) -m nic_lib.notebooks run $(NB) --profile cpu $(ARGS); status=$$?; $(PY) -m nic_lib.site build; exit $$status

.PHONY: verify
verify: env
	$(PY) -m nic_lib.notebooks verify $(NB)

notebook: env
	$(PY) -m nic_lib.notebooks run $(NB) --profile $(PROFILE) $(ARGS)

lab: env
	$(PY) -m nic_lib.lab $(ARGS)

site: env
	$(PY) -m nic_lib.site build $(ARGS)

sync: env
	$(PY) -m nic_lib.notebooks sync

clean:
	rm -rf build .pytest_cache
