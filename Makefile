# The two set-up commands of the README: `make dev` and `make test`.
# Each creates the environment and installs what it needs, so a fresh clone needs nothing else.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: dev test services-install lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

services-install: $(STAMP)
	$(PY) -m harness install

dev: $(STAMP)
	$(PY) -m gpux dev

test: $(STAMP) services-install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy protocol matching_engine eventlog ledger settlement

bench: $(STAMP)
	$(PY) -m benchmarks.engine_core

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
