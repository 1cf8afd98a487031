# One entry point for developers and CI.
#   make test   - create .venv if missing, install stockade with its test extras, run the whole suite
#   make run    - create .venv if missing and start a sandboxed shell with the built-in default policy
#   make bench  - benchmarks against the peers (never part of `make test`)
# The distribution's interpreter when it is 3.11+ and can create a venv, else python3 from PATH
# (PYTHON=... overrides): on these machines Debian's runs stockade's Python ~1.4x faster than a
# default pyenv build, which has no profile-guided optimisation.
SYSTEM_PYTHON := $(shell /usr/bin/python3 -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && echo /usr/bin/python3)
PYTHON ?= $(if $(SYSTEM_PYTHON),$(SYSTEM_PYTHON),python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stockade-installed

.PHONY: test run bench system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

system-deps:
	@scripts/system-deps.sh

test: $(STAMP) system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

run: $(STAMP)
	$(BIN)/stockade run -- bash

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-* build *.egg-info .pytest_cache .hypothesis
