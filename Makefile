# GridKey — top-level tasks. `make demo` runs the main job, `make test` runs every test.
# Every target installs what it needs by itself (idempotently) into .venv/.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum python/pyproject.toml | cut -d' ' -f1)
ARGS   ?=
PYTEST_WORKERS ?= auto

.PHONY: help install lint test test-python demo bench vectors clean

help:
	@echo "make demo     run the main job (sidecar + simulated meters)"
	@echo "make test     lint + every test (unit, property, cross-component)"
	@echo "make bench    protocol benchmark (JSON + table)"
	@echo "make vectors  regenerate docs/test-vectors/*.json from fixed seeds"

$(STAMP): python/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e 'python[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check python scripts tests
	$(VENV)/bin/ruff format --check python scripts tests

test-python: install
	cd python && ../$(VENV)/bin/pytest -n $(PYTEST_WORKERS) -p no:cacheprovider tests

test: lint test-python

demo: install
	$(VENV)/bin/gridkey demo $(ARGS)

bench: install
	$(VENV)/bin/gridkey bench protocol --n 3,10,25,100 $(ARGS)

vectors: install
	$(PY) scripts/gen_test_vectors.py

clean:
	rm -rf $(VENV) python/src/*.egg-info
