"""Ship, end to end: the rollout DAG (dag.test) against a real `bentoml serve` under continuous load.

Builds on test_spine (versions 1 and 2 registered, v1 champion). A load generator
keeps sending applications (and, now and then, malformed requests) the whole time;
the rollout DAG judges the canary from the service's /metrics and prediction log.
Bad challengers are real LightGBM models registered in MLflow: one trained on a
different feature layout (every call raises), one far too large (slow), one trained
on mislabelled data (its scores shift).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pytest
import requests

from loopline.core.serving_state import ServingState
from loopline.core.settings import get_settings
from tests.e2e.conftest import BentoServer
from tests.generators import credit_risk as datagen

pytestmark = pytest.mark.slow
MODEL = "credit_risk"


def mlflow_client():
    from loopline.core import tracking

    return tracking.client_for(get_settings())


def aliases() -> dict[str, str]:
    return {k: str(v) for k, v in mlflow_client().get_registered_model(MODEL).aliases.items()}


def state() -> ServingState:
    return ServingState(get_settings().state_db_uri)


def register_variant(kind: str) -> str:
    """Train and register a deliberately bad model the way the train DAG logs one; returns its version."""
    import lightgbm as lgb
    import mlflow

    from loopline.core.features import build_features
    from loopline.core.spec import load_spec
    from loopline.training import trainer as training
    from loopline.training.train_flow import load_dataset, registry_for

    settings = get_settings()
    spec = load_spec(MODEL, settings.models_dir)
    frame = training.labelled(load_dataset(registry_for(settings).resolve(MODEL, "v0001"), settings), spec)
    features, labels = build_features(frame, spec), frame[spec.dataset.target]
    base = {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": 1}
    if kind == "erroring":  # trained without a feature: LightGBM refuses every request's feature matrix
        booster = lgb.train(base, lgb.Dataset(features.drop(columns=["region"]), labels), 50)
    elif kind == "slow":  # thousands of deep trees: reason codes (pred_contrib) take far longer
        params = {**base, "num_leaves": 63, "min_child_samples": 5, "learning_rate": 0.01}
        booster = lgb.train(params, lgb.Dataset(features, labels), 1500)
    else:  # "shifted": a label-join bug marked 30% of repaid loans as defaults; every score moves up
        flipped = labels.where(np.random.default_rng(0).random(len(labels)) >= 0.3, 1)
        booster = lgb.train(base, lgb.Dataset(features, flipped), 100)
    from loopline.core import tracking

    # An explicit experiment, not mlflow.set_experiment(): that would change this process's active
    # experiment, which the in-process train DAG runs (dag.test) would then inherit.
    experiment = tracking.experiment_id(mlflow_client(), f"{MODEL}-e2e-variants", settings)
    with mlflow.start_run(experiment_id=experiment, run_name=f"bad-{kind}"):
        info = mlflow.lightgbm.log_model(booster, name="model", registered_model_name=MODEL)
    return str(info.registered_model_version)


@dataclass
class Load:
    """Continuous traffic: calls of 20 fresh applicants, and a malformed request every 15th call."""

    url: str
    sent: int = 0
    failed: list[str] = field(default_factory=list)
    refused: int = 0
    answers: list[tuple[float, str]] = field(default_factory=list)  # (time, model_version) per application
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, worker: int) -> None:
        session = requests.Session()
        rows = datagen.make_batch(60, n_rows=4000, seed=worker).drop(columns=["applied_at", "defaulted"])
        pool = json.loads(rows.to_json(orient="records"))
        malformed = [{"age": "old"}, {"region": "atlantis"}, {"credit_utilization": 9.0}, {"applicant_id": ""}]
        for call in itertools.count():
            if self.stop.is_set():
                return
            start = (call * 20) % (len(pool) - 20)
            batch = [{**a, "applicant_id": f"w{worker}-{call}-{i}"} for i, a in enumerate(pool[start : start + 20])]
            if call % 15 == 14:
                bad = {**batch[0], **malformed[call % len(malformed)]}
                response = session.post(f"{self.url}/predict", json={"instances": [bad]}, timeout=30)
                if 400 <= response.status_code < 500:
                    self.refused += 1
                else:
                    self.failed.append(f"malformed got {response.status_code}")
                continue
            try:
                response = session.post(f"{self.url}/predict", json={"instances": batch}, timeout=30)
            except requests.RequestException as err:
                self.failed.append(repr(err))
                continue
            self.sent += 1
            if response.status_code != 200:
                self.failed.append(f"{response.status_code}: {response.text[:200]}")
                continue
            now = time.time()
            self.answers.extend((now, p["model_version"]) for p in response.json())


@pytest.fixture(scope="module")
def service(airflow_db):
    """The champion's Bento, serving whatever the state store says, under load from two clients."""
    import os

    tag = mlflow_client().get_model_version(MODEL, "1").tags["loopline.bento_tag"]
    server = BentoServer(tag, LOOPLINE_ROUTE_POLL_SECONDS="0.5")
    os.environ["LOOPLINE_SERVICE_URL"] = server.url
    get_settings.cache_clear()
    load = Load(server.url)
    threads = [threading.Thread(target=load.run, args=(i,), daemon=True) for i in range(2)]
    for thread in threads:
        thread.start()
    yield server, load
    load.stop.set()
    for thread in threads:
        thread.join(timeout=30)
    server.stop()
    os.environ.pop("LOOPLINE_SERVICE_URL")
    get_settings.cache_clear()


def rollout(run_dag, **conf):
    return run_dag("credit_risk_rollout", conf={"version": "challenger", "mode": "spec", **conf})


def latest_rollout():
    return state().rollouts(MODEL, limit=1)[0]


def test_nothing_to_roll_out_skips_the_run(run_dag, service):
    assert "challenger" not in aliases()
    dr = rollout(run_dag)
    assert dr.state == "success"
    assert {ti.task_id: ti.state for ti in dr.get_task_instances()}["prepare"] == "skipped"


def test_a_good_challenger_goes_through_every_step_under_load(run_dag, service):
    server, load = service
    mlflow_client().set_registered_model_alias(MODEL, "challenger", "2")  # v2 passed the gate in test_spine
    before = route_before = state().route(MODEL)
    assert (route_before.champion_version, route_before.canary_version) == ("1", None)

    dr = rollout(run_dag)
    assert dr.state == "success", latest_rollout().outcome

    record = latest_rollout()
    assert record.status == "succeeded" and record.candidate_version == "2"
    assert [r["step"] for r in record.gate_results] == FAST_ROLLOUT_STEPS
    assert all(r["status"] == "pass" for r in record.gate_results)
    route = state().route(MODEL)
    assert (route.champion_version, route.canary_version) == ("2", None)
    assert aliases()["champion"] == "2" and aliases()["previous"] == "1" and "challenger" not in aliases()

    # The observed split of each step is within binomial bounds of its weight.
    trail = list(reversed(state().trail(MODEL, limit=20)))
    steps = [r for r in trail if r.action == "canary_step" and r.details.get("rollout") == record.id]
    promoted = next(r for r in trail if r.action == "promote" and r.details.get("rollout") == record.id)
    bounds = [*[(s.at.timestamp(), s.after["canary_weight"]) for s in steps], (promoted.at.timestamp(), None)]
    for (start, weight), (end, _) in itertools.pairwise(bounds):
        seen = [v for t, v in load.answers if start + 1.5 < t < end]  # the service adopts a change within ~1 s
        share = sum(v == "2" for v in seen) / len(seen)
        tolerance = 4 * np.sqrt(weight * (1 - weight) / len(seen)) + 0.01
        assert abs(share - weight) < tolerance, (weight, share, len(seen))
    assert before.revision < route.revision
    assert load.failed == [] and load.refused > 0


FAST_ROLLOUT_STEPS = [0.05, 0.2, 0.5]


BAD = [("erroring", "error_rate"), ("slow", "p95_latency"), ("shifted", "score_psi")]


@pytest.mark.parametrize(("kind", "gate"), BAD)
def test_a_bad_challenger_is_rolled_back_on_its_own(run_dag, service, webhook, kind, gate):
    server, load = service
    version = register_variant(kind)
    champion = state().route(MODEL).champion_version
    alerts_before = len(webhook)

    dr = rollout(run_dag, version=version)
    assert dr.state == "failed"

    record = latest_rollout()
    assert record.status == "failed" and record.candidate_version == version
    failed_gates = [g["name"] for g in record.gate_results[-1]["gates"] if g["status"] == "fail"]
    assert gate in failed_gates, record.gate_results[-1]
    route = state().route(MODEL)
    assert (route.champion_version, route.canary_version, route.canary_weight) == (champion, None, 0.0)
    assert aliases()["champion"] == champion
    abort = state().trail(MODEL, limit=1)[0]
    assert abort.action == "abort" and abort.details["verdict"]["status"] == "fail"
    texts = json.dumps(webhook[alerts_before:])
    assert f"v{champion} serves all traffic again" in texts and gate in texts
    assert load.failed == []  # a failing canary falls back to the champion: clients never see it


def test_blue_green_switches_at_once_after_the_pre_switch_check(run_dag, service):
    server, load = service
    dr = rollout(run_dag, version="1", mode="bluegreen")
    assert dr.state == "success", latest_rollout().outcome
    record = latest_rollout()
    assert record.mode == "bluegreen" and record.status == "succeeded"
    assert [r["step"] for r in record.gate_results] == [0.0, 1.0]
    assert state().route(MODEL).champion_version == "1" and aliases()["champion"] == "1"
    switch = next(r for r in state().trail(MODEL, limit=5) if r.action == "bluegreen_switch")
    assert switch.before["champion_version"] == "2" and switch.after["champion_version"] == "1"
    assert load.failed == []


def test_blue_green_refuses_a_candidate_that_fails_the_pre_switch_check(run_dag, service):
    erroring = next(
        v.version for v in mlflow_client().search_model_versions(f"name='{MODEL}'") if v.run_id and _is_erroring(v)
    )
    dr = rollout(run_dag, version=str(erroring), mode="bluegreen")
    assert dr.state == "failed"
    record = latest_rollout()
    assert record.status == "failed" and record.gate_results[-1]["gates"][0]["status"] == "fail"
    assert state().route(MODEL).champion_version == "1"  # never switched


def _is_erroring(version) -> bool:
    return mlflow_client().get_run(version.run_id).info.run_name == "bad-erroring"


def test_a_pin_during_a_running_rollout_ends_it_and_the_pin_stays(run_dag, service):
    """The issue's race, for real: a person pins the candidate while the rollout DAG runs its first step."""
    from loopline.rollout.actions import apply

    server, load = service
    mlflow_client().set_registered_model_alias(MODEL, "challenger", "2")
    person = "alice (dag:credit_risk_rollout_control/manual__e2e)"
    pinned = threading.Event()
    done = threading.Event()

    def press_pin() -> None:  # as the control DAG's task does, once the rollout's canary serves
        while not done.is_set():
            running, route = state().running_rollout(MODEL), state().route(MODEL)
            if running is not None and route.canary_version == "2":
                apply("pin", MODEL, "2", 0.1, person, "A/B test instead", get_settings())
                pinned.set()
                return
            done.wait(0.2)

    thread = threading.Thread(target=press_pin, daemon=True)
    thread.start()
    try:
        dr = rollout(run_dag)
    finally:
        done.set()
        thread.join(timeout=60)
    assert pinned.is_set()
    assert dr.state == "success"  # ended by a person: skipped, not failed, and nothing put back
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert states["put_champion_back"] == "skipped" and states["promote"] == "skipped", states
    record = latest_rollout()
    assert record.status == "aborted" and record.ended_by == person
    route = state().route(MODEL)
    assert (route.champion_version, route.canary_version, route.canary_weight) == ("1", "2", 0.1)
    after_pin = [r for r in state().trail(MODEL, limit=5) if r.actor == person]
    assert state().trail(MODEL, limit=1)[0].id == after_pin[0].id  # the rollout wrote nothing after the person

    ended = run_dag("credit_risk_rollout_control", conf={"action": "abort", "reason": "e2e: the A/B test is over"})
    assert ended.state == "success" and state().route(MODEL).canary_version is None
    assert state().trail(MODEL, limit=1)[0].actor == f"dag_test (dag:credit_risk_rollout_control/{ended.run_id})"
    mlflow_client().delete_registered_model_alias(MODEL, "challenger")
    assert load.failed == []


def test_metrics_and_audit_read_with_their_own_clients(service):
    from prometheus_client.parser import text_string_to_metric_families

    server, load = service

    def scrape() -> dict:
        return {f.name: f for f in text_string_to_metric_families(requests.get(f"{server.url}/metrics").text)}

    def weights_of(families) -> dict:
        samples = families["loopline_traffic_weight"].samples
        return {(s.labels["model_version"], s.labels["arm"]): s.value for s in samples}

    # The previous test's abort reaches the service at its next route poll, and the gauge with it.
    deadline = time.monotonic() + 60
    families = scrape()
    while weights_of(families).get(("1", "champion")) != 1.0 and time.monotonic() < deadline:
        time.sleep(0.5)
        families = scrape()
    served = Counter()
    for sample in families["loopline_predictions"].samples:
        served[sample.labels["model_version"]] += sample.value
    assert served["1"] > 0 and served["2"] > 0
    weights = weights_of(families)
    assert weights.get(("1", "champion")) == 1.0
    # Every version that served earlier in this module has left the route: its share shows 0, not a stale one.
    assert len(weights) > 1 and all(v == 0 for k, v in weights.items() if k != ("1", "champion")), weights
    errors = {s.labels["model_version"]: s.value for s in families["loopline_prediction_errors"].samples}
    assert sum(errors.values()) > 0  # the erroring canary's calls, absorbed by the champion

    from typer.testing import CliRunner

    from loopline.ops.cli import app

    result = CliRunner().invoke(app, ["audit", "--model", "credit_risk", "--limit", "40"])
    assert result.exit_code == 0, result.output
    assert "canary_step" in result.output and "promote" in result.output and "abort" in result.output
    assert load.sent > 200 and load.failed == []
