# The two set-up commands of the README: `make dev` and `make test`.
# Each creates the environment and installs what it needs, so a fresh clone needs nothing else.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NATIVE_DIR := matching_engine/native
NATIVE_STAMP := $(VENV)/.native-built
NATIVE_SOURCES := $(NATIVE_DIR)/Cargo.toml $(NATIVE_DIR)/Cargo.lock $(wildcard $(NATIVE_DIR)/src/*.rs)
PYTEST_ARGS ?=
# rustup installs cargo under ~/.cargo/bin, which a non-login shell may not have on PATH.
export PATH := $(PATH):$(HOME)/.cargo/bin

.PHONY: dev test native services-install lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The Rust matching core (gpux_native), built into the venv; cargo fetches from crates.io.
$(NATIVE_STAMP): $(STAMP) $(NATIVE_SOURCES)
	$(PY) -m pip install --quiet 'maturin>=1.9,<2'
	VIRTUAL_ENV=$(abspath $(VENV)) CARGO_BUILD_JOBS=2 $(VENV)/bin/maturin develop --release --quiet -m $(NATIVE_DIR)/Cargo.toml
	touch $(NATIVE_STAMP)

native: $(NATIVE_STAMP)

services-install: $(STAMP)
	$(PY) -m harness install

dev: $(STAMP)
	$(PY) -m gpux dev

test: $(STAMP) $(NATIVE_STAMP) services-install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy protocol matching_engine eventlog ledger settlement gateway sdk gpux harness

bench: $(STAMP) $(NATIVE_STAMP)
	$(PY) -m benchmarks.engine_core

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis $(NATIVE_DIR)/target
