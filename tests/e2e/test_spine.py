"""The spine, end to end on the embedded default: real Airflow runs (dag.test), real GE, DVC, MLflow, BentoML.

The tests in this module build on each other in order (ingest → train → re-run →
more data → retrain → reproduce), as the line does.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from loopline.core.settings import get_settings
from loopline.core.spec import load_spec
from loopline.ingestion.data_registry import DataRegistry
from loopline.ingestion.landing import mark_complete
from tests.generators import credit_risk as datagen

# Not marked slow: `make test` runs the spine (the whole line once), the other e2e modules are `slow`.
ROWS = 800


def registry() -> DataRegistry:
    s = get_settings()
    return DataRegistry(s.data_registry, s.dvc_remote_url)


def mlflow_client():
    from loopline.core import tracking

    return tracking.client_for(get_settings())


def aliases() -> dict[str, str]:
    return {k: str(v) for k, v in mlflow_client().get_registered_model("credit_risk").aliases.items()}


def contents(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture(scope="module")
def landed_first(zones):
    zones.landing.mkdir(parents=True, exist_ok=True)
    originals = {}
    for week in range(4):
        path = datagen.write_batch(datagen.make_batch(week, n_rows=ROWS, seed=1), zones.landing / f"w{week}.csv")
        originals[path.name] = path.read_bytes()
    for kind in datagen.MALFORMED_KINDS:
        path = datagen.write_malformed(kind, zones.landing / f"bad_{kind}.csv")
        originals[path.name] = path.read_bytes()
    return originals


def test_ingest_quarantines_every_malformed_kind_and_versions_the_good(run_dag, zones, landed_first, webhook):
    dr = run_dag("credit_risk_ingest")
    assert dr.state == "success"
    alerts = [a for a in webhook if "quarantined" in a["title"]]
    assert len(alerts) == 1 and alerts[0]["title"].startswith("Loopline: 5 credit_risk batch(es) quarantined")
    assert all(f"bad_{kind}.csv" in alerts[0]["body"] for kind in datagen.MALFORMED_KINDS)

    assert contents(zones.landing) == []
    assert contents(zones.processing) == []
    quarantined = {p.name.rsplit("-", 2)[0]: p for p in zones.quarantine.iterdir()}
    assert sorted(quarantined) == sorted(f"bad_{k}" for k in datagen.MALFORMED_KINDS)
    for folder in quarantined.values():
        original = next(n for n in landed_first if (folder / n).exists())
        assert (folder / original).read_bytes() == landed_first[original]  # untouched, nothing lost
        report = json.loads((folder / "validation.json").read_text())
        assert report["success"] is False
        assert "FAILED" in (folder / "validation.txt").read_text()
    assert json.loads((quarantined["bad_empty_file"] / "validation.json").read_text())["read_error"]
    assert json.loads((quarantined["bad_unparseable"] / "validation.json").read_text())["read_error"]
    out_of_range = json.loads((quarantined["bad_out_of_range"] / "validation.json").read_text())
    assert any(f["expectation"] == "expect_column_values_to_be_between" for f in out_of_range["failures"])
    wrong_type = json.loads((quarantined["bad_wrong_dtype"] / "validation.json").read_text())
    assert any(f["expectation"] == "expect_column_values_to_be_in_type_list" for f in wrong_type["failures"])
    missing = json.loads((quarantined["bad_missing_column"] / "validation.json").read_text())
    assert any(f["expectation"] == "expect_table_columns_to_match_set" for f in missing["failures"])

    assert registry().versions("credit_risk") == ["v0001"]
    version = registry().resolve("credit_risk")
    assert version.batches == 4 and version.rows == 4 * ROWS
    assert len(contents(zones.archive)) == 4
    remote = get_settings().dvc_remote_url
    assert any(p.is_file() for p in Path(remote).rglob("*")), "nothing pushed to the DVC remote"


def test_ingest_emits_the_dataset_asset_event(airflow_db):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.uri == "dvc://loopline/credit_risk")
            .all()
        )
    assert len(events) == 1
    assert events[0].source_dag_id == "credit_risk_ingest"
    assert events[0].extra == {"version": "v0001", "versions": ["v0001"]}  # names the version it announces


def test_same_bytes_landing_again_are_not_ingested_twice(run_dag, zones, landed_first):
    zones.landing.mkdir(parents=True, exist_ok=True)
    (zones.landing / "w0_resent.csv").write_bytes(landed_first["w0.csv"])
    mark_complete(zones.landing / "w0_resent.csv")
    dr = run_dag("credit_risk_ingest")
    assert dr.state == "success"
    assert registry().versions("credit_risk") == ["v0001"]  # no new version
    assert contents(zones.landing) == [] and contents(zones.processing) == []
    assert len(contents(zones.archive)) == 5  # kept for audit, in exactly one place


def test_train_records_lineage_registers_champion_and_builds_bento(run_dag):
    dr = run_dag("credit_risk_train", conf={"reason": "e2e first model"})
    assert dr.state == "success"
    client = mlflow_client()
    assert aliases() == {"champion": "1"}
    mv = client.get_model_version("credit_risk", "1")
    run = client.get_run(mv.run_id)
    tags, metrics = run.data.tags, run.data.metrics
    version = registry().resolve("credit_risk", "v0001")
    assert tags["loopline.data_version"] == "v0001"
    assert tags["loopline.data_rev"] == version.rev
    assert tags["loopline.data_md5"] == version.md5
    assert tags["loopline.feature_version"] == load_spec("credit_risk", get_settings().models_dir).features.version
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert tags["loopline.code_commit"] in (head, "unknown")
    assert tags["loopline.reason"] == "e2e first model"
    assert tags["airflow.dag_run_id"] == dr.run_id
    assert tags["loopline.data_validation"] == "passed"
    assert tags["loopline.gate_decision"] == "champion"
    for key in ("auc", "ks", "brier", "precision_at_threshold", "recall_at_threshold"):
        assert f"holdout.{key}" in metrics
    assert metrics["holdout.auc"] > 0.7
    assert run.data.params["learning_rate"] == "0.05"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"validation", "gate", "lineage", "feature_importance.json"} <= artifacts

    from mlflow.models import get_model_info

    info = get_model_info("models:/credit_risk/1")
    assert info.signature is not None and info.saved_input_example_info is not None

    from loopline.core.serving_state import ServingState

    state = ServingState(get_settings().state_db_uri)
    assert state.route("credit_risk").champion_version == "1"
    (record,) = state.trail("credit_risk")
    assert record.action == "first_champion" and record.actor == f"dag_test (dag:credit_risk_train/{dr.run_id})"
    assert record.details["gate"]["decision"] == "champion"

    import bentoml

    bento_tag = mv.tags["loopline.bento_tag"]
    bento = bentoml.bentos.get(bento_tag)
    assert bento.info.labels["mlflow_model_version"] == "1"
    assert (Path(bento.path_of("src")) / "loopline" / "core" / "features.py").exists()
    assert (Path(bento.path_of("src")) / "features.py").exists()  # the model's own feature code, beside the service


def test_rerunning_the_train_dag_creates_no_duplicate_version(run_dag):
    dr = run_dag("credit_risk_train", conf={"reason": "re-run, same data"})
    assert dr.state == "success"
    client = mlflow_client()
    assert [str(v.version) for v in client.search_model_versions("name = 'credit_risk'")] == ["1"]


def test_bad_params_fail_at_once_with_a_sentence_before_anything_runs(run_dag, dagbag, webhook):
    # In one process (dag.test) a run's conf stays in the DAG's Params for the next run, so each
    # run here gives every field, and the values before this test are put back afterwards.
    params = dagbag.get_dag("credit_risk_train").params
    before = {k: params.get_param(k).value for k in params.keys()}
    client = mlflow_client()
    runs_before = len(client.search_runs([client.get_experiment_by_name("credit_risk").experiment_id]))
    base = {"data_version": "latest", "hyperparameters": {}, "reason": "typo", "drift_report": None}
    try:
        for bad, sentence in [
            ({"data_version": "last week"}, "Data version: 'last week' is not valid"),
            ({"hyperparameters": {"num_leaves": "many"}}, "num_leaves"),
            ({"hyperparameters": {"not_a_param": 1}}, "not_a_param"),
            ({"reason": None}, "Reason is required when you trigger a training run by hand"),  # dag.test: manual
        ]:
            dr = run_dag("credit_risk_train", conf={**base, **bad})
            start = next(ti for ti in dr.get_task_instances() if ti.task_id == "start_run")
            assert dr.state == "failed" and start.state == "failed" and start.try_number == 1, bad
            alerts = [a for a in webhook if a["title"] == "Loopline: credit_risk_train.start_run failed"]
            assert sentence in alerts[-1]["body"], alerts[-1]
    finally:
        for key, value in before.items():
            params.get_param(key).value = value
    assert len(client.search_runs([client.get_experiment_by_name("credit_risk").experiment_id])) == runs_before


def test_new_data_trains_a_new_version_judged_against_the_champion(run_dag, zones):
    for week in (4, 5):
        datagen.write_batch(datagen.make_batch(week, n_rows=ROWS, seed=1), zones.landing / f"w{week}.csv")
    assert run_dag("credit_risk_ingest").state == "success"
    assert registry().versions("credit_risk") == ["v0001", "v0002"]
    dr = run_dag("credit_risk_train", conf={"reason": "new data"})
    assert dr.state == "success"
    import mlflow

    client = mlflow_client()
    mv = client.get_model_version("credit_risk", "2")
    assert mv.tags["loopline.data_version"] == "v0002"
    decision = mv.tags["loopline.gate_decision"]
    roles = aliases()
    assert roles["champion"] == "1"
    run = client.get_run(mv.run_id)
    gate = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/gate/version-2.json")
    assert gate["decision"] == decision and gate["champion_version"] == "1"
    assert gate["champion"]["rows"] == gate["candidate"]["rows"]  # same holdout
    from loopline.core.serving_state import ServingState

    assert ServingState(get_settings().state_db_uri).route("credit_risk").champion_version == "1"  # rollout decides
    if decision == "challenger":
        assert roles["challenger"] == "2" and "loopline.bento_tag" in mv.tags
    else:
        assert decision == "rejected" and "challenger" not in roles


def test_reproduce_a_registered_version_from_its_lineage(airflow_db):
    from loopline.training.reproduce import reproduce

    result = reproduce("credit_risk", "1", get_settings())
    assert result.matches, result.table()
    assert "REPRODUCED" in result.table()


def test_the_built_bento_serves_scores_and_refuses_malformed_requests(airflow_db):
    """`bentoml serve <bento>` as a real process, over HTTP."""
    import time

    import requests

    from tests.e2e.conftest import BentoServer

    tag = mlflow_client().get_model_version("credit_risk", "1").tags["loopline.bento_tag"]
    server = BentoServer(tag)
    url = server.url
    try:
        # What serves is published from start: the traffic-weight gauge before any answer.
        before = requests.get(f"{url}/metrics", timeout=10).text
        gauge = [line for line in before.splitlines() if line.startswith("loopline_traffic_weight{")]
        assert any('model_version="1"' in line and 'arm="champion"' in line and line.endswith(" 1.0") for line in gauge)
        docs = requests.get(f"{url}/docs.json", timeout=10).json()["info"]
        assert docs["version"] == "champion v1" and "champion v1" in docs["title"]  # not the Bento's pinned version
        batch = datagen.make_batch(30, n_rows=3, seed=5).drop(columns=["applied_at", "defaulted"])
        applications = json.loads(batch.to_json(orient="records"))
        ok = requests.post(f"{url}/predict", json={"instances": applications}, timeout=30)
        assert ok.status_code == 200, ok.text
        predictions = ok.json()
        assert len(predictions) == 3
        for p in predictions:
            assert 0 <= p["score"] <= 1 and p["decision"] in ("approve", "decline")
            assert p["model_version"] == "1" and len(p["reasons"]) == 3

        bad = [
            {**applications[0], "age": "old"},
            {**applications[0], "region": "atlantis"},
            {**applications[0], "credit_utilization": 9.0},
            {k: v for k, v in applications[0].items() if k != "applicant_id"},
        ]
        for application in bad:
            response = requests.post(f"{url}/predict", json={"instances": [application]}, timeout=30)
            assert 400 <= response.status_code < 500, (application, response.text)
        broken = requests.post(
            f"{url}/predict", data="{not json", headers={"content-type": "application/json"}, timeout=30
        )
        assert 400 <= broken.status_code < 500
        too_many = requests.post(f"{url}/predict", json={"instances": applications * 400}, timeout=30)
        assert 400 <= too_many.status_code < 500

        # Traffic changes in the state store reach the running service without a restart.
        from loopline.core.serving_state import Route, ServingState

        state = ServingState(get_settings().state_db_uri)
        current = state.route("credit_risk")
        state.change(Route("credit_risk", "1", "2", 0.5, revision=current.revision), "pin", "e2e", "split test")
        many = datagen.make_batch(31, n_rows=400, seed=5).drop(columns=["applied_at", "defaulted"])
        payload = {"instances": json.loads(many.to_json(orient="records"))}

        def versions() -> list[str]:
            response = requests.post(f"{url}/predict", json=payload, timeout=30)
            assert response.status_code == 200, response.text
            return [p["model_version"] for p in response.json()]

        deadline = time.monotonic() + 30
        while set(versions()) != {"1", "2"} and time.monotonic() < deadline:
            time.sleep(0.5)
        split = versions()
        assert 0.4 < split.count("2") / len(split) < 0.6
        assert versions() == split  # sticky per applicant
        state.change(Route("credit_risk", "1", None, 0.0, revision=current.revision + 1), "rollback", "e2e", "done")
        deadline = time.monotonic() + 30
        while set(versions()) != {"1"} and time.monotonic() < deadline:
            time.sleep(0.5)
        assert set(versions()) == {"1"}

        metrics = requests.get(f"{url}/metrics", timeout=10).text
        assert 'loopline_predictions_total{arm="canary",decision=' in metrics and 'model_version="2"' in metrics
        assert "loopline_predict_latency_seconds_bucket" in metrics
        logged = [p for p in get_settings().prediction_log_dir.rglob("*.log") if "data" in p.parts]
        lines = [json.loads(line) for p in logged for line in p.read_text().splitlines() if line.strip()]
        assert lines and {"entity_hash", "model_version", "score", "reasons"} <= set(lines[-1])
        assert lines[-1]["client"] == "anonymous"  # the embedded default runs without API keys
        assert not any(a["applicant_id"] in json.dumps(lines) for a in applications)
        empty = requests.post(f"{url}/predict", json={"instances": [{"applicant_id": "nobody"}]}, timeout=30)
        assert empty.status_code == 422 and "instances[0].age: required key missing" in empty.json()["error"]

        # One decision traced from its request id: the route then, the lineage, and the answer reproduced.
        from loopline.ops.trace import trace

        during_split = next(p for p in lines if p["model_version"] == "2")
        found = trace("credit_risk", during_split["prediction_id"], get_settings())
        assert found.reproduced and found.arm == "canary" and found.route["canary_weight"] == 0.5
        assert found.lineage["data_version"].startswith("v0") and found.lineage["code_commit"] != "?"
        assert found.inputs["entity_hash"] == during_split["entity_hash"] and "applicant_id" not in found.inputs
        assert "REPRODUCED" in found.text() and "audit #" in found.text()
    finally:
        server.stop()


def test_with_api_keys_the_bento_answers_401_without_one_and_logs_the_client(airflow_db):
    import requests

    from loopline.core.api_keys import new_key
    from tests.e2e.conftest import BentoServer

    key, entry = new_key("e2e-client")
    tag = mlflow_client().get_model_version("credit_risk", "1").tags["loopline.bento_tag"]
    server = BentoServer(tag, LOOPLINE_API_KEYS=entry, LOOPLINE_REQUIRE_API_KEYS="true")
    try:
        batch = datagen.make_batch(32, n_rows=2, seed=6).drop(columns=["applied_at", "defaulted"])
        body = {"instances": json.loads(batch.to_json(orient="records"))}
        refused = requests.post(f"{server.url}/predict", json=body, timeout=30)
        assert refused.status_code == 401 and "API key is required" in refused.json()["error"]
        wrong = requests.post(f"{server.url}/predict", json=body, headers={"x-api-key": "guess"}, timeout=30)
        assert wrong.status_code == 401 and "guess" not in wrong.text
        ok = requests.post(f"{server.url}/predict", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30)
        assert ok.status_code == 200, ok.text
        ids = {p["request_id"] for p in ok.json()}
        logged = [p for p in get_settings().prediction_log_dir.rglob("*.log") if "data" in p.parts]
        lines = [json.loads(line) for p in logged for line in p.read_text().splitlines() if line.strip()]
        mine = [line for line in lines if line.get("prediction_id") in ids]
        assert len(mine) == 2 and {line["client"] for line in mine} == {"e2e-client"}
        assert key not in json.dumps(lines) and key not in server.log_path.read_text()
        assert requests.get(f"{server.url}/metrics", timeout=10).status_code == 200  # Prometheus needs no key
    finally:
        server.stop()


def test_dvc_repro_runs_the_same_recipe_as_the_train_dag(airflow_db, tmp_path):
    """`dvc repro` (dvc.yaml → loopline CLI) on v0001 gives exactly the metrics MLflow recorded for version 1."""
    import os
    import sys

    root = Path(__file__).resolve().parents[2]
    tree = tmp_path / "tree"
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(tree), "HEAD"], cwd=root, check=True)
    try:
        bin_dir = str(Path(sys.executable).parent)
        env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "PYTHONPATH": str(tree / "include"),
            "LOOPLINE_PROJECT_ROOT": str(tree),
        }
        done = subprocess.run([f"{bin_dir}/dvc", "repro"], cwd=tree, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        offline = json.loads((tree / "artifacts" / "credit_risk" / "metrics.json").read_text())
        version = json.loads((tree / "data" / "credit_risk.version.json").read_text())
        assert version["version"] == "v0001"
        run = mlflow_client().get_run(mlflow_client().get_model_version("credit_risk", "1").run_id)
        assert offline["auc"] == run.data.metrics["holdout.auc"]
        assert (tree / "dvc.lock").exists()
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=root, check=False)


def test_a_data_version_that_does_not_exist_fails_at_once_with_an_alert(run_dag, webhook):
    dr = run_dag("credit_risk_train", conf={"data_version": "v0009", "reason": "typo"})
    assert dr.state == "failed"
    start = next(ti for ti in dr.get_task_instances() if ti.task_id == "start_run")
    assert start.state == "failed" and start.try_number == 1  # permanent error: not retried
    alerts = [a for a in webhook if a["title"] == "Loopline: credit_risk_train.start_run failed"]
    assert alerts and "no version v0009" in alerts[-1]["body"]


def test_batch_scoring_writes_scores_with_version_reasons_and_lineage(run_dag, tmp_path):
    import pandas as pd

    applications = datagen.make_batch(40, n_rows=50, seed=8).drop(columns=["defaulted"])
    path = datagen.write_batch(applications, tmp_path / "to_score.csv")
    dr = run_dag("credit_risk_batch_score", conf={"input_path": str(path)})
    assert dr.state == "success"
    out = get_settings().scores_dir / "credit_risk" / dr.run_id.replace(":", "_").replace("+", "_")
    scores = pd.read_parquet(out / "scores.parquet")
    assert len(scores) == 50 and set(scores["model_version"]) == {"1"}
    assert scores["score"].between(0, 1).all() and all(len(r) == 3 for r in scores["reasons"])
    assert list(scores["applicant_id"]) == list(applications["applicant_id"])
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["model_version"] == "1" and lineage["loopline.data_version"] == "v0001"

    bad = datagen.write_batch(applications.drop(columns=["age"]), tmp_path / "no_age.csv")
    failed = run_dag("credit_risk_batch_score", conf={"input_path": str(bad)})
    assert failed.state == "failed"


def test_manual_rollout_actions_change_traffic_aliases_and_the_audit_trail(run_dag):
    from loopline.core.serving_state import ServingState

    state = ServingState(get_settings().state_db_uri)

    def act(**conf):
        return run_dag("credit_risk_rollout_control", conf={"reason": "e2e manual action", **conf})

    assert act(action="pin", version="2", weight=0.2).state == "success"
    route = state.route("credit_risk")
    assert (route.champion_version, route.canary_version, route.canary_weight) == ("1", "2", 0.2)
    assert act(action="abort").state == "success"
    assert state.route("credit_risk").canary_version is None

    assert act(action="promote", version="2").state == "success"
    assert state.route("credit_risk").champion_version == "2"
    roles = aliases()
    assert roles["champion"] == "2" and roles["previous"] == "1" and "challenger" not in roles

    dr = act(action="rollback", version="previous")
    assert dr.state == "success"
    assert state.route("credit_risk").champion_version == "1"
    assert aliases()["champion"] == "1" and aliases()["previous"] == "2"

    before = state.route("credit_risk")
    assert act(action="rollback", version="99").state == "failed"
    assert state.route("credit_risk") == before  # nothing changed

    trail = state.trail("credit_risk", limit=4)
    assert [r.action for r in trail] == ["rollback", "promote", "abort", "pin"]
    assert trail[0].actor == f"dag_test (dag:credit_risk_rollout_control/{dr.run_id})"
    assert trail[0].reason == "e2e manual action" and trail[0].details["manual"] is True
