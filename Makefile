# nic-repro: one entry point for people and CI.
#   make figures   create the environment if needed, regenerate every committed figure (cpu profile)
#   make test      create the environment if needed, run unit tests + a smoke run of every notebook
#   make smoke     only the smoke execution of every notebook (what CI runs after the unit tests)
#   make lab       JupyterLab with the py:percent notebooks openable as notebooks (jupytext)
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
ARGS ?=

.PHONY: env test smoke figures notebook lab sync clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

env: $(STAMP)

test: env
	$(PY) -m pytest

smoke: env
	$(PY) -m nic_lib.notebooks run --profile smoke

figures: env
	$(PY) -m nic_lib.notebooks run --profile cpu

notebook: env
	$(PY) -m nic_lib.notebooks run $(NB) --profile $(PROFILE) $(ARGS)

lab: env
	$(VENV)/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

sync: env
	$(PY) -m nic_lib.notebooks sync

clean:
	rm -rf build .pytest_cache
