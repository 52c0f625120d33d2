"""The policy every Loopline DAG shares: a fixed start date, retries for transient failures, an alert on failure."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from loopline.notifiers import task_failure_notifier

START_DATE = datetime(2026, 1, 1)


def default_args(retry_delay: timedelta = timedelta(seconds=30)) -> dict[str, Any]:
    """Two retries (permanent Loopline errors skip them via fail_fast) and the shared failure notifier."""
    return {"retries": 2, "retry_delay": retry_delay, "on_failure_callback": task_failure_notifier()}


def run_actor() -> str:
    """Who made a change, for the audit trail: this DAG run (call inside a task)."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    return f"dag:{context['dag'].dag_id}/{context['run_id']}"
