"""The container tests: a real engine (podman, or Docker), the project image built once per session.

Locally they skip, naming why, when no engine is there (`make engine` prepares one); in CI (CI=true)
a missing engine is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.stack import ROOT

BASE_IMAGE = os.environ.get("LOOPLINE_BASE_IMAGE", "localhost/loopline-bookworm-base:latest")
IMAGE = os.environ.get("LOOPLINE_TEST_IMAGE", "localhost/loopline:test")


def _no_engine(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and no container engine: {reason} (.ci/run runs `make engine` first)")
    pytest.skip(f"no container engine: {reason}; `make engine` prepares podman, a base image and its socket")


@pytest.fixture(scope="session")
def engine() -> str:
    podman = shutil.which("podman")
    if podman is None:
        _no_engine("podman is not installed")
    if subprocess.run([podman, "info"], capture_output=True).returncode != 0:
        _no_engine("`podman info` fails")
    return podman


@pytest.fixture(scope="session")
def engine_url(engine) -> str:
    """The engine's Docker-compatible API (what the Docker provider talks to): `make engine`'s podman socket."""
    socket = Path(os.environ.get("LOOPLINE_PODMAN_SOCKET", "/run/loopline-podman/podman.sock"))
    if not socket.is_socket():
        _no_engine(f"no Docker-API socket at {socket}")
    return f"unix://{socket}"


@pytest.fixture(scope="session")
def project_image(engine) -> str:
    """The one project image (Dockerfile), built once for every container test of the session."""
    base = BASE_IMAGE
    if subprocess.run([engine, "image", "exists", base]).returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"base image {base} missing: run `make engine`")
        base = "python:3.11-slim-bookworm"  # a machine with a registry: the Dockerfile's default
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    build = subprocess.run(
        [engine, "build", "--network=host", "--build-arg", f"BASE_IMAGE={base}"]
        + ["--build-arg", f"LOOPLINE_GIT_COMMIT={commit}", "-t", IMAGE, str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    return IMAGE
