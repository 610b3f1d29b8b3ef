# Two entry points: `make workflow` (set up, then run the default DAG) and `make test`
# (set up, then run the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup workflow claims grpo test benchmarks

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[workflow,test]'
	touch $@

setup: $(VENV)/.installed

workflow: setup
	$(BIN)/snakemake --cores all

# The claims config once per testbed instance (its own data, SFT and RM seed) into
# results/claims/instance<k>, each with its HTML report, then the claims pooled over the instances
# (results/claims/tables/claims.{tsv,md,tex}, per instance beside them in claims_instances.tsv).
CLAIMS_CONFIG ?= config/claims.yaml
CLAIMS_DIR ?= results/claims
CLAIMS_INSTANCES ?= 0 1 2
SNAKEMAKE_ARGS ?=
claims: setup
	for k in $(CLAIMS_INSTANCES); do \
	  $(BIN)/snakemake --cores all $(SNAKEMAKE_ARGS) --configfile $(CLAIMS_CONFIG) \
	    --config seed=$$k results_dir=$(CLAIMS_DIR)/instance$$k run_name=testbed-claims-instance$$k && \
	  $(BIN)/snakemake --configfile $(CLAIMS_CONFIG) --config seed=$$k results_dir=$(CLAIMS_DIR)/instance$$k \
	    run_name=testbed-claims-instance$$k --report $(CLAIMS_DIR)/instance$$k/report.html || exit 1; \
	done
	$(BIN)/python -m rmroute.claims_pool --out $(CLAIMS_DIR) $(foreach k,$(CLAIMS_INSTANCES),$(CLAIMS_DIR)/instance$(k))

# Routed rewards inside TRL's GRPO / RLOO (config/grpo.yaml) into results/grpo; docs/online_rl.md.
grpo: setup
	$(BIN)/snakemake --cores all --configfile config/grpo.yaml

test: setup
	$(BIN)/python -m pytest

benchmarks: setup
	$(BIN)/python benchmarks/run_all.py
