"""Shadow mode, end to end: a rollout's shadow phase under live HTTP traffic against a real `bentoml serve`.

In a line of its own (IsolatedLine: own state, Airflow DB, models folder): an onboarded
binary table is ingested and trained twice (v1 champion, v2 challenger); v1's Bento is
served while a client keeps sending requests; the rollout DAG (`airflow dags test`) runs
shadow → 50% → promote. During the shadow phase every answer must come from the
champion, while the prediction log fills with the shadow's copy of the same requests
(arm "shadow", the answers' prediction ids); the shadow's verdict (disagreement, score
shift) is recorded in the rollout before the first canary step.
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import yaml

from loopline.core.serving_state import ServingState
from loopline.serving.bento_server import BentoServer
from loopline.serving.prediction_log import read_window
from tests.e2e.isolated_line import IsolatedLine
from tests.unit.test_onboarding import churn_table

pytestmark = pytest.mark.slow
NAME = "churn"
SHADOW_ROLLOUT = {
    "mode": "canary",
    "steps": [0.5, 1.0],
    "shadow_seconds": 4,
    "bake_seconds": 3,
    "max_step_seconds": 180,
    "poll_seconds": 1,
    # A busy 2-core host: the shadow scores on a background thread beside the answers; wide latency room.
    # v2 is trained on a few hundred more rows of a noisy table: it may decide many borderline rows otherwise.
    "gates": {"min_samples": 100, "max_p95_latency_ratio": 10, "latency_slack_ms": 200, "max_disagreement": 0.5},
}


def test_a_shadow_phase_scores_a_copy_of_live_traffic_and_answers_nothing(tmp_path):
    line = IsolatedLine(tmp_path, LOOPLINE_ROUTE_POLL_SECONDS="0.5")
    table = churn_table(n=1800, seed=5)
    sample = tmp_path / "sample.csv"
    table.to_csv(sample, index=False)  # the team's export: bounds and levels cover what will land
    line.loopline("onboard", NAME, "--sample", str(sample), "--target", "churned",
                  "--timestamp", "observed_on", "--entity-id", "customer_ref")  # fmt: skip
    path = line.models / NAME / "spec.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["rollout"] = SHADOW_ROLLOUT
    spec["quality_gate"] = {k: (v + 0.5 if k.endswith("_tolerance") else v) for k, v in spec["quality_gate"].items()}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    line.start()
    landing = line.home / "landing" / NAME
    for n, part in enumerate((table.iloc[:1100], table.iloc[1100:1500])):
        landing.mkdir(parents=True, exist_ok=True)
        part.to_csv(landing / f"export-{n}.csv", index=False)
        line.dag_test(f"{NAME}_ingest")
        line.dag_test(f"{NAME}_train", {"reason": f"shadow e2e, batch {n}"})
    status = line.loopline("status", "-m", NAME).stdout
    assert "challenger" in status, status
    tag = next(w for w in status.split() if w.startswith(f"{NAME}:v1-"))

    rows = json.loads(table.iloc[1500:].drop(columns=["observed_on", "churned", "notes"]).to_json(orient="records"))
    server = BentoServer(tag, **line.service_env())
    answers: list[tuple[float, str]] = []  # (time answered, model_version) per application
    stop, errors = threading.Event(), []

    def traffic() -> None:
        while not stop.is_set():
            try:
                for a in server.predict(rows, chunk=50):
                    answers.append((time.time(), a["model_version"]))
            except Exception as err:  # noqa: BLE001 - reported by the test below
                errors.append(err)
                return

    try:
        line.env["LOOPLINE_SERVICE_URL"] = server.url  # where the rollout DAG reads /metrics
        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        try:
            rollout = line.dag_test_in_background(f"{NAME}_rollout", {"version": "challenger", "mode": "spec"})
            assert rollout.wait(timeout=600) == 0, (tmp_path / f"{NAME}_rollout.log").read_text()[-4000:]
        finally:
            stop.set()
            sender.join(timeout=120)
        assert not errors, f"live traffic failed: {errors}"
    finally:
        server.stop()

    state = ServingState(f"sqlite:///{line.home / 'state.db'}")
    record = state.rollouts(NAME, limit=1)[0]
    assert record.status == "succeeded", record.outcome
    shadow_verdict, *steps = record.gate_results
    assert shadow_verdict["phase"] == "shadow" and shadow_verdict["status"] == "pass", shadow_verdict
    assert {g["name"] for g in shadow_verdict["gates"]} == {"error_rate", "disagreement", "p95_latency", "score_psi"}
    assert [s["step"] for s in steps] == [0.5]

    trail = list(reversed(state.trail(NAME, limit=20)))
    began = next(r for r in trail if r.action == "shadow_start" and r.details.get("rollout") == record.id)
    ended = next(r for r in trail if r.action == "canary_step" and r.details.get("rollout") == record.id)
    assert began.after["shadow_version"] == "2" and ended.after["shadow_version"] is None
    # The service adopts a route change within ~1 s (0.5 s polls): judge the answers well inside the phase.
    during = [v for t, v in answers if began.at.timestamp() + 1.5 < t < ended.at.timestamp()]
    assert len(during) >= 100 and set(during) == {"1"}, "the champion answers every request during shadow"

    log = read_window(line.home / "predictions", NAME, since=began.at, until=ended.at, shadow=True).rows
    shadow, champion = log[log["arm"] == "shadow"], log[log["arm"] == "champion"]
    assert len(shadow) >= 100 and set(shadow["model_version"]) == {"2"} and set(champion["model_version"]) == {"1"}
    assert set(shadow["prediction_id"]) <= set(champion["prediction_id"])  # a copy of requests that were answered
    paired = shadow.merge(champion, on="prediction_id", suffixes=("_shadow", "_champion"))
    assert (paired["entity_hash_shadow"] == paired["entity_hash_champion"]).all()
    answered = read_window(line.home / "predictions", NAME, since=began.at, until=ended.at).rows
    assert set(answered["arm"]) == {"champion"}  # drift, feedback and trace read answers only

    rollouts = line.loopline("rollouts", "-m", NAME).stdout
    assert "SUCCEEDED" in rollouts and "disagreement=pass" in rollouts, rollouts
