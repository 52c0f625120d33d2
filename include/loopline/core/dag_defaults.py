"""The policy every Loopline DAG shares: a fixed start date, retries for transient failures, an alert on failure."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk.definitions.retry_policy import ExceptionRetryPolicy, RetryAction, RetryRule

from loopline.core.errors import LooplineError, RetryableError
from loopline.core.notifiers import task_failure_notifier

START_DATE = datetime(2026, 1, 1)

# Airflow's own retry policy (evaluated in the worker on the real exception): a LooplineError is
# permanent (bad spec, suite, params, data version...) and fails the task at once; a RetryableError
# and anything else (network, a killed process) gets the task's retries. Given to every task through
# default_args, so no task can forget it (tests/dags checks that each has it).
PERMANENT_ERRORS = ExceptionRetryPolicy(
    rules=[
        RetryRule(exception=RetryableError, action=RetryAction.DEFAULT),
        RetryRule(
            exception=LooplineError,
            action=RetryAction.FAIL,
            reason="a LooplineError is permanent: no retry can fix it",
        ),
    ]
)


def default_args(retry_delay: timedelta = timedelta(seconds=30)) -> dict[str, Any]:
    """Two retries for transient failures, none for permanent ones (PERMANENT_ERRORS), the shared notifier."""
    return {
        "retries": 2,
        "retry_delay": retry_delay,
        "retry_policy": PERMANENT_ERRORS,
        "on_failure_callback": task_failure_notifier(),
    }


def run_actor() -> str:
    """Who made a change, for the audit trail: the user who triggered this DAG run (or "scheduler",
    "asset", ...), next to the run itself (call inside a task)."""
    from airflow.sdk import get_current_context

    from loopline.core.actor import actor

    context = get_current_context()
    dag_run = context["dag_run"]
    return actor(context["dag"].dag_id, context["run_id"], dag_run.run_type, dag_run.triggering_user_name)
