"""Failure handling in real runs: permanent errors are not retried, killed in-process runs end as failed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime

import pytest

from loopline.core.settings import get_settings

pytestmark = pytest.mark.slow


def _tries(dag_run) -> dict[str, tuple[str, int]]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id)
        ).all()
        return {ti.task_id: (str(ti.state), ti.try_number) for ti in tis}


def _child(tmp_path, dag_file: str, dag_id: str, logical_date: datetime) -> subprocess.Popen:
    """dag.test() of a DAG file in a child process, as `airflow dags test` runs it.

    dag.test() only runs DAGs it can serialize from a DAG bundle: the file goes into a bundle of its
    own, configured for the child only, so the project's dags/ folder stays as it is.
    """
    import json

    folder = tmp_path / "bundle"
    folder.mkdir(exist_ok=True)
    (folder / f"{dag_id}.py").write_text(dag_file)
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    bundles = [
        {"name": "dags-folder", "classpath": local, "kwargs": {}},
        {"name": f"test-{dag_id}", "classpath": local, "kwargs": {"path": str(folder), "refresh_interval": 0}},
    ]
    env = {**os.environ, "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles)}
    runner = textwrap.dedent(
        f"""
        from datetime import datetime
        from airflow.dag_processing.dagbag import DagBag
        DagBag({str(folder)!r}).get_dag({dag_id!r}).test(logical_date=datetime.fromisoformat({logical_date.isoformat()!r}))
        """
    )
    return subprocess.Popen([sys.executable, "-c", runner], env=env, start_new_session=True)


def _run_of(dag_id: str):
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id)).one_or_none()
        if run is not None:
            session.expunge(run)
        return run


PERMANENT_DAG = """
from datetime import timedelta

from airflow.sdk import dag, task

from loopline.core.dag_defaults import START_DATE, default_args
from loopline.core.spec import SpecError


@dag(schedule=None, start_date=START_DATE, catchup=False, default_args=default_args(retry_delay=timedelta(0)))
def loopline_test_permanent_errors():
    @task
    def permanent() -> None:
        raise SpecError("models/x/spec.yaml: dataset.entity_id is missing")

    @task
    def transient() -> None:
        raise OSError("connection reset")

    permanent()
    transient()


loopline_test_permanent_errors()
"""


def test_a_loopline_error_fails_at_once_other_errors_use_their_retries(airflow_db, tmp_path):
    """Two tasks with the shared default_args (2 retries): a SpecError is tried once, an OSError three times."""
    child = _child(tmp_path, PERMANENT_DAG, "loopline_test_permanent_errors", datetime(2026, 6, 2, tzinfo=UTC))
    assert child.wait(timeout=300) == 0
    run = _run_of("loopline_test_permanent_errors")
    assert str(run.state) == "failed"
    assert _tries(run) == {"permanent": ("failed", 1), "transient": ("failed", 3)}


DAG_FILE = """
from airflow.sdk import dag, task
from loopline.core.dag_defaults import START_DATE, default_args


@dag(schedule=None, start_date=START_DATE, catchup=False, default_args=default_args())
def loopline_test_killed():
    @task
    def long_task(marker: str) -> None:
        import pathlib, time

        pathlib.Path(marker).write_text("running")
        time.sleep(600)

    @task
    def after() -> None:
        pass

    long_task({marker!r}) >> after()


loopline_test_killed()
"""


def test_a_killed_in_process_run_is_marked_failed_a_live_one_is_not(airflow_db, tmp_path):
    """`airflow dags test`/dag.test() in a child process, killed with SIGKILL mid-task: the run stays
    'running' (no scheduler ever looks at it) until fail_dead_test_runs finds its process gone."""
    from loopline.ops.dead_runs import fail_dead_test_runs

    marker = tmp_path / "running"
    child = _child(
        tmp_path, DAG_FILE.format(marker=str(marker)), "loopline_test_killed", datetime(2026, 6, 3, tzinfo=UTC)
    )
    try:
        deadline = time.monotonic() + 120
        while not (marker.exists() and _run_of("loopline_test_killed") is not None):  # started and committed
            assert child.poll() is None, "the child run ended before its task started"
            assert time.monotonic() < deadline, "the task never started"
            time.sleep(0.5)
        settings = get_settings()
        alive = fail_dead_test_runs(settings, grace_seconds=0)
        assert "loopline_test_killed" not in {r.dag_id for r in alive}  # its process still runs
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # the child leads its own session: nothing of it survives
        child.wait(timeout=30)

    def state() -> tuple[str, dict]:
        run = _run_of("loopline_test_killed")
        return str(run.state), _tries(run)

    assert state()[0] == "running"  # what `airflow dags list-runs` showed for ever before
    dry = fail_dead_test_runs(settings, grace_seconds=0, dry_run=True)
    assert [r.dag_id for r in dry if r.dag_id == "loopline_test_killed"] and state()[0] == "running"
    dead = [r for r in fail_dead_test_runs(settings, grace_seconds=0) if r.dag_id == "loopline_test_killed"]
    assert len(dead) == 1 and "is gone" in dead[0].reason, dead
    run_state, tasks = state()
    assert run_state == "failed"
    assert tasks["long_task"][0] == "failed" and tasks["after"][0] == "skipped"
    assert not [r for r in fail_dead_test_runs(settings, grace_seconds=0) if r.dag_id == "loopline_test_killed"]
