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


def run_starter(run_type: str, triggering_user_name: str | None) -> str:
    """The Airflow user who triggered the run; else "scheduler", "asset", ... by run type."""
    user = (triggering_user_name or "").strip()
    if user:
        return user
    return AUTOMATIC_STARTERS.get(str(run_type), "unknown user")


def is_automatic(run_type: str) -> bool:
    """True for runs the scheduler started on its own (a schedule or an asset event), not a person."""
    return str(run_type) in ("scheduled", "asset_triggered", "asset_materialization")


def actor(dag_id: str, run_id: str, run_type: str, triggering_user_name: str | None) -> str:
    """``alice (dag:<model>_rollout_control/manual__2026-...)``: who, next to the DAG run."""
    return f"{run_starter(run_type, triggering_user_name)} (dag:{dag_id}/{run_id})"
