"""The Dockerfile: Python 3.11, the pinned requirements.txt, the project as `make` installs it.

What only the stack uses is in the same lock file; the build context leaves secrets and local state out.
"""

from __future__ import annotations

import re

from tests.deploy.stack import ROOT, environment, services

DOCKERFILE = ROOT / "Dockerfile"
STACK_PACKAGES = {"dvc-s3", "s3fs", "boto3", "statsd", "asyncpg"}  # s3 remote, MLflow on S3, metrics, Airflow on PG


def _pins(path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)==([^\s;]+)(\s*;.*)?", line)
        assert match, f"{path.name}: not pinned with ==: {line!r}"
        pins[match[1].lower().split("[")[0]] = match[2]
    return pins


def _run_steps() -> list[str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [line.strip()[4:] for line in text.splitlines() if line.strip().startswith("RUN ")]


def test_dockerfile_builds_on_python_311_slim_or_a_given_base():
    text = DOCKERFILE.read_text()
    base = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert base == ["${BASE_IMAGE}"], base
    default = re.findall(r"^ARG BASE_IMAGE=(\S+)", text, flags=re.MULTILINE)
    assert len(default) == 1 and re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", default[0]), default
    # a base without Python (the local debootstrap one) gets bookworm's python3, which is 3.11
    assert re.search(r"command -v python3 .*apt-get install .*python3 python3-venv", " ".join(_run_steps()))
    assert 'requires-python = ">=3.11,<3.12"' in (ROOT / "pyproject.toml").read_text()


def test_dockerfile_installs_the_pinned_requirements_then_the_project_like_the_makefile():
    text = DOCKERFILE.read_text()
    steps = " && ".join(_run_steps())
    assert "COPY requirements.txt" in text
    assert re.search(r"pip install --no-deps -r requirements\.txt", steps)
    assert "pip check" in steps, "--no-deps installs must be proven complete"
    assert re.search(r"pip install --no-deps -e \.", steps)
    assert steps.index("-r requirements.txt") < steps.index("-e ."), "dependencies first, then the project"
    assert "--no-deps -e ." in (ROOT / "Makefile").read_text()


def test_requirements_are_fully_pinned():
    pins = _pins(ROOT / "requirements.txt")
    assert {"apache-airflow", "mlflow", "bentoml", "dvc", "apache-airflow-providers-celery", "psycopg2-binary"} <= set(
        pins
    )


def test_the_stack_packages_are_in_the_one_lock_file():
    assert STACK_PACKAGES <= set(_pins(ROOT / "requirements.txt"))


def test_image_has_the_tools_the_stack_runs_and_a_non_root_user():
    apt = next(step for step in _run_steps() if "apt-get install" in step)
    for package in ("git", "libgomp1", "curl", "tini"):  # data registry, LightGBM, health checks, PID 1
        assert re.search(rf"\b{package}\b", apt), package
    text = DOCKERFILE.read_text()
    assert re.search(r"^ENTRYPOINT \[\"/usr/bin/tini\", \"--\"\]", text, flags=re.MULTILINE)
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0")


def test_image_layout_matches_the_compose_settings():
    text = DOCKERFILE.read_text()
    workdir = re.findall(r"^WORKDIR\s+(\S+)", text, flags=re.MULTILINE)[-1]
    worker = environment(services()["airflow-worker"])
    assert worker["LOOPLINE_PROJECT_ROOT"] == workdir
    for setting in ("LOOPLINE_HOME", "LOOPLINE_BENTOML_HOME", "LOOPLINE_PREDICTION_LOG_DIR"):
        # created (and owned by the image's user) so that a fresh named volume gets that owner
        assert worker[setting] in text, f"the Dockerfile must create the mount point {worker[setting]}"


def test_build_context_leaves_secrets_and_state_out():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".env", ".git", ".venv", ".loopline"} <= ignored
    assert "!.env.example" in ignored
    assert not re.search(r"COPY\s+\.env\b", DOCKERFILE.read_text())
