# GridKey — top-level tasks. `make demo` runs the main job, `make test` runs every test.
# Every target installs what it needs by itself (idempotently) into .venv/.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum python/pyproject.toml | cut -d' ' -f1)
ARGS   ?=
PYTEST_WORKERS ?= auto

.PHONY: help install system-deps lint test test-python test-cross demo bench vectors clean

help:
	@echo "make demo     run the main job (sidecar + simulated meters)"
	@echo "make test     lint + every test (unit, property, cross-component)"
	@echo "make system-deps  install the Debian packages the tests need (PostgreSQL, ...)"
	@echo "make bench    protocol benchmark (JSON + table)"
	@echo "make vectors  regenerate docs/test-vectors/*.json from fixed seeds"

$(STAMP): python/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e 'python[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

# Debian packages for the cross-component tests (idempotent: installs only what is missing).
system-deps:
	bash scripts/install-system-deps.sh

lint: install
	$(VENV)/bin/ruff check python scripts tests
	$(VENV)/bin/ruff format --check python scripts tests

# Unit and property tests of the Python package only (quick; no system packages needed).
test-python: install
	cd python && ../$(VENV)/bin/pytest -n $(PYTEST_WORKERS) -p no:cacheprovider tests

# Cross-component tests only (real sidecar processes, PostgreSQL, ...).
test-cross: install system-deps
	cd python && GRIDKEY_REQUIRE_POSTGRES=1 ../$(VENV)/bin/pytest -n $(PYTEST_WORKERS) -p no:cacheprovider ../tests

# Everything: lint, then unit + property + cross-component tests in one pytest run.
# GRIDKEY_REQUIRE_POSTGRES: a missing PostgreSQL fails the PostgreSQL tests instead of skipping them.
test: install lint system-deps
	cd python && GRIDKEY_REQUIRE_POSTGRES=1 ../$(VENV)/bin/pytest -n $(PYTEST_WORKERS) -p no:cacheprovider tests ../tests

demo: install
	$(VENV)/bin/gridkey demo $(ARGS)

bench: install
	$(VENV)/bin/gridkey bench protocol --n 3,10,25,100 $(ARGS)

vectors: install
	$(PY) scripts/gen_test_vectors.py

clean:
	rm -rf $(VENV) python/src/*.egg-info
