"""End-to-end fixtures: a migrated Airflow metadata DB and the real DAGs, run with dag.test()."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from loopline.core.settings import get_settings
from loopline.serving.bento_server import BentoServer, free_port  # noqa: F401 (the e2e modules import them from here)

DAGS = Path(__file__).resolve().parents[2] / "dags"


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        _Receiver.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def webhook():
    """A local chat-webhook receiver (the chat service is outside the machine); alerts land in .received."""
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ["LOOPLINE_NOTIFY_WEBHOOK_URL"] = f"http://127.0.0.1:{server.server_port}/hook"
    os.environ["LOOPLINE_NOTIFY_WEBHOOK_KIND"] = "generic"
    get_settings.cache_clear()
    yield _Receiver.received
    server.shutdown()


# The e2e modules build on each other's state (spine → ship → watch); run them in this order.
# test_failures first: its child processes must share the session's Airflow DB, before later modules
# have reconfigured this process's Airflow engine.
MODULE_ORDER = [
    "test_failures.py", "test_spine.py", "test_rollout.py", "test_drift.py", "test_celery.py", "test_privacy.py",
]  # fmt: skip


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.name
        return MODULE_ORDER.index(name) if name in MODULE_ORDER else len(MODULE_ORDER)

    items.sort(key=lambda item: (item.path.parent.name == "e2e", rank(item) if item.path.parent.name == "e2e" else 0))


@pytest.fixture(scope="session")
def models_dir(settings):
    """The project's model specs with rollout timings cut from minutes to seconds (nothing else changes).

    Without the shadow phase: these modules judge the canary steps' gates (bad challengers must
    reach a canary step to fail there); test_shadow.py runs the shadow phase in a line of its own.
    """
    from loopline.ops.simulate import compressed_models_dir

    dest = compressed_models_dir(settings, settings.home / "models", shadow=False)
    os.environ["LOOPLINE_MODELS_DIR"] = str(dest)
    get_settings.cache_clear()
    return dest


@pytest.fixture(scope="session")
def airflow_db(settings, webhook, models_dir):
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    from loopline.ingestion.data_registry import DataRegistry

    DataRegistry(settings.data_registry, settings.dvc_remote_url).init()
    return get_settings()


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
    from loopline.ingestion.ingest import zones_for

    return zones_for("credit_risk", get_settings())
