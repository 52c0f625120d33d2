"""Retrain a registered model version from its recorded lineage and compare the metrics.

The retraining runs the code of the recorded commit (a temporary git worktree),
on the recorded data version (pulled from the DVC remote by registry commit),
with the recorded params; training is deterministic, so the holdout metrics
must match to the last digit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopline.core.errors import LooplineError
from loopline.core.settings import Settings


class ReproduceError(LooplineError):
    """The recorded lineage cannot be replayed; the message says what to do instead."""


@dataclass
class Reproduction:
    model_name: str
    version: str
    run_id: str
    code_commit: str
    data_version: str
    recorded: dict[str, float]
    reproduced: dict[str, float]
    tolerance: float
    note: str = ""  # how the code was found, when not at the recorded commit

    @property
    def matches(self) -> bool:
        return bool(self.recorded) and all(self._same(k) for k in self.recorded)

    def _same(self, key: str) -> bool:
        return key in self.reproduced and abs(self.recorded[key] - self.reproduced[key]) <= self.tolerance

    def table(self) -> str:
        lines = [
            f"{self.model_name} v{self.version} (run {self.run_id}, "
            f"code {self.code_commit[:12]}, data {self.data_version})",
            f"{'metric':<24}{'recorded':>14}{'reproduced':>14}  match",
        ]
        for key, value in self.recorded.items():
            again = self.reproduced.get(key, float("nan"))
            lines.append(f"{key:<24}{value:>14.6f}{again:>14.6f}  {'yes' if self._same(key) else 'NO'}")
        lines.append("REPRODUCED" if self.matches else "NOT REPRODUCED")
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


def retrain_metrics(model_name: str, inputs: dict[str, Any], settings: Settings) -> dict[str, float]:
    """Train on the recorded data and params with the code importable here; holdout metrics."""
    from loopline.core.spec import load_spec
    from loopline.ingestion.data_registry import DataRegistry
    from loopline.training import trainer as training

    spec = load_spec(model_name, settings.models_dir)
    registry = DataRegistry(settings.data_registry, settings.dvc_remote_url)
    version = registry.resolve(spec.dataset.name, inputs["data_rev"])
    with tempfile.TemporaryDirectory() as tmp:
        frame = registry.load(version, Path(tmp) / "data")
    if spec.features.stored:  # the same training set again, from the feature store, or a refusal saying why not
        from loopline.training.stored import check_same_set, with_stored_features

        frame, lineage = with_stored_features(training.labelled(frame, spec), spec, settings)
        check_same_set(inputs.get("training_set"), lineage, model_name)
    return training.fit_and_evaluate(frame, spec, inputs["params"])[1]


def reproduce(model_name: str, version: str, settings: Settings, tolerance: float = 1e-9) -> Reproduction:
    from loopline.core import tracking
    from loopline.core.spec import load_spec
    from loopline.core.tasks import task_of

    client = tracking.client_for(settings)
    model_version = client.get_model_version(model_name, version)
    run = client.get_run(model_version.run_id)
    inputs = tracking.recorded_inputs(client, run.info.run_id)
    if inputs.get("stored"):  # the training set's lineage, which the retraining must rebuild exactly
        import mlflow.artifacts

        from loopline.training.stored import LINEAGE_ARTIFACT

        inputs["training_set"] = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/{LINEAGE_ARTIFACT}")
    task = task_of(load_spec(model_name, settings.models_dir))
    # The task's holdout metrics that this run recorded (an older run may predate one of them).
    recorded = {k: run.data.metrics[f"holdout.{k}"] for k in task.metrics if f"holdout.{k}" in run.data.metrics}
    note = ""
    if inputs["code_dirty"] or inputs["code_commit"] == "unknown":
        # Uncommitted code cannot be checked out again: the best we can do is today's tree.
        reproduced = retrain_metrics(model_name, inputs, settings)
        note = (
            f"note: v{version} was trained from code not committed as it was (code_dirty: the platform's code, or"
            f" models/{model_name}/ or its suite untracked or changed), so this retrained today's tree. For a"
            f" version reproducible from its commit: commit models/{model_name}/ and its suite, then retrain."
        )
    else:
        spec = load_spec(model_name, settings.models_dir)
        suite = settings.expectations_dir / f"{spec.dataset.expectation_suite}.json"
        check_commit_holds(settings.project_root, inputs["code_commit"], model_name, [spec_path(spec, settings), suite])
        reproduced = _retrain_at_commit(model_name, inputs, settings)
    return Reproduction(
        model_name=model_name,
        version=version,
        run_id=run.info.run_id,
        code_commit=inputs["code_commit"],
        data_version=inputs["data_version"],
        recorded=recorded,
        reproduced=reproduced,
        tolerance=tolerance,
        note=note,
    )


def spec_path(spec: Any, settings: Settings) -> Path:
    return (spec.model_dir or settings.models_dir / spec.name) / "spec.yaml"


def check_commit_holds(root: Path, commit: str, model_name: str, files: list[Path]) -> None:
    """Refuse, saying what to do, when the recorded commit lacks the model's spec or suite.

    A model folder trained before it was committed (a fresh ``loopline onboard``) has no code at its
    recorded commit; retraining there would fail deep inside the worktree with "no spec".
    """

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)

    if git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        raise ReproduceError(
            f"the recorded code commit {commit[:12]} is not in the repository at {root} (fetch it, or retrain"
            " this model from a commit this repository has)"
        )
    top = Path(git("rev-parse", "--show-toplevel").stdout.strip() or root).resolve()
    missing = []
    for path in files:
        try:
            rel = Path(path).resolve().relative_to(top).as_posix()
        except ValueError:
            missing.append(str(path))
            continue
        if git("cat-file", "-e", f"{commit}:{rel}").returncode != 0:
            missing.append(rel)
    if missing:
        raise ReproduceError(
            f"{model_name} cannot be reproduced: its recorded commit {commit[:12]} has no {', '.join(missing)}"
            f" (the model was trained before its folder and suite were committed). Commit models/{model_name}/"
            " and its expectation suite, retrain (the new version records that commit), then reproduce the new"
            " version."
        )


def _retrain_at_commit(model_name: str, inputs: dict[str, Any], settings: Settings) -> dict[str, float]:
    """Check the recorded commit out into a worktree and retrain with that code, in a child process."""
    root = settings.project_root
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "-q", "--detach", str(tree), inputs["code_commit"]], cwd=root, check=True
        )
        try:
            env = {
                **os.environ,
                "PYTHONPATH": str(tree / "include"),
                "LOOPLINE_PROJECT_ROOT": str(tree),
                "LOOPLINE_HOME": str(settings.home),
                "LOOPLINE_DATA_REGISTRY": str(settings.data_registry),
                "LOOPLINE_DVC_REMOTE": settings.dvc_remote_url,
            }
            payload = json.dumps({"model_name": model_name, "inputs": inputs})
            code = (
                "import json, sys; from loopline.training.reproduce import retrain_metrics; "
                "from loopline.core.settings import get_settings; a = json.load(sys.stdin); "
                "print(json.dumps(retrain_metrics(a['model_name'], a['inputs'], get_settings())))"
            )
            done = subprocess.run(
                [sys.executable, "-c", code], input=payload, capture_output=True, text=True, env=env, cwd=tree
            )
            if done.returncode != 0:
                raise RuntimeError(f"retraining at {inputs['code_commit'][:12]} failed:\n{done.stderr[-3000:]}")
            return json.loads(done.stdout.strip().splitlines()[-1])
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=root, check=False)
