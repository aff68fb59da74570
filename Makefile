# Every target sets up what it needs on first use: `make test` on a fresh
# clone creates .venv, installs the pinned test requirements and this package
# (editable, so Salt finds the modules through the salt.loader entry point).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: venv system-deps test unit functional integration demo bench results matrix clean

$(STAMP): requirements-test.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-test.txt
	$(PY) -m pip install -q -e .
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the integration tests need (redis-server), installed if missing.
system-deps:
	tools/system-deps.sh

test: venv system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

# The tiers mirror the source: unit (no Salt), functional (Salt loaded, no
# daemons), integration (real salt-master, salt-minion, salt-api, Redis).
unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

functional: venv
	$(PY) -m pytest tests/functional $(PYTEST_ARGS)

integration: venv system-deps
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

demo: venv
	$(PY) -m tools.demo

bench: venv
	$(PY) -m tools.bench --json docs/results.json $(BENCH_ARGS)

# The results page again from the JSON it was generated from, without a run.
results: venv
	$(PY) -m tools.bench.report docs/results.json

# The suite on each supported Salt release (3006 LTS, 3007, 3008); slow, not in CI.
matrix: system-deps
	tools/matrix.sh $(MATRIX_VERSIONS)

clean:
	rm -rf .demo .bench build dist *.egg-info
