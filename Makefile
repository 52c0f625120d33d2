# Loopline: `make demo` runs the whole line on the embedded default; `make test` the tests a change needs
# (with the end-to-end spine), `make test-all` every test in one session (CI runs it).
# Both create the Python 3.11 environments first (with uv), so nothing is installed by hand: .venv (the stack,
# numpy 2 with Feast) and .venv-drift (alibi-detect 0.13, which pins numpy<2: the drift check's one call
# runs there through include/loopline/monitoring/drift_worker.py; ARCHITECTURE.md, "Two Python environments").

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.loopline-installed
VENV_DRIFT := .venv-drift
DRIFT_STAMP := $(VENV_DRIFT)/.loopline-installed
MODEL ?= credit_risk
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)

.PHONY: demo test test-all bench lint lock clean help

help:
	@echo "make demo   - create .venv, then run ingest -> validate -> version -> train -> register -> package end to end"
	@echo "make test   - create .venv, then run unit, data, model, DAG integrity, deploy and the end-to-end spine (~15 min)"
	@echo "make test-all - every test, with the long end-to-end runs (crashes, rollouts, drift, task types, ...): CI"
	@echo "make bench  - benchmarks (train DAG on 1M rows vs a bare script)"
	@echo "make bench-serve - per-request cost vs the booster floor, the Bento service vs bare FastAPI at 1/8/64 connections, a 1M-row file batch-scored (~9 min; --quick: python -m bench.serve_bench --quick)"
	@echo "make bench-drift - drift check vs Evidently DataDriftPreset and NannyML CBPE/DLE: detection, false alarms, estimation error, time per window (~3 min on 2 quiet cores, 27 min at load 15-20; --quick: python -m bench.drift_bench --quick)"
	@echo "make bench-features - feature store: a lookup in the service vs features in the request, online read vs SQLite, a 1M-row point-in-time training set vs merge_asof, materialisation rows/s (~10 min; --quick: python -m bench.features_bench --quick)"
	@echo "make bench-dags - DAG-file parse and task start-up time with 1, 10 and 50 model folders (~5 min)"
	@echo "make simulate - weeks of compressed time through the real DAGs: drift, retrain, rollout (~5 min)"
	@echo "make clean  - remove all embedded state (.loopline/); .venv and .venv-drift stay"
	@echo "make up     - start Airflow (:8080), the MLflow UI (:5000) and the credit_risk Bento (:3000) in the background"
	@echo "make down   - stop everything make up started"
	@echo "make engine - podman + runc, a local Debian base image and a Docker-API socket (no daemon, no registry needed)"
	@echo "make image  - build the project image with podman on that base (tag loopline:local)"
	@echo "make stack-up / stack-down - docker-compose.yaml for real on podman, no registry (deploy/podman overlay)"

# uv lives inside .venv, so the whole toolchain comes from this Makefile and PyPI alone.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c 'import sys; assert sys.version_info[:2] == (3, 11), "Loopline pins Python 3.11"'
	test -x $(BIN)/uv || { $(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --upgrade >/dev/null; \
		$(BIN)/python -m pip install --quiet uv; }
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	# The Compose Specification schema the compose tests validate against (a JSON file inside this wheel).
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --target $(VENV)/share/compose-spec docker-compose==1.29.2
	touch $(STAMP)

# alibi-detect 0.13 pins numpy<2, the stack needs numpy>=2 (Feast): its own venv, locked in requirements-drift.txt
# (--no-deps: the lock is complete; `uv pip check` proves it). Nothing of Loopline is installed there.
$(DRIFT_STAMP): requirements-drift.txt $(STAMP)
	test -x $(VENV_DRIFT)/bin/python || $(BIN)/uv venv --quiet -p $(BIN)/python $(VENV_DRIFT)
	$(BIN)/uv pip install --quiet --python $(VENV_DRIFT)/bin/python --no-deps -r requirements-drift.txt
	$(BIN)/uv pip check --python $(VENV_DRIFT)/bin/python
	touch $(DRIFT_STAMP)

demo: $(STAMP) $(DRIFT_STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

test: $(STAMP) $(DRIFT_STAMP)
	$(BIN)/python -m pytest -m "not slow"

test-all: $(STAMP) $(DRIFT_STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench.train_bench

.PHONY: bench-serve
bench-serve: $(STAMP)
	$(BIN)/python -m bench.serve_bench

# Drift check vs Evidently and NannyML on the same generated windows (NannyML in .venv-nannyml, made on first use).
.PHONY: bench-drift
bench-drift: $(STAMP) $(DRIFT_STAMP)
	$(BIN)/python -m bench.drift_bench

# The feature store against its floors (issue 23): serving lookup, online read, training set, materialisation.
.PHONY: bench-features
bench-features: $(STAMP)
	$(BIN)/python -m bench.features_bench

# Parse cost per model folder: full dags/ parse (dag-processor) and one DAG's parse (task start-up), fresh processes.
.PHONY: bench-dags
bench-dags: $(STAMP)
	$(BIN)/python -m bench.dag_parse_bench

# Point-in-time training set, 1M label rows x 3 views: the feature store vs a plain pandas.merge_asof (needs Feast).
.PHONY: bench-store
bench-store: $(STAMP)
	$(BIN)/python -m bench.feature_store_bench --feast --feast-labels 100000

lint: $(STAMP)
	$(BIN)/ruff check include dags tests models bench plugins
	$(BIN)/ruff format --check include dags tests models bench plugins

# Each lock is compiled from its own previous one (uv keeps what still fits), so a lock only moves on purpose.
lock: $(STAMP)
	$(BIN)/uv pip compile requirements.in --python-version 3.11 -o requirements.txt
	$(BIN)/uv pip compile requirements-drift.in --python-version 3.11 -o requirements-drift.txt

clean: $(STAMP)
	$(BIN)/loopline reset --yes

# The embedded default as running services (no Docker): pid files and logs in $LOOPLINE_HOME/run/.
.PHONY: up down
up: $(STAMP) $(DRIFT_STAMP)
	bash scripts/localstack.sh up

down:
	bash scripts/localstack.sh down

# Weeks of compressed time through the real DAGs (stable, then a shift) in a throw-away state folder.
.PHONY: simulate
simulate: $(STAMP) $(DRIFT_STAMP)
	export LOOPLINE_HOME="$(abspath .loopline-simulation)" && rm -rf "$$LOOPLINE_HOME" && \
	eval "$$($(BIN)/loopline env)" && $(BIN)/airflow db migrate >/dev/null && $(BIN)/loopline init && \
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/loopline simulate --model $(MODEL)

# A container engine without a Docker daemon or a registry: podman (runc), a debootstrapped bookworm base,
# podman's Docker-compatible socket. Idempotent; the container tests (tests/containers) use it.
ENGINE_SOCKET ?= /run/loopline-podman/podman.sock
BASE_IMAGE ?= localhost/loopline-bookworm-base:latest
.PHONY: engine image
engine:
	LOOPLINE_PODMAN_SOCKET=$(ENGINE_SOCKET) LOOPLINE_BASE_IMAGE=$(BASE_IMAGE) bash scripts/container-engine.sh up

image: engine
	podman build --network=host --build-arg BASE_IMAGE=$(BASE_IMAGE) \
		--build-arg LOOPLINE_GIT_COMMIT=$$(git rev-parse HEAD) -t loopline:local .

# docker-compose.yaml started for real on podman without a registry: the deploy/podman overlay (host networking,
# Debian's packages for the third-party images), Docker's compose client on podman's socket; waits for health.
.PHONY: stack-up stack-down stack-status
stack-up:
	bash scripts/podman-stack.sh up
stack-down:
	bash scripts/podman-stack.sh down
stack-status:
	bash scripts/podman-stack.sh status
