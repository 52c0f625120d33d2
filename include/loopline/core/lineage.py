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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CodeVersion:
    commit: str
    dirty: bool


def code_version(project_root: Path, model_files: Sequence[Path] = ()) -> CodeVersion:
    """The project's git commit; LOOPLINE_GIT_COMMIT overrides it where there is no .git (images).

    ``model_files``: the model's own folder (``models/<name>/``) and its suite
    (``expectations/<suite>.json``). Unlike the platform's code, these count as dirty when they
    are untracked too: a freshly onboarded model is untracked, and a commit that lacks its folder
    cannot train it again (``loopline reproduce``). A path outside the repository, or one git
    ignores, is dirty for the same reason.
    """
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
    # The platform's tracked code: untracked scratch files there do not change what trains.
    status = git("status", "--porcelain", "--untracked-files=no", "--", "include", "models", "dags")
    dirty = bool(status.stdout.strip()) or any(_not_committed(path, project_root, git) for path in model_files)
    return CodeVersion(commit=head.stdout.strip(), dirty=dirty)


def _not_committed(path: Path, project_root: Path, git: Any) -> bool:
    """Is ``path`` (a model folder or suite) anything but committed as it is: untracked, changed, ignored, outside?"""
    top = git("rev-parse", "--show-toplevel")
    try:
        rel = Path(path).resolve().relative_to(Path(top.stdout.strip()).resolve())
    except ValueError:
        return True  # outside the repository: no commit holds it
    root = Path(top.stdout.strip())
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "--", str(rel)],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if status.returncode != 0 or status.stdout.strip():
        return True
    tracked = subprocess.run(["git", "ls-files", "--", str(rel)], cwd=root, capture_output=True, text=True)
    return Path(path).exists() and not tracked.stdout.strip()  # ignored by git: never committed


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
    # The stored features' data (loopline.training.stored.stored_versions): per view the model reads, its
    # definition hash and offline version. Other feature data may train another model: part of the fingerprint.
    stored: dict[str, dict[str, str]] = field(default_factory=dict)

    def fingerprint(self) -> str:
        inputs = asdict(self)
        if self.runtime == "in-process":  # as before runtimes were recorded: earlier runs keep their fingerprint
            del inputs["runtime"]
        if not self.stored:  # a model without stored features keeps the fingerprint it had before they existed
            del inputs["stored"]
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
        } | (
            {
                "loopline.stored_features": ", ".join(
                    f"{view}@{info['offline_version'][:12]}" for view, info in sorted(self.stored.items())
                )
            }
            if self.stored
            else {}
        )
