# Two entry points: `make workflow` (set up, then run the default DAG) and `make test`
# (set up, then run the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup workflow claims test benchmarks

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[workflow,test]'
	touch $@

setup: $(VENV)/.installed

workflow: setup
	$(BIN)/snakemake --cores all

# Every table and figure of the claims config (results/claims), then its HTML report.
claims: setup
	$(BIN)/snakemake --cores all --configfile config/claims.yaml
	$(BIN)/snakemake --configfile config/claims.yaml --report results/claims/report.html

test: setup
	$(BIN)/python -m pytest

benchmarks: setup
	$(BIN)/python benchmarks/run_all.py
