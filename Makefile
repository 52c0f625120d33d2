# Loopline: `make demo` runs the whole line on the embedded default; `make test` runs every test.
# Both create the Python 3.11 environment in .venv first (with uv), so nothing is installed by hand.

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.loopline-installed
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)

.PHONY: demo test test-fast bench lint lock clean help

help:
	@echo "make demo   - create .venv, then run ingest -> validate -> version -> train -> register -> package end to end"
	@echo "make test   - create .venv, then run the whole test suite (unit, DAG integrity, end-to-end)"
	@echo "make bench  - benchmarks (train DAG on 1M rows vs a bare script)"
	@echo "make clean  - remove all embedded state (.loopline/)"

$(UV):
	python3 -m pip install --quiet --user uv

$(STAMP): requirements.txt pyproject.toml | $(UV)
	test -x $(BIN)/python || $(UV) venv --quiet --python 3.11 $(VENV)
	$(UV) pip install --quiet --python $(BIN)/python -r requirements.txt
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m bench.train_bench

lint: $(STAMP)
	$(BIN)/ruff check include dags tests models bench plugins
	$(BIN)/ruff format --check include dags tests models bench plugins

lock: | $(UV)
	$(UV) pip compile requirements.in --python-version 3.11 -o requirements.txt

clean: $(STAMP)
	$(BIN)/loopline reset --yes
