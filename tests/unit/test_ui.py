"""The Loopline page: data gathered from a real MLflow registry (SQLite) and a real state store, served
through the FastAPI app with Starlette's TestClient; and the task extra links' URLs."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pytest
from fastapi import Depends, HTTPException
from fastapi.testclient import TestClient

from loopline.core.settings import get_settings
from loopline.ops import links, ui

MODEL = "credit_risk"
OTHER = "fraud"  # a second model folder (a renamed copy of credit_risk)
BROKEN = "half_done"  # a folder whose spec does not load
EVIL = '<img src=x onerror="alert(1)">'
ROOT = Path(__file__).resolve().parents[2]
PLUGIN_FILE = ROOT / "plugins" / "loopline_plugin.py"
DRIFT_RUN = "scheduled__2026-12-02T14:00:00+00:00"
WHEN = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d UTC$")


def _model_folders(root: Path) -> Path:
    """models/: the shipped credit_risk, a renamed copy of it and a folder with a typo in its spec."""
    import yaml

    models = root / "models"
    shutil.copytree(ROOT / "models" / MODEL, models / MODEL, ignore=shutil.ignore_patterns("__pycache__"))
    raw = yaml.safe_load((ROOT / "models" / MODEL / "spec.yaml").read_text())
    (models / OTHER).mkdir()
    (models / OTHER / "spec.yaml").write_text(yaml.safe_dump({**raw, "name": OTHER}))
    (models / BROKEN).mkdir()
    (models / BROKEN / "spec.yaml").write_text(yaml.safe_dump({**raw, "name": BROKEN, "trainig": {}}))
    return models


def _settings_in(home: Path, monkeypatch: pytest.MonkeyPatch, **extra: str):
    """Settings for a throw-away LOOPLINE_HOME; every variable the code may export is restored afterwards."""
    monkeypatch.setenv("LOOPLINE_HOME", str(home))
    for key, value in extra.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    settings = get_settings()
    for key, value in settings.as_env().items():  # tracking.client_for exports these; undo them later
        monkeypatch.setenv(key, value)
    return settings


def _tiny_booster():
    import lightgbm as lgb
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2))
    y = (x[:, 0] + rng.normal(scale=0.5, size=60) > 0).astype(int)
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "min_data_in_leaf": 5}
    return lgb.train(params, lgb.Dataset(x, y), num_boost_round=3)


@pytest.fixture(scope="module")
def line(tmp_path_factory):
    """Three registered versions (champion, challenger, previous), a canary at 10%, a rollout, an audit trail."""
    import mlflow

    from loopline.core import tracking
    from loopline.core.serving_state import Route, ServingState
    from loopline.monitoring.monitoring_state import MonitoringState

    home = tmp_path_factory.mktemp("ui-home")
    models = _model_folders(tmp_path_factory.mktemp("ui-models"))
    with pytest.MonkeyPatch.context() as mp:
        settings = _settings_in(home, mp, LOOPLINE_MODELS_DIR=str(models))
        client = tracking.client_for(settings)
        exp_id = tracking.experiment_id(client, MODEL, settings)
        with mlflow.start_run(experiment_id=exp_id) as run:
            info = mlflow.lightgbm.log_model(_tiny_booster(), name=tracking.MODEL_ARTIFACT)
            mlflow.set_tags({"loopline.model_uri": info.model_uri, "loopline.data_version": "credit_risk-v0001"})
        run_id = run.info.run_id
        assert tracking.register(client, MODEL, run_id) == ("1", True)
        for _ in range(2):
            client.create_model_version(
                MODEL, source=info.model_uri, run_id=run_id, tags={"loopline.data_version": "v2"}
            )
        for version, decision in [("1", "champion"), ("2", "challenger"), ("3", "rejected")]:
            client.set_model_version_tag(MODEL, version, "loopline.gate_decision", decision)
        client.set_model_version_tag(MODEL, "3", "loopline.bento_tag", f"credit-risk:{EVIL}")
        client.set_registered_model_alias(MODEL, "previous", "1")
        client.set_registered_model_alias(MODEL, "champion", "2")
        client.set_registered_model_alias(MODEL, "challenger", "3")

        state = ServingState(settings.state_db_uri)
        state.change(Route(MODEL, champion_version="1"), "first_champion", "dag:credit_risk_train/r1", "first model")
        state.change(Route(MODEL, champion_version="2", revision=1), "promote", "user:admin", "v2 is better")
        state.change(
            Route(MODEL, champion_version="2", canary_version="3", canary_weight=0.1, revision=2),
            "canary_step",
            'dag:credit_risk_rollout/"manual"&co',
            EVIL,
        )
        rollout = state.start_rollout(MODEL, "3", "2", "canary", "dag:credit_risk_rollout/manual__1")
        state.begin_step(rollout.id, 0.1, {})
        verdict = {
            "step": 0.1,
            "status": "pass",
            "elapsed_seconds": 12.0,
            "samples": {"canary": 40},
            "gates": [{"name": "error_rate", "status": "pass", "detail": "0.00 <= 0.01"}],
            "reason": "canary within limits",
        }
        state.add_gate_result(rollout.id, verdict)

        # The second model: served by v1, a rollout that stopped when the route changed (outcome text as
        # rollout_flow writes it, with the route as a Python dict), a drift check whose report is in MLflow.
        state.change(Route(OTHER, champion_version="1"), "first_champion", "dag:fraud_train/r1", "first model")
        other = state.start_rollout(OTHER, "2", "1", "canary", "dag:fraud_rollout/asset_triggered__2026-12-01")
        changed = Route(OTHER, champion_version="1", canary_version="2", canary_weight=0.2, revision=1).to_dict()
        state.finish_rollout(other.id, "aborted", f"route changed outside the rollout: {changed}")
        drift_exp = tracking.experiment_id(client, f"{OTHER}-monitoring", settings)
        with mlflow.start_run(experiment_id=drift_exp) as drift_run:
            mlflow.log_text("<html>drift report</html>", "drift/drift_report.html")
        MonitoringState(settings.state_db_uri).record(
            at=datetime(2026, 12, 2, 14, 0, tzinfo=UTC), model=OTHER, champion_version="1", n_rows=800,
            verdict="performance_risk", confirmed=True, triggered=True, trigger_reason="confirmed drift",
            drift_share=0.45,
            score_psi=0.31, report_uri=f"runs:/{drift_run.info.run_id}/drift/drift_report.html", dag_run=DRIFT_RUN,
        )  # fmt: skip
        yield SimpleNamespace(
            settings=settings,
            client=client,
            run_id=run_id,
            exp_id=exp_id,
            rollout_id=rollout.id,
            drift_run_id=drift_run.info.run_id,
            drift_exp_id=drift_exp,
        )
    get_settings.cache_clear()
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])  # back to the session's store
    mlflow.set_registry_uri(os.environ["MLFLOW_TRACKING_URI"])


# --- data gathering -------------------------------------------------------------------------------


def test_registry_versions_newest_first_with_aliases_gate_and_links(line):
    aliases, versions = ui.registry_versions(line.client, MODEL)
    assert aliases == {"champion": "2", "challenger": "3", "previous": "1"}
    assert [v.version for v in versions] == ["3", "2", "1"]
    by_version = {v.version: v for v in versions}
    assert by_version["2"].aliases == ["champion"] and by_version["1"].aliases == ["previous"]
    assert [by_version[v].gate_decision for v in "123"] == ["champion", "challenger", "rejected"]
    assert by_version["1"].data_version == "credit_risk-v0001" and by_version["3"].bento_tag.endswith(EVIL)
    assert by_version["1"].run_id == line.run_id and by_version["1"].status == "READY"
    assert by_version["1"].url == f"http://127.0.0.1:5000/#/models/{MODEL}/versions/1"
    assert by_version["1"].run_url == f"http://127.0.0.1:5000/#/experiments/{line.exp_id}/runs/{line.run_id}"
    assert by_version["1"].created.endswith("+00:00")


def test_an_unregistered_model_has_no_versions(line):
    assert ui.registry_versions(line.client, "not_registered") == ({}, [])


def test_traffic_split(line):
    route = ui.traffic(line.settings.state_db_uri, MODEL)
    assert route["champion_version"] == "2" and route["canary_version"] == "3"
    assert route["split"] == {"2": 0.9, "3": 0.1}
    assert route["revision"] == 3
    assert ui.traffic(line.settings.state_db_uri, "nothing")["split"] == {}


def test_rollouts_carry_their_gate_results(line):
    (rollout,) = ui.rollouts(line.settings.state_db_uri, MODEL)
    assert rollout["id"] == line.rollout_id and rollout["status"] == "running" and rollout["step"] == 0.1
    assert rollout["gate_results"][0]["gates"][0]["name"] == "error_rate"


def test_audit_trail_newest_first(line):
    trail = ui.audit_trail(line.settings.state_db_uri, MODEL)
    assert [a["action"] for a in trail] == ["canary_step", "promote", "first_champion"]
    assert trail[0]["reason"] == EVIL and trail[0]["after"]["canary_weight"] == 0.1
    assert trail[0]["at"].endswith("+00:00") and "canary_step" in trail[0]["line"]


def test_drift_verdicts_empty_table_is_no_error(line):
    assert ui.drift_verdicts(line.settings.state_db_uri, MODEL) == []


def test_drift_verdicts_newest_first(tmp_path):
    from datetime import UTC, datetime

    from loopline.monitoring.monitoring_state import MonitoringState

    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = MonitoringState(url)
    common = {"model": MODEL, "champion_version": "2", "n_rows": 500, "confirmed": False, "triggered": False}
    store.record(at=datetime(2026, 11, 2, tzinfo=UTC), verdict="stable", drift_share=0.0, dag_run="a", **common)
    at = datetime(2026, 11, 9, tzinfo=UTC)
    store.record(at=at, verdict="performance_risk", drift_share=0.4, dag_run="b", **common)
    checks = ui.drift_verdicts(url, MODEL)
    assert [c["verdict"] for c in checks] == ["performance_risk", "stable"]
    assert checks[0]["at"] == "2026-11-09T00:00:00+00:00" and checks[0]["drift_share"] == 0.4


def test_gather_knows_every_model(line):
    overview = ui.gather(line.settings)
    assert MODEL in [m.name for m in overview.models]  # spec folder and registry
    model = next(m for m in overview.models if m.name == MODEL)
    assert model.errors == [] and overview.errors == []
    assert model.route["split"] == {"2": 0.9, "3": 0.1} and len(model.versions) == 3 and len(model.audit) == 3
    assert overview.to_dict()["models"][0]["name"] == overview.models[0].name


def test_an_unreadable_store_is_a_note_not_a_broken_page(tmp_path, monkeypatch):
    broken = "sqlite:////nonexistent-dir/for/sure/state.db"
    settings = _settings_in(tmp_path, monkeypatch, LOOPLINE_STATE_DB_URI=broken)
    model = ui.gather_model(MODEL, settings, client=None)
    assert model.route == {} and model.audit == [] and model.rollouts == []
    assert any(e.startswith("traffic: OperationalError") for e in model.errors)
    assert "OperationalError" in ui.render_html(ui.Overview("now", "http://m", [model]))
    get_settings.cache_clear()


# --- HTML and JSON through the app ----------------------------------------------------------------


@pytest.fixture(scope="module")
def client(line):
    return TestClient(ui.create_app(settings_factory=lambda: line.settings))


def test_page_lists_versions_aliases_split_rollouts_and_audit(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    for text in ["<h1>Loopline</h1>", "credit_risk", ">v1<", ">v2<", ">v3<", "Traffic", "Audit trail"]:
        assert text in page, text
    for alias in ["champion", "challenger", "previous"]:
        assert f'class="badge alias-{alias}">{alias}</span>' in page
    assert "champion v2 90%" in page and "canary v3 10%" in page
    assert ">rejected<" in page and "error_rate=pass" in page and "canary within limits" in page
    assert "first_champion" in page and "promote" in page and "v2 is better" in page
    assert "No drift checks recorded yet." in page
    assert f'href="http://127.0.0.1:5000/#/models/{MODEL}/versions/2"' in page
    assert 'href="api/overview"' in page  # relative: works under /loopline/ and behind a proxy prefix


def test_every_value_is_escaped(client):
    page = client.get("/").text
    assert EVIL not in page and "<img" not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page  # audit reason and bento tag, as text
    assert "credit_risk_rollout / &quot;manual&quot;&amp;co" in page  # the actor, as a link's text
    assert 'href="../dags/credit_risk_rollout/runs/%22manual%22%26co"' in page


def test_json_variant(client, line):
    data = client.get("/api/overview").json()
    model = next(m for m in data["models"] if m["name"] == MODEL)
    assert model["aliases"] == {"champion": "2", "challenger": "3", "previous": "1"}
    assert model["route"]["split"] == {"2": 0.9, "3": 0.1}
    assert [a["action"] for a in model["audit"]] == ["canary_step", "promote", "first_champion"]
    assert model["rollouts"][0]["gate_results"][0]["status"] == "pass"
    assert model["drift"] == [] and data["mlflow_ui_url"] == "http://127.0.0.1:5000"


def test_model_filter(client):
    assert [m["name"] for m in client.get("/api/overview", params={"model": "other"}).json()["models"]] == ["other"]


def test_every_model_folder_has_a_section_and_a_broken_one_names_its_error(line, client):
    overview = ui.gather(line.settings)
    by_name = {m.name: m for m in overview.models}
    assert sorted(by_name) == [MODEL, OTHER, BROKEN]  # every folder discover() finds, broken or not
    assert "trainig: unknown key" in by_name[BROKEN].spec_error and by_name[BROKEN].dags == {}
    assert by_name[OTHER].spec_error == "" and by_name[OTHER].dags["train"] == f"{OTHER}_train"
    assert len(by_name[MODEL].dags) == 6
    page = client.get("/").text
    for name in (MODEL, OTHER, BROKEN):
        assert f'<section class="model" id="model-{name}">' in page and f'href="#model-{name}"' in page
    assert f'<li class="broken"><a href="#model-{BROKEN}">{BROKEN}</a> (spec error)</li>' in page
    assert f"models/{BROKEN}: the spec does not load" in page and "trainig: unknown key" in page
    assert f'href="../dags/{OTHER}_train" target="_top">train</a>' in page
    assert client.get("/api/overview").json()["models"][2]["spec_error"] == by_name[BROKEN].spec_error


def test_dag_runs_link_to_their_airflow_pages(client):
    page = client.get("/").text
    # rollout trigger, drift check and audit actor: /dags/<dag_id>/runs/<run_id> of the Airflow 3 UI
    assert '<a class="airflow" href="../dags/fraud_rollout/runs/asset_triggered__2026-12-01" target="_top">' in page
    assert 'href="../dags/fraud_drift/runs/scheduled__2026-12-02T14%3A00%3A00%2B00%3A00" target="_top">' in page
    assert 'href="../dags/credit_risk_train/runs/r1" target="_top">credit_risk_train / r1</a>' in page
    assert "user:admin" in page  # a person is no link


def test_a_drift_report_links_to_its_mlflow_run(client, line):
    url = (
        f"http://127.0.0.1:5000/#/experiments/{line.drift_exp_id}/runs/{line.drift_run_id}"
        "/artifacts/drift/drift_report.html"
    )
    assert f'href="{url}"' in client.get("/").text
    other = next(m for m in client.get("/api/overview").json()["models"] if m["name"] == OTHER)
    assert other["drift"][0]["report_url"] == url and other["drift"][0]["dag_id"] == f"{OTHER}_drift"


def test_outcomes_read_as_text_not_python_dicts(client):
    page = client.get("/").text
    assert "route changed outside the rollout: v1 + v2 at 20%" in page
    assert "&#x27;champion_version&#x27;" not in page and "{" not in page.split("<body>")[1].split("<script>")[0]
    assert "<td>v2 + v3 at 10%</td>" in page  # the audit trail's routes, too


def test_one_time_format_on_the_page(client):
    page = client.get("/").text
    body = page.split("<body>")[1].replace(DRIFT_RUN, "").replace(quote(DRIFT_RUN, safe=""), "")  # run ids: names
    assert re.findall(r"\d{4}-\d\d-\d\dT\d\d", body) == [] and "+00:00" not in body
    times = re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", body)
    assert "2026-12-02 14:00 UTC" in times and len(times) >= 10
    as_of = re.search(r"as of ([^&<]+) &middot;", body).group(1)
    assert WHEN.match(as_of)
    assert [ui.when(v) for v in ("2026-12-02T14:05:59+00:00", "2026-12-02 15:05:00.5+01:00", "", "soon")] == [
        "2026-12-02 14:05 UTC",
        "2026-12-02 14:05 UTC",
        "",
        "soon",
    ]


def test_traffic_over_time_is_an_inline_svg_from_the_audit_trail(line, client):
    import xml.etree.ElementTree as ET

    trail = ui.audit_trail(line.settings.state_db_uri, MODEL)
    history = ui.traffic_history(trail)
    assert [p["action"] for p in history] == ["first_champion", "promote", "canary_step"]  # oldest first
    now = datetime.now(UTC).isoformat()
    svg = ui.traffic_chart_svg(history, now).split("<p ")[0]
    root = ET.fromstring(svg)  # well-formed, stand-alone SVG
    ns = "{http://www.w3.org/2000/svg}"
    rects = root.findall(f"{ns}rect")
    assert [r.get("class") for r in rects] == ["champion", "champion", "champion", "canary"]
    canary, last_champion = rects[3], rects[2]
    plot = float(canary.get("height")) + float(last_champion.get("height"))
    assert abs(float(canary.get("height")) / plot - 0.1) < 1e-3  # the canary's 10%
    assert canary.find(f"{ns}title").text.endswith(": v2 + v3 at 10%")
    assert "<script" not in svg and "http" not in svg.replace("http://www.w3.org/2000/svg", "")
    page = client.get("/").text
    assert page.count('<svg class="traffic-chart"') == 2  # credit_risk and fraud have a trail; half_done none
    assert "No changes to traffic recorded yet." in page


def test_readable_spells_out_embedded_literals():
    assert ui.readable("a rollout task failed") == "a rollout task failed"
    assert ui.readable("step 5%: FAIL [error_rate=fail (0.2 > 0.01)]") == "step 5%: FAIL [error_rate=fail (0.2 > 0.01)]"
    assert ui.readable("counters: {'canary': 40, 'champion': 12.5}") == "counters: canary 40, champion 12.5"
    assert ui.readable({"route": {"champion_version": "4"}, "why": None}) == "route v4"


def test_dependencies_guard_every_route(line):
    def deny() -> None:
        raise HTTPException(status_code=401, detail="Not authenticated")

    guarded = TestClient(ui.create_app(lambda: line.settings, dependencies=[Depends(deny)]))
    assert guarded.get("/").status_code == 401 and guarded.get("/api/overview").status_code == 401


def test_the_plugin_wires_page_nav_and_links():
    spec = importlib.util.spec_from_file_location("loopline_plugin_under_test", PLUGIN_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plugin = module.LooplinePlugin
    (app,) = plugin.fastapi_apps
    assert app["url_prefix"] == "/loopline"
    (view,) = plugin.external_views
    assert view["href"] == "loopline/" and view["url_route"] == "loopline" and view["destination"] == "nav"
    assert [link.name for link in plugin.global_operator_extra_links] == ["MLflow run", "Model version", "Bento"]
    # Airflow's own login check runs before anything is read: no cookie, no token -> 401.
    unauthenticated = TestClient(app["app"])
    assert unauthenticated.get("/").status_code == 401
    assert unauthenticated.get("/api/overview").json() == {"detail": "Not authenticated"}


# --- extra links ----------------------------------------------------------------------------------

TRAIN_RUN = {
    "model_name": MODEL,
    "run_id": "abc123",
    "experiment_id": "7",
    "data": {},
    "fingerprint": "f",
    "reused": False,
    "model_version": None,
}


@pytest.fixture
def xcoms(monkeypatch):
    """XCom return values by task id, in place of the Airflow metadata DB (the browser test reads the real one)."""
    values: dict[str, object] = {}
    monkeypatch.setattr(links, "xcom_return_value", lambda dag_id, run_id, task_id, map_index=-1: values.get(task_id))
    return values


def _key(task_id: str, dag_id: str = "credit_risk_train"):
    return SimpleNamespace(dag_id=dag_id, task_id=task_id, run_id="manual__1", map_index=-1, try_number=1)


def test_mlflow_run_link(xcoms):
    xcoms["start_run"] = TRAIN_RUN
    link = links.MlflowRunLink()
    expected = "http://127.0.0.1:5000/#/experiments/7/runs/abc123"
    assert link.get_link(None, ti_key=_key("start_run")) == expected
    assert link.get_link(None, ti_key=_key("validate_data")) == expected  # via start_run's TrainRun
    assert link.get_link(None, ti_key=_key("train_and_evaluate")) == ""  # has not returned yet
    assert link.get_link(None, ti_key=_key("start_run", dag_id="other_dag")) == ""
    assert link.get_link(None, ti_key=_key("prepare")) == ""


def test_model_version_link(xcoms, monkeypatch):
    from loopline.core.settings import get_settings

    monkeypatch.setenv("LOOPLINE_MLFLOW_UI_URL", "https://mlflow.example.com/")
    get_settings.cache_clear()
    link = links.ModelVersionLink()
    xcoms["register_model"] = {**TRAIN_RUN, "model_version": None}
    assert link.get_link(None, ti_key=_key("register_model")) == ""
    xcoms["register_model"] = {**TRAIN_RUN, "model_version": "4"}
    for task in ["register_model", "quality_gate", "package_bento"]:
        assert link.get_link(None, ti_key=_key(task)) == f"https://mlflow.example.com/#/models/{MODEL}/versions/4"
    assert link.get_link(None, ti_key=_key("start_run")) == ""
    monkeypatch.undo()
    get_settings.cache_clear()


def test_bento_link(xcoms, monkeypatch):
    monkeypatch.setenv("LOOPLINE_SERVICE_URL", "http://bento.local:3000")
    get_settings.cache_clear()
    link = links.BentoLink()
    assert link.get_link(None, ti_key=_key("package_bento")) == ""
    xcoms["package_bento"] = "credit-risk:v4-abc"
    assert link.get_link(None, ti_key=_key("package_bento")) == "http://bento.local:3000/"
    assert link.get_link(None, ti_key=_key("quality_gate")) == ""
    get_settings.cache_clear()


def test_a_failing_lookup_is_no_link(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("metadata DB unreachable")

    monkeypatch.setattr(links, "xcom_return_value", broken)
    assert links.MlflowRunLink().get_link(None, ti_key=_key("start_run")) == ""


def test_urls_are_quoted():
    assert links.mlflow_version_url("a model", "1", base="http://m") == "http://m/#/models/a%20model/versions/1"
    assert links.run_link({"run_id": "r"}) == "" and links.version_link("x") == ""


# --- the shadow phase on the page -----------------------------------------------------------------


def test_a_shadow_phase_shows_in_traffic_and_its_results_in_the_rollout(tmp_path):
    from loopline.core.serving_state import Route, ServingState
    from loopline.ops.status import _shadow_lines

    url = f"sqlite:///{tmp_path / 'state.db'}"
    state = ServingState(url)
    state.change(Route(MODEL, champion_version="1"), "first_champion", "t", "first")
    rollout = state.start_rollout(MODEL, "2", "1", "canary", "dag:credit_risk_rollout/manual__1", base_revision=1)
    state.change(
        Route(MODEL, "1", revision=1, shadow_version="2"), "shadow_start", "dag:r/1", "shadow", owner=rollout.id
    )
    state.begin_step(rollout.id, 0.0, {}, phase="shadow")
    assert _shadow_lines(state.rollouts(MODEL, limit=1)) == [
        f"shadow of v2 (rollout #{rollout.id}): running, not judged yet"
    ]

    traffic = ui._traffic_html(ui.traffic(url, MODEL))
    assert "shadow v2 (scores a copy, answers nothing)" in traffic and "champion v1 100%" in traffic
    assert ui.route_text(state.route(MODEL).to_dict()) == "v1 + shadow v2"
    assert "shadow" in ui._rollouts_html(ui.rollouts(url, MODEL))  # its step column

    verdict = {
        "step": 0.0, "status": "pass", "elapsed_seconds": 610.0, "samples": {"shadow": 900, "champion": 900},
        "phase": "shadow", "reason": "every gate passed",
        "gates": [
            {"name": "disagreement", "status": "pass", "canary": 0.032, "limit": 0.1, "detail": "29/900 differ"},
            {"name": "score_psi", "status": "pass", "canary": 0.0125, "limit": 0.2, "detail": "PSI 0.030"},
        ],
    }  # fmt: skip
    state.add_gate_result(rollout.id, verdict)
    html = ui._rollouts_html(ui.rollouts(url, MODEL))
    assert "shadow (disagreement 3.2% (limit 10.0%), score shift PSI 0.013 beyond noise (limit 0.200))" in html
    assert _shadow_lines(state.rollouts(MODEL, limit=1)) == [
        f"shadow of v2 (rollout #{rollout.id}): PASS, disagreement 3.2% (limit 10.0%), "
        "score shift PSI 0.013 beyond noise (limit 0.200)"
    ]


def test_a_decision_is_traced_from_its_request_id_on_the_page(client, monkeypatch):
    from loopline.ops import trace

    page = client.get("/").text
    assert '<form class="trace" action="trace" method="get">' in page  # relative, as the JSON link
    assert f'name="model" value="{MODEL}"' in page and 'name="request_id"' in page

    missing = client.get("/trace", params={"model": MODEL, "request_id": "nope"})
    assert missing.status_code == 404 and "nope" in missing.text and "prediction" in missing.text
    assert client.get("/trace", params={"model": MODEL, "request_id": " "}).status_code == 400

    found = SimpleNamespace(text=lambda: f"request r1 ({MODEL})\n  data_version v0002\n  re-scored: REPRODUCED {EVIL}")
    monkeypatch.setattr(trace, "trace", lambda model, request_id, settings: found)
    shown = client.get("/trace", params={"model": MODEL, "request_id": "r1"})
    assert shown.status_code == 200 and "data_version v0002" in shown.text and "REPRODUCED" in shown.text
    assert EVIL not in shown.text and 'value="r1"' in shown.text  # escaped; the form keeps the id


def test_a_check_with_refused_requests_shows_them_on_the_page_escaped(tmp_path):
    import pandas as pd

    from loopline.monitoring import refusals
    from loopline.monitoring.monitoring_state import MonitoringState
    from tests.unit.edges_service import SPEC

    url = f"sqlite:///{tmp_path / 'state.db'}"
    lines = [{"rows": 20, "problems": [{"field": "channel", "reason": "literal_error", "value": EVIL, "rows": 20}]}]
    result = refusals.check(lines, pd.DataFrame({"x": range(80)}), SPEC, 0.05)
    common = {"model": MODEL, "champion_version": "2", "n_rows": 80, "confirmed": False, "triggered": False}
    impact = {"refusals": {**result.to_dict(), "alerted": True}}
    MonitoringState(url).record(at=datetime(2026, 11, 9, tzinfo=UTC), verdict="stable", drift_share=0.0,
                                dag_run="r", impact=impact, **common)  # fmt: skip
    [check] = ui.drift_verdicts(url, MODEL)
    page = ui._drift_html([check])
    assert "refused / unknown levels" in page and "ALERTED: 20% of rows refused (20 of 100, in 1 request)" in page
    assert EVIL not in page and ui.esc(EVIL) in page
