# syntax=docker/dockerfile:1
# One image for every Python process of the docker compose stack: the Airflow components
# (api-server, scheduler, dag-processor, triggerer, Celery worker), the MLflow tracking server
# and the BentoML service. Same Python, same pinned packages and same code as `make demo`:
# requirements.txt, then the project itself with `--no-deps -e .`, as the Makefile does with uv.
#
# The base image is a build argument: the public python:3.11-slim-bookworm by default; on a machine
# without a registry, a local Debian bookworm made by scripts/container-engine.sh (`make engine`),
# which has no Python: the first step then installs bookworm's python3 (3.11) and its venv module.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# git: the DVC data registry is a git repo; libgomp1: LightGBM's OpenMP runtime;
# curl: health checks; tini: PID 1 that forwards signals (Celery warm shutdown) and reaps children.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git libgomp1 curl tini ca-certificates \
 && { command -v python3 >/dev/null || apt-get install -y --no-install-recommends python3 python3-venv; } \
 && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/loopline

# Dependencies first, so a code change does not reinstall them. requirements.txt is fully pinned
# (it includes what only the stack uses: dvc-s3, boto3, statsd, asyncpg), hence --no-deps;
# `pip check` then proves the set is complete and consistent.
# One virtual environment whatever the base (/opt/venv, first on PATH); uv installs into it (fast), pinned.
ARG UV_VERSION=0.13.9
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    UV_NO_CACHE=1
RUN python3 -m venv /opt/venv \
 && python -c 'import sys; assert sys.version_info[:2] == (3, 11), "Loopline pins Python 3.11"' \
 && python -m pip install "uv==${UV_VERSION}"
COPY requirements.txt ./
RUN uv pip install --no-deps -r requirements.txt \
 && uv pip check
# The drift check's detector (alibi-detect 0.13, which pins numpy<2; the stack is on numpy 2 for Feast)
# runs in a second venv through include/loopline/monitoring/drift_worker.py (ARCHITECTURE.md,
# "Two Python environments"); +0.94 GB before compression. Only the scheduler and Celery workers run drift checks,
# but one image serves every process.
COPY requirements-drift.txt ./
RUN python3 -m venv /opt/venv-drift \
 && uv pip install --python /opt/venv-drift/bin/python --no-deps -r requirements-drift.txt \
 && uv pip check --python /opt/venv-drift/bin/python
ENV LOOPLINE_DRIFT_PYTHON=/opt/venv-drift/bin/python

COPY . .
RUN uv pip install --no-deps -e .

# The image has no .git: lineage records this commit instead (`LOOPLINE_GIT_COMMIT=$(git rev-parse HEAD)
# docker compose build`); left empty, runs are tagged with an unknown, dirty commit.
ARG LOOPLINE_GIT_COMMIT=""
ENV LOOPLINE_GIT_COMMIT=${LOOPLINE_GIT_COMMIT}

# A non-root user (uid 50000, group 0, as in the official Airflow image). The folders below are
# mount points of named volumes; creating them here gives fresh volumes this owner.
ARG LOOPLINE_UID=50000
RUN useradd --uid "${LOOPLINE_UID}" --gid 0 --create-home --shell /bin/bash loopline \
 && mkdir -p /opt/loopline/state /opt/loopline/bentoml /opt/loopline/predictions /opt/loopline/feast \
 && chown -R "${LOOPLINE_UID}:0" /opt/loopline/state /opt/loopline/bentoml /opt/loopline/predictions /opt/loopline/feast
USER loopline

EXPOSE 8080 5000 3000
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["loopline", "--help"]
