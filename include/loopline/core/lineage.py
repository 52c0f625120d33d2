"""What exactly produced a model: code commit, data version, feature version, params.

The fingerprint of these inputs is the idempotency key of training: the same
inputs give the same (deterministic) model, so a re-run reuses the earlier
MLflow run and registry version instead of adding a duplicate.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CodeVersion:
    commit: str
    dirty: bool


def code_version(project_root: Path) -> CodeVersion:
    """The project's git commit; LOOPLINE_GIT_COMMIT overrides it where there is no .git (images)."""
    override = os.environ.get("LOOPLINE_GIT_COMMIT", "").strip()
    if override:
        return CodeVersion(commit=override, dirty=False)

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=project_root, capture_output=True, text=True)

    try:
        head = git("rev-parse", "HEAD")
    except OSError:  # no git binary (slim images): the commit is unknown, not a crash
        return CodeVersion(commit="unknown", dirty=True)
    if head.returncode != 0:
        return CodeVersion(commit="unknown", dirty=True)
    # Only tracked code counts: untracked scratch files do not change what trains.
    status = git("status", "--porcelain", "--untracked-files=no", "--", "include", "models", "dags")
    return CodeVersion(commit=head.stdout.strip(), dirty=bool(status.stdout.strip()))


@dataclass(frozen=True)
class TrainingInputs:
    model_name: str
    data_version: str
    data_rev: str
    data_md5: str
    feature_version: str
    code_commit: str
    code_dirty: bool
    params: dict[str, Any]
    # Where the model is trained: "in-process" (the worker's own environment) or "image <reference>"
    # (the spec's runtime image). Part of the fingerprint: another environment may train another model.
    runtime: str = "in-process"

    def fingerprint(self) -> str:
        inputs = asdict(self)
        if self.runtime == "in-process":  # as before runtimes were recorded: earlier runs keep their fingerprint
            del inputs["runtime"]
        payload = json.dumps(inputs, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def tags(self) -> dict[str, str]:
        """MLflow tags recording the lineage (searchable in the MLflow UI)."""
        return {
            "loopline.model": self.model_name,
            "loopline.data_version": self.data_version,
            "loopline.data_rev": self.data_rev,
            "loopline.data_md5": self.data_md5,
            "loopline.feature_version": self.feature_version,
            "loopline.code_commit": self.code_commit,
            "loopline.code_dirty": str(self.code_dirty).lower(),
            "loopline.runtime": self.runtime,
            "loopline.fingerprint": self.fingerprint(),
            "mlflow.source.git.commit": self.code_commit,
        }
