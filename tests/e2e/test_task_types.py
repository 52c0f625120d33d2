"""Regression and multiclass, end to end through the real DAGs, from a table nobody here wrote.

For each task type, in a line of its own: `loopline onboard` writes the model folder from
a sample; two batches land and are ingested (GE suite, DVC); the train DAG makes v1 (the
first champion) and, on more data, v2 (gated against v1 on the same holdout: the
challenger); the champion's Bento is served by `bentoml serve` and answers in the task's
shape; the rollout DAG takes v2 through its canary steps under live traffic (the gates
judge the task's output shift); and the drift DAG takes in delayed outcomes and checks the
window, judging live quality with the task's own metric. The only edit to the written spec
is the one a person makes for a quick trial: rollout timings in seconds.
"""

from __future__ import annotations

import json
import threading

import httpx
import pandas as pd
import pytest
import yaml

from loopline.serving.bento_server import BentoServer
from tests.e2e.isolated_line import IsolatedLine
from tests.unit.test_onboarding import rent_table, ticket_table

pytestmark = pytest.mark.slow

QUICK_ROLLOUT = {
    "mode": "canary",
    "steps": [0.5, 1.0],
    "shadow_seconds": 0,  # the canary gates judge the task's output shift here; test_shadow.py runs a shadow phase
    "bake_seconds": 3,
    "max_step_seconds": 180,
    "poll_seconds": 1,
    "gates": {"min_samples": 100, "min_labelled": 100, "max_p95_latency_ratio": 10, "latency_slack_ms": 200},
}
CASES = {
    "regression": dict(
        make=rent_table, name="rents", target="monthly_rent", timestamp="listed_at", entity="listing", number="rooms"
    ),
    "multiclass": dict(
        make=ticket_table, name="tickets", target="priority", timestamp="opened", entity="ticket", number="seats"
    ),
}


def _quick_trial(line: IsolatedLine, name: str) -> None:
    """Rollout in seconds, and gate tolerances wide enough that v2 on more data is the challenger."""
    path = line.models / name / "spec.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["rollout"] = QUICK_ROLLOUT
    spec["monitoring"] = {**spec.get("monitoring", {}), "min_window": 300, "min_labelled": 100}
    spec["quality_gate"] = {k: (v + 0.5 if k.endswith("_tolerance") else v) for k, v in spec["quality_gate"].items()}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def _answers_have_the_task_shape(task: str, answers: list[dict], classes: list[str]) -> None:
    for a in answers:
        assert a["model_version"] and a["reasons"] and len(a["reasons"]) <= 3
        if task == "regression":
            assert isinstance(a["prediction"], float) and "decision" not in a and "score" not in a
        else:
            assert a["predicted_class"] in classes and set(a["probabilities"]) == set(classes)
            assert abs(sum(a["probabilities"].values()) - 1) < 1e-6
            assert a["probabilities"][a["predicted_class"]] == max(a["probabilities"].values())


def _why_the_rollout_failed(dag_log, server: BentoServer, errors: list) -> str:
    """The DAG's end, the live traffic's errors and what the service said about its route."""
    service_log = server.log_path.read_text(errors="replace").splitlines()
    said = [line for line in service_log if "route" in line or "ERROR" in line or "Error" in line][-40:]
    ready = httpx.post(f"{server.url}/ready", json={}, timeout=10).text
    return "\n".join(
        [dag_log.read_text()[-3000:], f"traffic errors: {errors[:3]}", f"/ready: {ready}", "service log:", *said]
    )


@pytest.mark.parametrize("task", list(CASES))
def test_a_model_of_each_task_type_runs_the_whole_line(tmp_path, task):
    case = CASES[task]
    name, target, entity = case["name"], case["target"], case["entity"]
    table = case["make"](n=1800, seed=5)
    line = IsolatedLine(tmp_path, LOOPLINE_ROUTE_POLL_SECONDS="0.5")
    sample = tmp_path / "sample.csv"
    table.to_csv(sample, index=False)  # the team's export: bounds and levels cover what will land
    line.loopline("onboard", name, "--sample", str(sample), "--target", target,
                  "--timestamp", case["timestamp"], "--entity-id", entity)  # fmt: skip
    _quick_trial(line, name)
    line.start()
    landing = line.home / "landing" / name

    def land_and_train(part: pd.DataFrame, n: int) -> None:
        landing.mkdir(parents=True, exist_ok=True)
        part.to_csv(landing / f"export-{n}.csv", index=False)
        line.dag_test(f"{name}_ingest")
        line.dag_test(f"{name}_train", {"reason": f"task-type e2e, batch {n}"})

    land_and_train(table.iloc[:1100], 0)
    status = line.loopline("status", "-m", name).stdout
    assert "champion" in status and f"bento {name}:v1-" in status, status
    land_and_train(table.iloc[1100:1500], 1)
    status = line.loopline("status", "-m", name).stdout
    assert "challenger" in status, status
    tag = next(w for w in status.split() if w.startswith(f"{name}:v1-"))

    live = table.iloc[1500:]
    rows = json.loads(live.drop(columns=[case["timestamp"], target]).to_json(orient="records"))  # NaN -> null
    server = BentoServer(tag, **line.service_env())
    try:
        line.env["LOOPLINE_SERVICE_URL"] = server.url  # where the rollout DAG reads /metrics
        first = server.predict(rows[:5])
        classes = sorted(table[target].unique().tolist()) if task == "multiclass" else []
        _answers_have_the_task_shape(task, first, classes)
        assert {a["model_version"] for a in first} == {"1"}
        bad = httpx.post(f"{server.url}/predict", json={"instances": [{**rows[0], case["number"]: "three"}]})
        assert bad.status_code == 422 and case["number"] in bad.text, bad.text

        stop, errors = threading.Event(), []

        def traffic() -> None:
            while not stop.is_set():
                try:
                    server.predict(rows, chunk=100)
                except Exception as err:  # noqa: BLE001 - reported by the test below
                    errors.append(err)
                    return

        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        try:
            rollout = line.dag_test_in_background(f"{name}_rollout", {"version": "challenger", "mode": "spec"})
            if rollout.wait(timeout=600) != 0:
                pytest.fail(_why_the_rollout_failed(tmp_path / f"{name}_rollout.log", server, errors))
        finally:
            stop.set()
            sender.join(timeout=120)
        assert not errors, f"live traffic failed: {errors}"
        rollouts = line.loopline("rollouts", "-m", name).stdout
        assert "SUCCEEDED" in rollouts and "score_psi=pass" in rollouts, rollouts
        after = server.predict(rows[:50])
        assert {a["model_version"] for a in after} == {"2"}, "the promoted challenger answers every request"
        _answers_have_the_task_shape(task, after, classes)

        # Delayed outcomes of what was scored arrive, then the drift DAG checks the window.
        server.predict(rows)
        outcomes = line.home / "landing" / f"{name}_outcomes"
        outcomes.mkdir(parents=True, exist_ok=True)
        live[[entity, target]].to_csv(outcomes / "labels.csv", index=False)
        line.dag_test(f"{name}_drift")
    finally:
        server.stop()
    drift = line.loopline("drift-status", "-m", name).stdout
    assert "v2" in drift and "insufficient" not in drift.splitlines()[0], drift
    metric = "accuracy" if task == "multiclass" else "SMAPE"
    report = next((line.home / "monitoring" / "reports" / name).glob("*/drift_report.json")).read_text()
    assert f"live {metric}" in report, report[:2000]
