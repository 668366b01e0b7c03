# Two commands on a fresh machine (Python 3.11): `make run` and `make test`.
# Each creates .venv inside the checkout and installs the pinned dependencies on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
CORES ?= all

.PHONY: run test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed
	PATH="$(BIN):$$PATH" snakemake --cores $(CORES)

test: $(VENV)/.installed
	PATH="$(BIN):$$PATH" python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check workflow tests benchmarks
	PATH="$(BIN):$$PATH" snakemake --lint

clean:
	rm -rf results logs .snakemake benchmarks/out
