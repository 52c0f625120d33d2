"""A model trains in its serving image: the train DAG of a model whose spec names ``runtime.image`` runs its
``train_and_evaluate`` step in that image through the Docker provider's DockerOperator (a real Airflow run,
``airflow dags test``, on the engine; host network), and the result is the in-process one: same params, same
metrics, same model, same lineage apart from the runtime recorded in it. Batch scoring likewise.

One isolated line (tests/e2e/isolated_line.py): data version v0001 trains in-process first (model version 1),
then the same folder, its spec now naming the image, trains again on v0001 (version 2, the gate, the Bento:
the downstream tasks unchanged), and both score the same file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from tests.e2e.isolated_line import PROJECT, IsolatedLine
from tests.generators import credit_risk as datagen

pytestmark = pytest.mark.slow

MODEL = "credit_risk"
# Tags that differ by design: where it ran, what that makes of the fingerprint, and this DAG run's own.
RUN_OWN = {
    "loopline.runtime", "loopline.runtime_image_id", "loopline.fingerprint", "loopline.reason", "loopline.model_uri",
    "loopline.model_id", "loopline.gate_decision",
}  # fmt: skip


def _succeeded(done: subprocess.CompletedProcess, dag_id: str) -> str:
    out = done.stdout + done.stderr
    assert f"DagRun Finished: dag_id={dag_id}" in out and "state=success" in out, out[-6000:]
    return out


def score(line: IsolatedLine, path: Path) -> None:
    _succeeded(line.dag_test(f"{MODEL}_batch_score", {"input_path": str(path), "model": "1"}), f"{MODEL}_batch_score")


def _name_image(line: IsolatedLine, image: str | None) -> None:
    path = line.models / MODEL / "spec.yaml"
    raw = yaml.safe_load(path.read_text())
    raw.pop("runtime", None)
    if image:
        raw["runtime"] = {"image": image}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def test_a_model_trains_and_scores_in_its_image_exactly_as_in_process(engine, engine_url, project_image, tmp_path):
    line = IsolatedLine(tmp_path, LOOPLINE_DOCKER_URL=engine_url)
    shutil.copytree(PROJECT / "models" / MODEL, line.models / MODEL, ignore=shutil.ignore_patterns("__pycache__"))
    line.expectations.mkdir()
    shutil.copy(PROJECT / "expectations" / f"{MODEL}_batch.json", line.expectations)
    line.start()
    line.loopline("generate", "--model", MODEL, "--weeks", "0-3", "--rows", "1500")
    _succeeded(line.dag_test(f"{MODEL}_ingest"), f"{MODEL}_ingest")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    datagen.make_batch(9, n_rows=200, seed=4).drop(columns=["defaulted"]).to_csv(inbox / "apps.csv", index=False)
    conf = {"data_version": "v0001"}

    _succeeded(line.dag_test(f"{MODEL}_train", {**conf, "reason": "in-process"}), f"{MODEL}_train")
    score(line, inbox / "apps.csv")
    _name_image(line, project_image)
    boxed_log = _succeeded(line.dag_test(f"{MODEL}_train", {**conf, "reason": "in the image"}), f"{MODEL}_train")
    assert f"Starting docker container from image {project_image}" in boxed_log
    score(line, inbox / "apps.csv")

    image_id = subprocess.run(
        [engine, "image", "inspect", "-f", "{{.Id}}", project_image], capture_output=True, text=True, check=True
    ).stdout.strip()
    client = MlflowClient(tracking_uri=line.env["MLFLOW_TRACKING_URI"], registry_uri=line.env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(MODEL).experiment_id
    local, boxed = client.search_runs([experiment], order_by=["attributes.start_time ASC"])
    assert local.data.tags["loopline.runtime"] == "in-process" and "loopline.runtime_image_id" not in local.data.tags
    assert boxed.data.tags["loopline.runtime"] == f"image {project_image}"
    assert boxed.data.tags["loopline.runtime_image_id"].removeprefix("sha256:") == image_id.removeprefix("sha256:")

    # the same training: params, metrics, lineage, importances and the model itself
    assert boxed.data.params == local.data.params
    trained = ("holdout.", "valid.", "holdout_ece", "data.")
    metrics = [{k: v for k, v in r.data.metrics.items() if k.startswith(trained)} for r in (local, boxed)]
    assert metrics[0] == metrics[1] and "holdout.auc" in metrics[0]
    lineage = [
        {k: v for k, v in r.data.tags.items() if k.startswith("loopline.") and k not in RUN_OWN} for r in (local, boxed)
    ]
    assert lineage[0] == lineage[1] and lineage[0]["loopline.data_version"] == "v0001"
    recorded = [
        json.loads(Path(client.download_artifacts(r.info.run_id, "lineage/inputs.json", str(tmp_path))).read_text())
        for r in (local, boxed)
    ]
    assert recorded[0].pop("runtime") == "in-process" and recorded[1].pop("runtime") == f"image {project_image}"
    assert recorded[0] == recorded[1]
    import mlflow.lightgbm

    boosters = [mlflow.lightgbm.load_model(client.get_logged_model(r.data.tags["loopline.model_id"]).artifact_location)
                for r in (local, boxed)]  # fmt: skip
    assert boosters[0].model_to_string() == boosters[1].model_to_string()

    # downstream unchanged: registered, gated against the champion (identical: passes), packaged
    version = client.get_model_version(MODEL, "2")
    assert version.run_id == boxed.info.run_id and version.tags["loopline.runtime"] == f"image {project_image}"
    assert version.tags["loopline.gate_decision"] == "challenger" and version.tags["loopline.bento_tag"]

    # batch scoring of the same file with the same version: the same rows, the runtime in its lineage
    runs = sorted((line.home / "scores" / MODEL).iterdir(), key=lambda p: p.stat().st_mtime)
    assert len(runs) == 2
    scores = [pd.read_parquet(r / "scores.parquet") for r in runs]
    pd.testing.assert_frame_equal(scores[0], scores[1])
    lineages = [json.loads((r / "lineage.json").read_text()) for r in runs]
    assert lineages[0].pop("scored_in") == "in-process"
    assert lineages[1].pop("scored_in").startswith(f"image {project_image} (sha256:")
    assert lineages[0] == lineages[1] and lineages[0]["input"] == str(inbox / "apps.csv")  # the host's path
