"""End-to-end fixtures: a migrated Airflow metadata DB and the real DAGs, run with dag.test()."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from loopline.settings import get_settings

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="session")
def airflow_db(settings):
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    from loopline.data_registry import DataRegistry

    DataRegistry(settings.data_registry, settings.dvc_remote_url).init()
    return settings


@pytest.fixture(scope="session")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert not bag.import_errors
    return bag


@pytest.fixture(scope="session")
def run_dag(dagbag):
    """Run a DAG to completion in-process; returns the DagRun. Each call is a new run."""
    counter = iter(range(1, 10_000))

    def run(dag_id: str, conf: dict | None = None, logical_date: datetime | None = None):
        dag = dagbag.get_dag(dag_id)
        when = logical_date or datetime(2026, 6, 1, tzinfo=UTC).replace(minute=next(counter))
        return dag.test(logical_date=when, run_conf=conf)

    return run


@pytest.fixture(scope="session")
def zones(settings):
    from loopline.ingest import zones_for

    return zones_for("credit_risk", get_settings())
