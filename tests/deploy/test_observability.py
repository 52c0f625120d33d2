"""Prometheus, statsd-exporter and Grafana as provisioned by the stack, checked without running them.

Scrape targets are services of the compose file; Airflow's StatsD settings reach the exporter;
every dashboard parses, refers only to provisioned data sources, and queries only metrics the
BentoML service defines (include/loopline/serving/bento_service.py) or the StatsD mapping produces, and only
the Loopline state tables. With a Postgres on 127.0.0.1:5432 (CI has one), every SQL panel also
runs against the real tables, created from Loopline's own SQLAlchemy metadata.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from loopline.core.dag_factory import STATIONS
from tests.deploy.stack import DEPLOY, ROOT, environment, example_env, interpolate, services

GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
SERVICE_PY = ROOT / "include" / "loopline" / "serving" / "bento_service.py"
PROM_SUFFIXES = ("_bucket", "_count", "_sum", "_created")
STATE_TABLES = {  # the Loopline state tables the lifecycle dashboard reads, as documented for the stack
    "loopline_audit": "id, at, model, action, before, after, actor, reason, details",
    "loopline_rollouts": "id, model, candidate_version, champion_version, mode, status, step, started_at, "
    "finished_at, trigger, gate_results",
    "loopline_drift_checks": "id, at, model, champion_version, n_rows, confirmed, triggered, drift_share, "
    "score_psi, report_uri, features",
}


def _walk(node: Any, key: str) -> list[Any]:
    """Every value stored under `key` anywhere in a JSON document."""
    found = []
    if isinstance(node, dict):
        for k, value in node.items():
            if k == key:
                found.append(value)
            found.extend(_walk(value, key))
    elif isinstance(node, list):
        for item in node:
            found.extend(_walk(item, key))
    return found


def _dashboard(name: str) -> dict[str, Any]:
    return json.loads((GRAFANA / "dashboards" / f"{name}.json").read_text())


def _datasources() -> dict[str, dict[str, Any]]:
    provisioning = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "loopline.yml").read_text())
    return {ds["uid"]: ds for ds in provisioning["datasources"]}


def _queries(dashboard: dict[str, Any], field: str) -> list[str]:
    return [q for q in _walk(dashboard, field) if isinstance(q, str)]


def _service_metrics() -> set[str]:
    text = SERVICE_PY.read_text()
    return set(re.findall(r"prom\.(?:Counter|Histogram|Gauge|Summary)\(\s*\"([a-z_:][a-z0-9_:]*)\"", text))


def _statsd_metrics() -> set[str]:
    mapping = yaml.safe_load((DEPLOY / "statsd" / "mapping.yml").read_text())
    return {m["name"] for m in mapping["mappings"]}


def _metric_names(expr: str, prefix: str) -> set[str]:
    names = set()
    for name in re.findall(rf"\b({prefix}[a-z0-9_]*)", expr):
        for suffix in PROM_SUFFIXES:
            if name.endswith(suffix) and name != suffix:
                name = name.removesuffix(suffix)
                break
        names.add(name)
    return names


def _container_path(service: dict[str, Any], repo_path: str) -> str:
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        if source == f"./{repo_path}":
            return target
    raise AssertionError(f"{repo_path} is not mounted")


# --- Prometheus and statsd-exporter ------------------------------------------------------------------


def test_prometheus_scrapes_the_service_and_the_statsd_exporter():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: {t for sc in job["static_configs"] for t in sc["targets"]} for job in config["scrape_configs"]
    }
    svcs = services()
    service_url = urlsplit(environment(svcs["airflow-worker"])["LOOPLINE_SERVICE_URL"])
    assert f"{service_url.hostname}:{service_url.port}" in targets["loopline-service"]
    exporter_port = next(a.rsplit(":", 1)[1] for a in svcs["statsd-exporter"]["command"] if "web.listen" in a)
    assert f"statsd-exporter:{exporter_port}" in targets["airflow"]
    for job, hosts in targets.items():
        for target in hosts:
            host = target.split(":")[0]
            assert host == "localhost" or host in svcs, f"{job}: {target} is not a service of the stack"
    mounted = _container_path(svcs["prometheus"], "deploy/prometheus/prometheus.yml")
    assert f"--config.file={mounted}" in svcs["prometheus"]["command"]


def _model_services() -> dict[str, dict[str, Any]]:
    """The BentoML services of the stack (deploy/bento/serve.sh), by compose service name."""
    return {
        name: svc for name, svc in services().items() if "deploy/bento/serve.sh" in " ".join(svc.get("command", []))
    }


def test_bentoml_serves_on_the_port_prometheus_and_the_rollout_dag_use():
    serve = (DEPLOY / "bento" / "serve.sh").read_text()
    assert '--port "${LOOPLINE_SERVE_PORT:-3000}"' in serve
    assert "service:ModelService" in serve and 'LOOPLINE_SERVICE_MODEL_DIR="/opt/loopline/models/$name"' in serve
    url = urlsplit(environment(services()["credit-risk"])["LOOPLINE_SERVICE_URL"])
    assert url.hostname == "credit-risk" and url.port == 3000
    assert "LOOPLINE_SERVE_PORT" not in environment(services()["credit-risk"])  # serve.sh's default


def test_prometheus_scrapes_every_model_service_on_its_port_with_its_model_label():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "loopline-service")
    scraped = {t: sc.get("labels", {}).get("model") for sc in job["static_configs"] for t in sc["targets"]}
    models = {}
    for name, svc in _model_services().items():
        env = environment(interpolate(svc, example_env()))
        port = env.get("LOOPLINE_SERVE_PORT", "3000")
        model = env["LOOPLINE_BENTO_MODEL"].split(":")[0]
        assert scraped.get(f"{name}:{port}") == model, f"{name} (model {model}) is not scraped on :{port}"
        assert svc["healthcheck"]["test"][-1] == f"http://localhost:{port}/readyz", name
        assert all(str(p).endswith(f":{port}") for p in svc.get("ports", [])), f"{name} publishes another port"
        assert (ROOT / "models" / model / "spec.yaml").is_file(), f"{name} serves {model}, which has no folder"
        models[model] = name
    assert {"credit_risk", "card_fraud"} <= set(models)
    assert len(models) == len(_model_services()), "one service per model"


def test_airflow_sends_statsd_to_the_exporter_with_tags():
    svcs = services()
    command = svcs["statsd-exporter"]["command"]
    udp_port = next(a.rsplit(":", 1)[1] for a in command if "listen-udp" in a)
    mapping = _container_path(svcs["statsd-exporter"], "deploy/statsd/mapping.yml")
    assert f"--statsd.mapping-config={mapping}" in command
    for name, svc in svcs.items():
        env = environment(svc)
        if "AIRFLOW__CORE__EXECUTOR" not in env:
            continue
        assert env["AIRFLOW__METRICS__STATSD_ON"] == "True", name
        assert env["AIRFLOW__METRICS__STATSD_HOST"] == "statsd-exporter", name
        assert env["AIRFLOW__METRICS__STATSD_PORT"] == udp_port, name
        assert env["AIRFLOW__METRICS__STATSD_PREFIX"] == "airflow", name
        assert env["AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED"] == "True", name  # dag_id etc. become labels


def test_statsd_mapping_names_are_valid_prometheus_metrics_of_airflow():
    mapping = yaml.safe_load((DEPLOY / "statsd" / "mapping.yml").read_text())
    assert mapping["defaults"]["observer_type"] == "histogram"
    for rule in mapping["mappings"]:
        assert rule["match"].startswith("airflow."), rule
        assert re.fullmatch(r"airflow_[a-z0-9_]+", rule["name"]), rule  # no $n: dashboards need the exact names


# --- Grafana provisioning ----------------------------------------------------------------------------


def test_grafana_datasources_point_at_the_stack():
    sources = _datasources()
    assert set(sources) == {"prometheus", "loopline-state"}
    prometheus, state = sources["prometheus"], sources["loopline-state"]
    assert prometheus["type"] == "prometheus" and urlsplit(prometheus["url"]).hostname in services()
    assert state["type"] == "grafana-postgresql-datasource"
    assert state["url"] == "postgres:5432"
    worker = interpolate(services()["airflow-worker"], example_env())
    db = urlsplit(environment(worker)["LOOPLINE_STATE_DB_URI"]).path.lstrip("/")
    assert state["jsonData"]["database"] == db
    init = (DEPLOY / "postgres" / "init-databases.sh").read_text()
    assert f"CREATE ROLE {state['user']} LOGIN" in init
    assert f"GRANT SELECT ON TABLES TO {state['user']}" in init, "Grafana's role reads the state tables"
    assert state["secureJsonData"]["password"] == "${GRAFANA_DB_PASSWORD}"
    grafana_env = environment(services()["grafana"])
    assert grafana_env["GRAFANA_DB_PASSWORD"].startswith("${GRAFANA_DB_PASSWORD:?")


def test_no_secret_literal_in_the_provisioning_files():
    for path in sorted(DEPLOY.rglob("*.y*ml")):
        for key, value in re.findall(r"^\s*([A-Za-z_]*(?:password|secret|token)[A-Za-z_]*):\s*(\S+)", path.read_text(),
                                     flags=re.MULTILINE | re.IGNORECASE):  # fmt: skip
            assert value.startswith("$"), f"{path}: {key} must come from the environment"


def test_grafana_loads_the_dashboards_from_the_mounted_folder():
    grafana = services()["grafana"]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "loopline.yml").read_text())["providers"][0]
    folder = _container_path(grafana, "deploy/grafana/dashboards")
    assert provider["options"]["path"] == folder
    assert _container_path(grafana, "deploy/grafana/provisioning") == "/etc/grafana/provisioning"
    home = environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent.as_posix() == folder and (GRAFANA / "dashboards" / Path(home).name).is_file()


# --- dashboards -------------------------------------------------------------------------------------


def test_dashboards_parse_and_have_unique_ids():
    assert {p.stem for p in DASHBOARDS} == {"loopline-serving", "loopline-lifecycle"}
    uids = set()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] not in uids
        uids.add(dashboard["uid"])
        panel_ids = [p["id"] for p in dashboard["panels"]]
        assert len(panel_ids) == len(set(panel_ids)), f"{path.name}: duplicate panel ids"
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, f"{path.name}: {panel['title']} is wider than the grid"
            assert panel["type"] == "row" or panel["targets"], f"{path.name}: {panel['title']} has no query"


def test_dashboards_use_only_provisioned_datasources():
    sources = _datasources()
    for path in DASHBOARDS:
        refs = _walk(json.loads(path.read_text()), "datasource")
        assert refs, path.name
        for ref in refs:
            assert isinstance(ref, dict), f"{path.name}: refer to data sources by uid, not {ref!r}"
            assert ref["uid"] in sources, f"{path.name}: unknown data source uid {ref['uid']}"
            assert ref["type"] == sources[ref["uid"]]["type"], f"{path.name}: wrong type for {ref['uid']}"


def test_dashboard_metrics_are_ones_the_service_and_the_exporter_define():
    defined = _service_metrics()
    assert {"loopline_predictions_total", "loopline_prediction_errors_total", "loopline_predict_latency_seconds",
            "loopline_score"} <= defined  # fmt: skip
    airflow = _statsd_metrics()
    for path in DASHBOARDS:
        for expr in _queries(json.loads(path.read_text()), "expr"):
            unknown = _metric_names(expr, "loopline_") - defined
            assert not unknown, f"{path.name}: {sorted(unknown)} not defined in {SERVICE_PY.name}"
            unknown = _metric_names(expr, "airflow_") - airflow
            assert not unknown, f"{path.name}: {sorted(unknown)} not produced by deploy/statsd/mapping.yml"


def test_serving_dashboard_shows_qps_latency_percentiles_errors_by_model_version():
    exprs = " ".join(_queries(_dashboard("loopline-serving"), "expr"))
    assert "rate(loopline_predictions_total" in exprs
    assert "rate(loopline_prediction_errors_total" in exprs
    for quantile in ("0.50", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le, model, model_version)" in exprs, quantile
    assert "loopline_traffic_weight" in exprs and "loopline_score_bucket" in exprs
    assert "by (model, model_version" in exprs


def test_lifecycle_dashboard_reads_the_state_tables_and_airflow_metrics():
    dashboard = _dashboard("loopline-lifecycle")
    sql = _queries(dashboard, "rawSql")
    tables = {t for q in sql for t in re.findall(r"\bFROM\s+(\w+)", q, flags=re.IGNORECASE)}
    assert tables == set(STATE_TABLES), tables
    for query in sql:
        for table in re.findall(r"\bFROM\s+(\w+)", query, flags=re.IGNORECASE):
            columns = {c.strip() for c in STATE_TABLES[table].split(",")}
            used = set(re.findall(r"\b[a-z_]+\b", re.sub(r"'[^']*'|\"[^\"]*\"|\$__\w+", "", query)))
            aliases = set(re.findall(r"\bAS\s+(\w+)", query, flags=re.IGNORECASE))
            known = columns | aliases | {table} | _SQL_WORDS
            assert used <= known, f"{sorted(used - known)} in: {query}"
    exprs = " ".join(_queries(dashboard, "expr"))
    assert f'airflow_dagrun_duration_seconds_count{{dag_id=~"{MODEL_DAGS}", state="failed"}}' in exprs
    assert "airflow_dagrun_duration_seconds" in exprs and "airflow_ti_failures_total" in exprs


_SQL_WORDS = set(
    "select as from where and or not in order by desc asc limit group count filter coalesce round numeric text "
    "date_trunc hour is null".split()
)


@pytest.fixture(scope="module")
def state_db():
    """A throw-away Postgres database with the Loopline state tables, from the modules that own them."""
    from sqlalchemy import create_engine

    from loopline.core import serving_state
    from loopline.monitoring import monitoring_state, outcomes
    from tests.conftest import throwaway_postgres

    for url in throwaway_postgres("loopline_dash"):
        engine = create_engine(url)
        try:
            for module in (serving_state, monitoring_state, outcomes):
                module.metadata.create_all(engine)
            yield engine
        finally:
            engine.dispose()


def _grafana_macros(query: str) -> str:
    """Grafana's Postgres macros and the dashboard's variables, expanded as Grafana would."""
    query = re.sub(r"\$__timeFilter\((\w+)\)", r"\1 BETWEEN '2000-01-01T00:00:00Z' AND '2100-01-01T00:00:00Z'", query)
    query = re.sub(r"\$__timeGroupAlias\((\w+),\s*1h\)", "date_trunc('hour', \\1) AS \"time\"", query)
    # A multi-value variable in a SQL query: Grafana quotes each value and joins them with commas.
    query = query.replace("($model)", "('credit_risk', 'fraud')")
    assert "$" not in query, f"unexpanded Grafana macro or variable: {query}"
    return query


def test_lifecycle_sql_runs_against_the_real_state_tables(state_db):
    dashboard = _dashboard("loopline-lifecycle")
    with state_db.connect() as db:
        for table, columns in STATE_TABLES.items():  # the documented columns exist
            quoted = ", ".join(f'"{column.strip()}"' for column in columns.split(","))
            db.exec_driver_sql(f"SELECT {quoted} FROM {table} LIMIT 0")
        for query in _queries(dashboard, "rawSql"):
            db.exec_driver_sql(_grafana_macros(query)).fetchall()


def test_dashboard_variables_and_scrape_jobs_exist():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        variables = {v["name"] for v in dashboard["templating"]["list"]}
        for query in _queries(dashboard, "expr") + _queries(dashboard, "rawSql"):
            used = set(re.findall(r"\$(?!__)(\w+)", query)) | set(re.findall(r"\$\{(\w+)(?::\w+)?\}", query))
            assert used <= variables, f"{path.name}: undefined dashboard variables {used - variables}"
            assert set(re.findall(r'job="([^"]+)"', query)) <= jobs, f"{path.name}: unknown scrape job in {query}"


# --- one dashboard for many models -------------------------------------------------------------------

PLATFORM_ROW = "Airflow platform"  # the row of panels every model shares (scheduler, import errors, executor)
MODEL_DAGS = "${model:regex}_(" + "|".join(STATIONS) + ")"


def _panels_by_row(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    row, out = "", []
    for panel in sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])):
        if panel["type"] == "row":
            row = panel["title"]
        else:
            out.append((row, panel))
    return out


def test_both_dashboards_pick_models_by_the_prometheus_model_label():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (service_job,) = [job for job in config["scrape_configs"] if job["job_name"] == "loopline-service"]
    for static in service_job["static_configs"]:  # every service target says which model it serves
        assert static["labels"]["model"], static
    for path in DASHBOARDS:
        variables = {v["name"]: v for v in json.loads(path.read_text())["templating"]["list"]}
        model = variables["model"]
        assert model["type"] == "query" and model["datasource"]["uid"] == "prometheus", path.name
        assert model["definition"] == 'label_values(up{job="loopline-service"}, model)', path.name
        assert model["multi"] and model["includeAll"], path.name
    versions = {v["name"]: v for v in _dashboard("loopline-serving")["templating"]["list"]}["model_version"]
    assert 'model=~"$model"' in versions["definition"]  # the versions of the models picked
    # SQL panels need "All" to be the list of values (quoted by Grafana), not a regex
    assert "allValue" not in {v["name"]: v for v in _dashboard("loopline-lifecycle")["templating"]["list"]}["model"]


def test_every_panel_filters_on_the_model_variable():
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        annotations = [a["target"]["rawSql"] for a in dashboard["annotations"]["list"]]
        assert all("model IN ($model)" in q for q in annotations), path.name
        for row, panel in _panels_by_row(dashboard):
            queries = [t.get("expr") or t.get("rawSql") for t in panel["targets"]]
            if row.startswith(PLATFORM_ROW):
                assert not any("$model" in q or "${model" in q for q in queries), panel["title"]
                continue
            for query in queries:
                if "rawSql" in json.dumps(panel["targets"]):
                    assert "model IN ($model)" in query, f"{path.name}: {panel['title']}: {query}"
                elif "airflow_" in query:
                    assert f'dag_id=~"{MODEL_DAGS}"' in query, f"{path.name}: {panel['title']}: {query}"
                else:
                    selectors = re.findall(r"\b(?:loopline_[a-z_]+|up)\{([^}]*)\}", query)
                    bare = re.findall(r"\b(?:loopline_[a-z_]+|up)\b(?!\{)(?![a-z_])", query)
                    assert selectors and not bare, f"{path.name}: {panel['title']}: {query}"
                    assert all('model=~"$model"' in s for s in selectors), f"{path.name}: {panel['title']}: {query}"
    platform = [
        p["title"] for row, p in _panels_by_row(_dashboard("loopline-lifecycle")) if row.startswith(PLATFORM_ROW)
    ]
    assert platform == ["Scheduler heartbeats / min", "DAG import errors", "Celery executor: queued / running tasks"]


def test_series_of_different_models_stay_apart():
    exprs = _queries(_dashboard("loopline-serving"), "expr")
    for expr in exprs:
        for group in re.findall(r"by \(([^)]*)\)", expr):
            if "model_version" in group:
                assert "model" in [g.strip() for g in group.split(",")], expr
    legends = [f for f in _walk(_dashboard("loopline-serving"), "legendFormat") if "model_version" in f]
    assert legends and all("{{model}}" in f for f in legends)
