"""Feature pipeline DAGs: one per loaded view, scheduled by time or its dataset, a broken file breaks only itself."""

from __future__ import annotations

from pathlib import Path

import yaml

from loopline.core.dag_defaults import PERMANENT_ERRORS

DAGS = Path(__file__).resolve().parents[2] / "dags"
ROOT = Path(__file__).resolve().parents[2]

GOOD = """
entities:
  - {name: customer, join_key: customer_id, value_type: string}
feature_views:
  - name: customer_activity
    owner: growth
    entities: [customer]
    ttl: 2d
    schedule: "@hourly"
    source: {dataset: orders, event_time: ordered_at}
    features:
      - {name: spend_1h, agg: sum, of: amount, window: 1h}
  - name: customer_sql
    owner: growth
    entities: [customer]
    ttl: 2d
    schedule: "15 * * * *"
    source: {sql: {url_env: SHOP_DB_URL, table: orders}, event_time: ordered_at}
    features:
      - {name: orders_1d, agg: count, window: 1d}
"""
BROKEN = """
feature_views:
  - name: shop_load
    owner: ops
    entities: [customer]
    ttl: soon
    schedule: "@hourly"
    source: {dataset: orders, event_time: ordered_at}
    features:
      - {name: n_1h, agg: count, window: 1h}
"""


def _model(models_dir: Path, name: str, dataset: str, stored: list[str]) -> None:
    raw = yaml.safe_load((ROOT / "models" / "credit_risk" / "spec.yaml").read_text())
    raw["name"], raw["dataset"]["name"] = name, dataset
    raw["features"]["stored"] = stored
    (models_dir / name).mkdir(parents=True)
    (models_dir / name / "spec.yaml").write_text(yaml.safe_dump(raw))


def _bag(tmp_path: Path, monkeypatch, files: dict[str, str]):
    from airflow.dag_processing.dagbag import DagBag

    from loopline.core.settings import get_settings

    repo, models = tmp_path / "feature_repo", tmp_path / "models"
    repo.mkdir()
    models.mkdir()
    for name, text in files.items():
        (repo / name).write_text(text)
    _model(models, "orders_model", "orders", [])
    _model(models, "basket", "basket", ["customer_activity:spend_1h", "customer_sql:orders_1d"])
    monkeypatch.setenv("LOOPLINE_FEATURE_REPO", str(repo))
    monkeypatch.setenv("LOOPLINE_MODELS_DIR", str(models))
    get_settings.cache_clear()
    try:
        return DagBag(dag_folder=str(DAGS))
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_one_dag_per_view_with_its_tasks_schedule_and_outlet(tmp_path, monkeypatch):
    from airflow.sdk import AssetOrTimeSchedule

    bag = _bag(tmp_path, monkeypatch, {"growth.yaml": GOOD})
    assert bag.import_errors == {}
    activity, sql = bag.dags["feature_customer_activity"], bag.dags["feature_customer_sql"]
    for dag in (activity, sql):
        chain = ["read_source", "compute", "validate", "write_offline", "materialise", "publish"]
        assert sorted(dag.task_ids) == sorted(chain)
        for before, after in zip(chain, chain[1:], strict=False):
            assert dag.get_task(after).upstream_task_ids == {before}, dag.dag_id
        assert dag.catchup is False and dag.max_active_runs == 1 and "loopline" in dag.tags
        assert all(t.retries >= 2 and t.on_failure_callback for t in dag.tasks)
        assert all(t.retry_policy is PERMANENT_ERRORS for t in dag.tasks)  # a refused batch is not retried
        assert dag.doc_md and "quarantine" in dag.doc_md
        assert {o.uri for o in dag.get_task("publish").outlets} == {f"feast://loopline/{dag.dag_id[8:]}"}
        assert not dag.get_task("materialise").outlets  # the Asset moves only when the data did (publish)
    # A registry dataset: the view's cron, or a new version announced by the ingest of the model holding it.
    assert isinstance(activity.timetable, AssetOrTimeSchedule)
    assert activity.timetable.timetable.expression == "0 * * * *"
    assert activity.timetable.asset_condition.uri == "dvc://loopline/orders_model"
    assert sql.timetable.expression == "15 * * * *"  # a SQL table: the cron alone polls it

    # A model that reads stored features trains once its data and every view it reads have new versions.
    from airflow.sdk.definitions.asset import AssetAll

    train = bag.dags["basket_train"].timetable.asset_condition
    assert isinstance(train, AssetAll)
    assert {a.uri for a in train.objects} == {
        "dvc://loopline/basket", "feast://loopline/customer_activity", "feast://loopline/customer_sql"
    }  # fmt: skip
    assert bag.dags["orders_model_train"].timetable.asset_condition.uri == "dvc://loopline/orders_model"


def test_a_broken_file_breaks_only_its_own_views_and_is_named(tmp_path, monkeypatch):
    bag = _bag(tmp_path, monkeypatch, {"growth.yaml": GOOD, "ops.yaml": BROKEN})
    assert {d for d in bag.dag_ids if d.startswith("feature_")} == {"feature_customer_activity", "feature_customer_sql"}
    assert list(bag.import_errors) == [str(DAGS / "feature_repo.py")]
    error = bag.import_errors[str(DAGS / "feature_repo.py")]
    assert "feature_repo/ops.yaml: feature_views[0].ttl: 'soon' is not a duration" in error


def test_an_empty_feature_repo_makes_no_dag_and_no_error(tmp_path, monkeypatch):
    bag = _bag(tmp_path, monkeypatch, {})
    assert bag.import_errors == {}
    assert not [d for d in bag.dag_ids if d.startswith("feature_")]


def test_the_dag_file_imports_nothing_heavy_with_views_to_build(tmp_path):
    """Parsing the feature DAGs reads YAML only: no pandas, Feast, GE or DVC at parse time."""
    import json
    import os
    import subprocess
    import sys

    repo = tmp_path / "feature_repo"
    repo.mkdir()
    (repo / "growth.yaml").write_text(GOOD)
    heavy = ("pandas", "feast", "great_expectations", "dvc", "pyarrow", "mlflow", "lightgbm")
    code = (
        "import importlib.util, json, sys\n"
        "import airflow.sdk\n"
        f"spec = importlib.util.spec_from_file_location('dagfile', {str(DAGS / 'feature_pipelines.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "print(json.dumps({'built': len(module._views), "
        f"'heavy': [m for m in {heavy!r} if m in sys.modules]}}))\n"
    )
    env = {**os.environ, "LOOPLINE_FEATURE_REPO": str(repo)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"built": 2, "heavy": []}
