# Two commands on a fresh machine (Python 3.11 to 3.13): `make run` and `make test`.
# Each creates .venv inside the checkout and installs the locked dependencies on first use.
# No GPU? `make run TORCH_INDEX=https://download.pytorch.org/whl/cpu` installs the CPU-only
# torch wheel (about 200 MB) instead of the default Linux wheel with its CUDA libraries (GBs).

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
CORES ?= all
TORCH_INDEX ?=

.PHONY: run test lint clean

$(VENV)/.installed: pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "rbmflow needs Python >= 3.11; $(PYTHON) is $$($(PYTHON) --version 2>&1). Use: make PYTHON=python3.12 ..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/pip install --quiet -c requirements.lock --index-url $(TORCH_INDEX) torch)
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test]'
	touch $@

run: $(VENV)/.installed
	PATH="$(BIN):$$PATH" snakemake --cores $(CORES)

test: $(VENV)/.installed
	PATH="$(BIN):$$PATH" python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check workflow tests benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	PATH="$(BIN):$$PATH" snakemake --lint --workflow-profile none

clean:
	rm -rf results logs .snakemake benchmarks/out
