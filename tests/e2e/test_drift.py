"""Watch, end to end: the drift DAG on live traffic logged by a real `bentoml serve`, closing the loop.

Builds on test_spine and test_rollout (v1 champion, serving). Stable traffic → no
verdict of drift, nothing triggered. Covariate-shifted traffic → drift confirmed, the
train DAG is triggered with the report, an alert goes out; an immediate re-check is
held back by the cooldown. The retrain (on newly ingested shifted data) records the
drift report in its lineage, passes the gate and is rolled out to champion. Delayed
outcomes come in through the drift DAG: a bad file is quarantined, good ones give live
AUC, and concept drift in them is caught.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from datetime import UTC, datetime

import pytest
import requests

from loopline.core.settings import get_settings
from tests.e2e.conftest import BentoServer
from tests.generators import credit_risk as datagen

pytestmark = pytest.mark.slow
MODEL = "credit_risk"
SHIFT = datagen.DriftKnobs(covariate_shift=0.8)
CONCEPT = datagen.DriftKnobs(concept_shift=1.0)


def mlflow_client():
    from loopline.core import tracking

    return tracking.client_for(get_settings())


def monitoring():
    from loopline.monitoring.monitoring_state import MonitoringState

    return MonitoringState(get_settings().state_db_uri)


@pytest.fixture(scope="module")
def service(airflow_db):
    from loopline.core import tracking

    champion = tracking.alias_version(mlflow_client(), MODEL, "champion")
    tag = mlflow_client().get_model_version(MODEL, champion).tags["loopline.bento_tag"]
    server = BentoServer(tag, LOOPLINE_ROUTE_POLL_SECONDS="0.5")
    os.environ["LOOPLINE_SERVICE_URL"] = server.url
    get_settings.cache_clear()
    yield server
    server.stop()
    os.environ.pop("LOOPLINE_SERVICE_URL")
    get_settings.cache_clear()


def send(server: BentoServer, frame) -> list[dict]:
    return server.predict(json.loads(frame.drop(columns=["applied_at", "defaulted"]).to_json(orient="records")))


def serving(server: BentoServer, version: str, timeout: float = 60) -> None:
    """Wait until the service has adopted a route whose champion is ``version`` (it polls the store)."""
    deadline = time.monotonic() + timeout
    while True:
        route = requests.post(f"{server.url}/ready", json={}, timeout=10).json()["route"]
        if str(route["champion_version"]) == str(version) and not route["canary_version"]:
            return
        assert time.monotonic() < deadline, f"the service still serves {route} after {timeout:.0f} s"
        time.sleep(0.5)


def drift_run(run_dag, since: datetime):
    """The drift DAG over the traffic since ``since`` (the test's own; earlier tests' traffic stays out)."""
    return run_dag("credit_risk_drift", conf={"window_start": since.isoformat()}, logical_date=datetime.now(UTC))


def task_states(dr) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dr.get_task_instances()}


def queued_train_runs() -> list:
    from airflow.models import DagRun

    return [r for r in DagRun.find(dag_id="credit_risk_train") if (r.conf or {}).get("drift_report")]


def test_stable_traffic_is_not_drift(run_dag, service):
    since = datetime.now(UTC)
    send(service, datagen.make_batch(6, n_rows=1500, seed=21))
    dr = drift_run(run_dag, since)
    assert dr.state == "success"
    states = task_states(dr)
    assert states["no_retrain"] == "success" and states["trigger_retrain"] == "skipped"
    latest = monitoring().latest(MODEL, 1)[0]
    assert latest.verdict == "stable" and not latest.triggered and not latest.alerted and latest.n_rows == 1500
    assert queued_train_runs() == []


def test_refused_requests_show_in_the_check_its_report_and_an_alert_of_their_own(run_dag, service, webhook):
    """A fifth of the traffic refused (a region the spec does not list): the check says so, and alerts once."""
    import mlflow

    alerts_before = len(webhook)
    since = datetime.now(UTC)
    frame = datagen.make_batch(6, n_rows=1000, seed=23).drop(columns=["applied_at", "defaulted"])
    rows = json.loads(frame.to_json(orient="records"))
    service.predict(rows[200:])
    for start in range(0, 200, 10):
        body = {"applications": [{**row, "region": "central"} for row in rows[start : start + 10]]}
        assert requests.post(f"{service.url}/predict", json=body, timeout=30).status_code == 422
    dr = drift_run(run_dag, since)
    assert dr.state == "success"
    latest = monitoring().latest(MODEL, 1)[0]
    refused = latest.impact["refusals"]
    words = "20% of rows refused (200 of 1,000, in 20 requests): region 'central' not allowed (20% of rows)"
    assert refused["headline"] == words and refused["alerted"] and "refused" in refused["over"]
    assert latest.n_rows == 800 and latest.verdict != "insufficient"
    alerts = [a for a in webhook[alerts_before:] if "refused" in json.dumps(a)]
    assert len(alerts) == 1 and "region 'central' not allowed" in json.dumps(alerts[0]), webhook[alerts_before:]
    html = mlflow.artifacts.load_text(latest.report_uri)
    assert "Requests the model never scored as sent" in html and "central" in html
    drift_run(run_dag, since)  # the same refusals checked again: no second alert within the reminder time
    assert monitoring().latest(MODEL, 1)[0].impact["refusals"]["alerted"] is False
    assert len([a for a in webhook[alerts_before:] if "refused" in json.dumps(a)]) == 1


def test_shifted_traffic_triggers_one_retrain_with_its_report_and_an_alert(run_dag, service, webhook):
    alerts_before = len(webhook)
    since = datetime.now(UTC)
    shifted = datagen.make_batch(7, n_rows=1500, seed=22, drift=SHIFT)
    send(service, shifted)
    dr = drift_run(run_dag, since)
    assert dr.state == "success"
    assert task_states(dr)["trigger_retrain"] == "success"
    latest = monitoring().latest(MODEL, 1)[0]
    # the answers moved (more declines), quality estimated to hold: the demo spec retrains on output_shift
    assert latest.verdict == "output_shift" and latest.confirmed and latest.triggered and latest.alerted
    drifted = [f["name"] for f in latest.features if f["drifted"]]
    assert {"annual_income", "debt_to_income"} & set(drifted), drifted
    [queued] = queued_train_runs()
    assert queued.conf["drift_report"] == latest.report_uri and "drift" in queued.conf["reason"]
    risk_alerts = [a for a in webhook[alerts_before:] if "output_shift" in json.dumps(a)]
    assert len(risk_alerts) == 1, webhook[alerts_before:]
    assert any(name in json.dumps(risk_alerts[0]) for name in drifted), "the alert names the inputs that moved"
    # The report is in MLflow, against the champion's version.
    import mlflow

    html = mlflow.artifacts.load_text(latest.report_uri)
    assert "<svg" in html and "annual_income" in html

    # Checked again at once: still drift, but the cooldown holds the trigger back.
    dr = drift_run(run_dag, since)
    again = monitoring().latest(MODEL, 1)[0]
    assert again.confirmed and not again.triggered and "cooldown" in again.trigger_reason
    assert not again.alerted, "the same episode alerts once (then a reminder a day), not at every check"
    assert len([a for a in webhook[alerts_before:] if "output_shift" in json.dumps(a)]) == 1
    assert task_states(dr)["trigger_retrain"] == "skipped" and len(queued_train_runs()) == 1


def test_the_triggered_retrain_records_its_drift_report_and_rolls_out(run_dag, service, zones):
    from loopline.core import tracking
    from loopline.core.serving_state import ServingState

    [queued] = queued_train_runs()
    for week in (4, 5):  # the shifted world reaches the landing zone as new weekly batches
        batch = datagen.make_batch(week, n_rows=800, seed=23, drift=SHIFT)
        datagen.write_batch(batch, zones.landing / f"shifted-w{week}.csv")
    assert run_dag("credit_risk_ingest").state == "success"

    # The scheduler would run the queued run; dag.test runs the same conf.
    trained = run_dag("credit_risk_train", conf=queued.conf)
    assert trained.state == "success"
    client = mlflow_client()
    new_version = max(int(v.version) for v in client.search_model_versions(f"name='{MODEL}'"))
    mv = client.get_model_version(MODEL, str(new_version))
    assert mv.tags["loopline.drift_report"] == queued.conf["drift_report"]  # lineage → the drift report
    assert mv.tags["loopline.gate_decision"] == "challenger", mv.tags
    assert tracking.alias_version(client, MODEL, "challenger") == str(new_version)

    stop = threading.Event()

    def traffic():  # fresh applicants in every call (a seed per call, not per second: no repeats)
        for seed in itertools.count(1000):
            if stop.is_set():
                return
            send(service, datagen.make_batch(8, n_rows=200, seed=seed, drift=SHIFT))

    loader = threading.Thread(target=traffic, daemon=True)
    loader.start()
    try:
        rolled = run_dag("credit_risk_rollout", conf={"version": "challenger", "mode": "spec"})
    finally:
        stop.set()
        loader.join(timeout=60)
    assert rolled.state == "success"
    assert ServingState(get_settings().state_db_uri).route(MODEL).champion_version == str(new_version)
    assert tracking.alias_version(client, MODEL, "champion") == str(new_version)


def test_outcomes_give_live_auc_catch_concept_drift_and_bad_files_are_quarantined(run_dag, service):
    from loopline.core import tracking
    from loopline.core.spec import load_spec
    from loopline.monitoring import drift_flow
    from loopline.monitoring.feedback import outcome_zones

    settings = get_settings()
    spec = load_spec(MODEL, settings.models_dir)
    zones = outcome_zones(spec, settings)
    zones.landing.mkdir(parents=True, exist_ok=True)
    # Applicants served now, whose repayment behaviour follows a changed relation (concept drift).
    since = datetime.now(UTC)
    applicants = datagen.make_batch(9, n_rows=1200, seed=24, drift=CONCEPT)
    serving(service, tracking.alias_version(mlflow_client(), MODEL, "champion"))  # the last test's promotion
    send(service, applicants)
    applicants[["applicant_id", "defaulted"]].to_csv(zones.landing / "outcomes-w9.csv", index=False)
    (zones.landing / "outcomes-broken.csv").write_text("applicant_id,defaulted\nA1,yes\nA2,1\n")

    dr = drift_run(run_dag, since)
    assert dr.state == "success"
    from loopline.monitoring import outcomes

    assert len(outcomes.read(settings, MODEL)) == 1200
    assert (zones.quarantine / "outcomes-broken.csv").exists() and not list(zones.landing.iterdir())
    assert "must be 0 or 1" in (zones.quarantine / "outcomes-broken.csv.report.txt").read_text()
    [feedback] = (settings.landing_dir / spec.dataset.name).glob("feedback-*.csv")
    assert len(feedback.read_text().splitlines()) == 1201  # labelled production data, waiting for ingest

    champion = tracking.alias_version(mlflow_client(), MODEL, "champion")
    labelled = drift_flow.labelled_live(MODEL, champion, settings)
    assert len(labelled) == 1200
    latest = monitoring().latest(MODEL, 1)[0]
    assert latest.verdict == "concept_drift" and latest.confirmed
    assert not latest.triggered  # a retrain ran within the cooldown: the storm guard holds
    # This window's labels are in: its realised AUC beside the label-free estimate, and the estimate's error,
    # the estimate made with the calibration the champion recorded at training time.
    impact = latest.impact
    assert impact["window_realised_n"] == 1200
    assert impact["estimate_error"] == pytest.approx(impact["estimated"] - impact["window_realised"])
    run = mlflow_client().get_run(mlflow_client().get_model_version(MODEL, champion).run_id)
    assert "holdout_ece" in run.data.metrics
    # what training recorded, then how the estimate reads the scores: raw, or through the map fitted at check time
    recorded = f"{run.data.tags['loopline.calibration']}, recorded at training"
    assert impact["calibration"] == recorded or impact["calibration"].startswith(f"{recorded}; probabilities from ")


def test_an_input_that_stops_arriving_is_costed_by_re_scoring_the_champions_unseen_rows(run_dag, service):
    """Half the applications arrive without their most important input: the DAG measures what that costs."""
    from loopline.core import tracking

    since = datetime.now(UTC)
    serving(service, tracking.alias_version(mlflow_client(), MODEL, "champion"))
    applicants = datagen.make_batch(10, n_rows=1000, seed=25)
    applicants.loc[applicants.index % 2 == 0, "interest_rate"] = None
    send(service, applicants)
    assert drift_run(run_dag, since).state == "success"
    latest = monitoring().latest(MODEL, 1)[0]
    missing = latest.impact["missing"]
    assert missing["shares"]["interest_rate"][1] == pytest.approx(0.5, abs=0.01)
    assert missing["reference"] - missing["quality"] == pytest.approx(missing["drop"])  # AUC: lower is worse
    assert latest.impact["mix_moved"]  # most declines vanish with the rate: the model is at risk ...
    assert latest.verdict == "concept_drift"  # ... though the last test's labels, more serious, still speak first
    import mlflow

    assert "interest_rate 50% missing against" in mlflow.artifacts.load_text(latest.report_uri)  # the report says so
