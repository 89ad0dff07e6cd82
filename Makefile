# The two set-up commands of the README: `make dev` and `make test`.
# Each creates the environment and installs what it needs, so a fresh clone needs nothing else.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
UV := $(VENV)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON := $(abspath $(PY))
NATIVE_DIR := matching_engine/native
NATIVE_STAMP := $(VENV)/.native-built
NATIVE_SOURCES := $(NATIVE_DIR)/Cargo.toml $(NATIVE_DIR)/Cargo.lock $(wildcard $(NATIVE_DIR)/src/*.rs)
PYTEST_ARGS ?=
# rustup installs cargo under ~/.cargo/bin, which a non-login shell may not have on PATH.
export PATH := $(PATH):$(HOME)/.cargo/bin

.PHONY: dev test test-latest lock upgrade native services-install lint bench clean

# Python packages come from uv.lock alone: pip installs the hash-pinned uv (requirements/uv.txt),
# then `uv sync --locked` makes the venv equal to the lock, and fails if pyproject.toml changed
# without `make lock`.
$(STAMP): pyproject.toml uv.lock requirements/uv.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements/uv.txt
	$(UV) sync --locked --extra dev --quiet
	rm -f $(NATIVE_STAMP)  # the sync removes what the lock does not name: gpux_native too
	touch $(STAMP)

# The Rust matching core (gpux_native), built into the venv with the crates of Cargo.lock.
$(NATIVE_STAMP): $(STAMP) $(NATIVE_SOURCES)
	VIRTUAL_ENV=$(abspath $(VENV)) CARGO_BUILD_JOBS=2 $(VENV)/bin/maturin develop --release --locked --quiet -m $(NATIVE_DIR)/Cargo.toml
	touch $(NATIVE_STAMP)

native: $(NATIVE_STAMP)

services-install: $(STAMP)
	$(PY) -m harness install

dev: $(STAMP)
	$(PY) -m gpux dev

test: $(STAMP) $(NATIVE_STAMP) services-install
	$(PY) -m pytest $(PYTEST_ARGS)

# Rewrite uv.lock after a change to pyproject.toml, keeping every other pin as it is.
lock: $(STAMP)
	$(UV) lock
	$(PIN_UV)

# Move every pin to the newest version pyproject.toml allows, on purpose, in one commit.
upgrade: $(STAMP)
	$(UV) lock --upgrade
	$(PIN_UV)

# Rewrite the bootstrap pin of uv itself (every platform's wheel hash) at uv.lock's version.
define PIN_UV
echo "uv==$$($(PY) -c "import tomllib; print(next(p['version'] for p in tomllib.load(open('uv.lock', 'rb'))['package'] if p['name'] == 'uv'))")" \
	| $(UV) pip compile --quiet --generate-hashes --universal --no-header - -o requirements/uv.txt
endef

# The newest allowed versions in a venv of their own, through the fast suites: evidence for
# `make upgrade`. Not part of CI; the locked venv is untouched.
LATEST_VENV := .venv-latest
test-latest: $(STAMP)
	rm -rf $(LATEST_VENV)
	$(UV) venv --quiet --python $(PYTHON) $(LATEST_VENV)
	$(UV) pip install --quiet --python $(LATEST_VENV)/bin/python --upgrade --resolution highest -e '.[dev]'
	VIRTUAL_ENV=$(abspath $(LATEST_VENV)) CARGO_BUILD_JOBS=2 $(VENV)/bin/maturin develop --release --locked --quiet -m $(NATIVE_DIR)/Cargo.toml
	@echo "versions that differ from uv.lock (< locked, > newest):"
	@$(UV) pip freeze --quiet --python $(PY) --exclude-editable | sort > $(LATEST_VENV)/locked.txt
	@$(UV) pip freeze --quiet --python $(LATEST_VENV)/bin/python --exclude-editable | sort > $(LATEST_VENV)/newest.txt
	@diff $(LATEST_VENV)/locked.txt $(LATEST_VENV)/newest.txt | grep '^[<>]' || echo "  none"
	$(LATEST_VENV)/bin/python -m pytest tests/unit tests/fuzz tests/property -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy protocol matching_engine eventlog ledger settlement gateway sdk wsapi runtime gpux harness index delivery agent

bench: $(STAMP) $(NATIVE_STAMP)
	$(PY) -m benchmarks.engine_core

clean:
	rm -rf $(VENV) $(LATEST_VENV) var .pytest_cache .hypothesis $(NATIVE_DIR)/target
