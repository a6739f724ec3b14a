PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-slurm lint clean

# The project and its pinned dependencies, in a virtual environment.
$(VENV)/installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Classify the bundled example photos offline with EfficientNet-Lite0.
demo: $(VENV)/installed
	$(BIN)/snakemake --cores all --config model=efficientnet_lite0
	$(BIN)/python -m concepts_extraction.summary results/concepts.json

test: $(VENV)/installed
	$(BIN)/python -m pytest -p no:cacheprovider -q

# Runs the workflow through SLURM on a one-node cluster started on localhost.
test-slurm: $(VENV)/installed
	$(BIN)/pip install --quiet -e '.[test,slurm]'
	bash tests/slurm/run_test.sh $(BIN)/python

lint: $(VENV)/installed
	$(BIN)/snakemake --lint --config model=efficientnet_lite0
	$(BIN)/snakefmt --check Snakefile workflow/rules

clean:
	rm -rf results logs resources .snakemake
