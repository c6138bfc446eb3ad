# The two commands of the README: `make pipeline` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LINTED := pag tests benchmarks

.PHONY: setup test test-slow test-reliability lint pipeline clean-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "pag needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/snakefmt --check Snakefile workflow/rules
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --lint --config profile=tiny

test: lint
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest -m "not slow"

test-slow: setup
	$(BIN)/pytest -m slow

# The fault-injection suite (tests/test_reliability_*.py), fast and slow tests together; the
# counts of faults injected, bad inputs tried and runs lost go to logs/reliability-counts.json
test-reliability: setup
	mkdir -p logs
	PATH="$(abspath $(BIN)):$$PATH" PAG_FAULT_COUNTS=logs/reliability-counts.json \
		$(BIN)/pytest tests/test_reliability_*.py

# The whole default pipeline (params/synthetic.yaml): data, training, evaluation, summary,
# figures. CORES=N sets the cores; PROFILE=name another profile (params/<name>.yaml).
CORES ?= 2
PROFILE ?= synthetic
pipeline: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) --config profile=$(PROFILE)

clean-venv:
	rm -rf $(VENV)
