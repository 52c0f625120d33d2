"""Who is behind a change, for the audit trail: the person who pressed Trigger, or what started the run."""

from __future__ import annotations

# What started a run no person triggered (Airflow 3 ``DagRunType`` values).
AUTOMATIC_STARTERS = {
    "scheduled": "scheduler",
    "asset_triggered": "asset",
    "asset_materialization": "asset",
    "backfill": "backfill",
    "operator_triggered": "another DAG",
}


def run_type_name(run_type: object) -> str:
    """``"scheduled"``, ``"manual"``, ...: a run type's value, whichever enum carries it.

    A task run by a Celery worker gets the Task SDK's generated ``DagRunType``, a ``str`` enum whose ``str()``
    is ``"DagRunType.SCHEDULED"`` (``dag.test()`` gets Airflow's own, whose ``str()`` is the value).
    """
    return str(getattr(run_type, "value", run_type))


def run_starter(run_type: object, triggering_user_name: str | None) -> str:
    """The Airflow user who triggered the run; else "scheduler", "asset", ... by run type."""
    user = (triggering_user_name or "").strip()
    if user:
        return user
    return AUTOMATIC_STARTERS.get(run_type_name(run_type), "unknown user")


def is_automatic(run_type: object) -> bool:
    """True for runs the scheduler started on its own (a schedule or an asset event), not a person."""
    return run_type_name(run_type) in ("scheduled", "asset_triggered", "asset_materialization")


def actor(dag_id: str, run_id: str, run_type: object, triggering_user_name: str | None) -> str:
    """``alice (dag:<model>_rollout_control/manual__2026-...)``: who, next to the DAG run."""
    return f"{run_starter(run_type, triggering_user_name)} (dag:{dag_id}/{run_id})"
