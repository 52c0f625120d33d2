"""In-process DAG runs (``dag.test()``, ``airflow dags test``) whose process is gone: marked failed.

A scheduler fails the task instances it queued once their heartbeat stops
(``[scheduler] task_instance_heartbeat_timeout``, set in ``settings.SCHEDULER_ENV``) and resets
those of a dead scheduler. A run made by ``dag.test()`` has no scheduler: its tasks run inside
the test process, are queued by no scheduler job, and Airflow never looks at them again, so a
killed ``make demo`` or test leaves the run "running" in ``airflow dags list-runs`` for ever.

Such a run (``triggered_by = test``) records the pid and host of its process on every task it
started. When that host is this machine and none of those processes is alive (or the pid now
belongs to a younger process), the run is dead: its active tasks become ``failed``, its pending
ones ``skipped`` (what the UI's "mark failed" does) and the run ``failed``. Runs on other hosts
are left alone (their processes cannot be checked from here); a run that never started a task is
judged only after ``grace_seconds``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from loopline.core.settings import Settings


@dataclass(frozen=True)
class DeadRun:
    dag_id: str
    run_id: str
    reason: str

    def line(self) -> str:
        return f"{self.dag_id} {self.run_id}: {self.reason}"


def _alive(pid: int, started: datetime | None) -> bool:
    """Is ``pid`` the process that started the task at ``started`` (not a later one with a reused pid)?"""
    import psutil

    try:
        created = datetime.fromtimestamp(psutil.Process(pid).create_time(), UTC)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return started is None or created <= started + timedelta(seconds=2)


def _hosts() -> set[str]:
    from airflow.utils.net import get_hostname

    return {get_hostname(), socket.gethostname(), socket.getfqdn()}


def _verdict(tis, hosts: set[str], started: datetime | None, now: datetime, grace: timedelta) -> str | None:
    """Why the run is dead, or None when it may be alive (or cannot be judged from here)."""
    processes = {(ti.hostname, ti.pid): ti.start_date for ti in tis if ti.pid}
    if not processes:
        if started is not None and now - started > grace:
            return f"no task started in {grace.total_seconds():.0f} s and no process recorded"
        return None
    if any(host not in hosts for host, _ in processes):
        return None
    if any(_alive(pid, when) for (_, pid), when in processes.items()):
        return None
    return f"process {', '.join(str(pid) for _, pid in sorted(processes))} on this host is gone"


def fail_dead_test_runs(settings: Settings, grace_seconds: float = 300.0, dry_run: bool = False) -> list[DeadRun]:
    """Mark failed every in-process run whose process is gone; returns what was (or would be) marked."""
    for key, value in settings.as_env().items():  # Airflow reads its DB from the environment at import
        if key.startswith("AIRFLOW"):
            os.environ.setdefault(key, value)
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, State, TaskInstanceState
    from airflow.utils.types import DagRunTriggeredByType
    from sqlalchemy import select

    active = {TaskInstanceState.RUNNING, TaskInstanceState.DEFERRED, TaskInstanceState.UP_FOR_RESCHEDULE}
    now, grace, hosts = datetime.now(UTC), timedelta(seconds=grace_seconds), _hosts()
    dead: list[DeadRun] = []
    with create_session() as session:
        runs = session.scalars(
            select(DagRun).where(DagRun.state == DagRunState.RUNNING, DagRun.triggered_by == DagRunTriggeredByType.TEST)
        ).all()
        for run in runs:
            tis = session.scalars(
                select(TaskInstance).where(TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id)
            ).all()
            reason = _verdict(tis, hosts, run.start_date, now, grace)
            if reason is None:
                continue
            dead.append(DeadRun(run.dag_id, run.run_id, reason))
            if dry_run:
                continue
            for ti in tis:
                if ti.state in State.finished:
                    continue
                ti.state = TaskInstanceState.FAILED if ti.state in active else TaskInstanceState.SKIPPED
                ti.end_date = now
            run.set_state(DagRunState.FAILED)
            run.end_date = now
        session.commit()
    return dead
