# The two commands of the README: `make pipeline` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LINTED := pag tests benchmarks

.PHONY: setup test test-slow lint pipeline clean-venv

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

test: lint
	$(BIN)/pytest -m "not slow"

test-slow: setup
	$(BIN)/pytest -m slow

pipeline: setup
	@echo "pipeline not yet available: the Snakemake/DVC pipeline lands with the pipeline issue." >&2
	@echo "Available now: $(BIN)/pag data synth --num 1000 --seed 0 (the default dataset)." >&2
	@exit 1

clean-venv:
	rm -rf $(VENV)
