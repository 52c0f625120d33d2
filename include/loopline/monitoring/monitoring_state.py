"""The drift checks' history (SQLAlchemy; the serving state's database: SQLite embedded, Postgres in the stack).

One row per drift check: when, which model and champion, how many live rows, the
verdict, whether it was confirmed and whether it triggered a retrain (and why or why
not), the headline numbers, where the HTML report lives, the per-feature table and the
DAG run. The storm guard (``loopline.monitoring.retrain_policy.decide_trigger``) reads its past triggers
from here (``triggers_since``), so retrain limits hold across DAG runs and restarts.

A check re-recorded by the same DAG run (a retried task) updates its row instead of
adding one, so a retry can never count as a second trigger.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    insert,
    select,
    update,
)

from loopline.core.clock import as_utc
from loopline.core.errors import LooplineError
from loopline.core.store_schema import add_missing_columns

# The graded verdicts (loopline.monitoring.verdicts); "drift" / "no_drift" are older checks' and stay readable.
VERDICTS = ("insufficient", "stable", "feature_drift", "output_shift", "performance_risk", "concept_drift")
_ADDED_COLUMNS = {"alerted": "BOOLEAN", "impact": "JSON"}  # after the first release: added to older stores
metadata = MetaData()  # its own: create_all only ever touches this module's table

drift_checks = Table(
    "loopline_drift_checks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("model", String(128), nullable=False, index=True),
    Column("champion_version", String(32), nullable=True),
    Column("n_rows", Integer, nullable=False),
    Column("verdict", String(32), nullable=False),
    Column("confirmed", Boolean, nullable=False),
    Column("triggered", Boolean, nullable=False),
    Column("trigger_reason", String(2000), nullable=False, default=""),
    Column("drift_share", Float, nullable=True),
    Column("score_psi", Float, nullable=True),
    Column("report_uri", String(1024), nullable=True),
    Column("features", JSON, nullable=False),
    Column("dag_run", String(256), nullable=True),
    Column("alerted", Boolean, nullable=True),  # this check sent an alert (once per episode, then reminders)
    Column("impact", JSON, nullable=True),  # estimated vs realised quality, the answers' mix
    UniqueConstraint("model", "dag_run", name="uq_loopline_drift_checks_model_dag_run"),
)


class MonitoringStateError(LooplineError, ValueError):
    """A drift check record is invalid (unknown verdict, negative row count, a trigger without confirmation)."""


@dataclass(frozen=True)
class DriftCheck:
    id: int
    at: datetime
    model: str
    champion_version: str | None
    n_rows: int
    verdict: str
    confirmed: bool
    triggered: bool
    trigger_reason: str
    drift_share: float | None
    score_psi: float | None
    report_uri: str | None
    features: Any
    dag_run: str | None
    alerted: bool = False
    impact: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "at": self.at.isoformat()}

    def line(self) -> str:
        share = f" share {self.drift_share:.2f}" if self.drift_share is not None else ""
        score = f" score PSI {self.score_psi:.3f}" if self.score_psi is not None else ""
        trigger = "TRIGGERED" if self.triggered else "no trigger"
        alert = " ALERTED" if self.alerted else ""
        return (
            f"{self.at:%Y-%m-%d %H:%M} #{self.id} v{self.champion_version} {self.verdict:<16} n={self.n_rows}"
            f"{share}{score}{alert} {trigger}: {self.trigger_reason}"
        )


def _row(row: Any) -> DriftCheck:
    values = dict(row)
    values["at"] = as_utc(values["at"])
    values["confirmed"], values["triggered"] = bool(values["confirmed"]), bool(values["triggered"])
    values["alerted"] = bool(values.get("alerted"))
    return DriftCheck(**values)


class MonitoringState:
    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url, future=True, pool_pre_ping=True)
        metadata.create_all(self.engine)  # checkfirst: idempotent, safe from every task and process
        add_missing_columns(self.engine, {drift_checks.name: _ADDED_COLUMNS})

    def record(
        self,
        *,
        at: datetime,
        model: str,
        champion_version: str | None,
        n_rows: int,
        verdict: str,
        confirmed: bool,
        triggered: bool,
        trigger_reason: str = "",
        drift_share: float | None = None,
        score_psi: float | None = None,
        report_uri: str | None = None,
        features: Any = None,
        dag_run: str | None = None,
        alerted: bool = False,
        impact: Any = None,
    ) -> DriftCheck:
        """Store one check (``at`` is the check's own time, e.g. its data interval's end, not the wall clock).

        The same (model, dag_run) again updates the earlier row: a retried task records once.
        """
        if verdict not in VERDICTS:
            raise MonitoringStateError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
        if n_rows < 0:
            raise MonitoringStateError(f"n_rows must be >= 0, got {n_rows}")
        if triggered and not confirmed:
            raise MonitoringStateError("a retrain can only be triggered by a confirmed drift")
        values = {
            "at": as_utc(at),
            "model": model,
            "champion_version": None if champion_version is None else str(champion_version),
            "n_rows": int(n_rows),
            "verdict": verdict,
            "confirmed": bool(confirmed),
            "triggered": bool(triggered),
            "trigger_reason": trigger_reason or "",
            "drift_share": None if drift_share is None else float(drift_share),
            "score_psi": None if score_psi is None else float(score_psi),
            "report_uri": report_uri,
            "features": json.loads(json.dumps(features if features is not None else [], default=str)),
            "dag_run": dag_run,
            "alerted": bool(alerted),
            "impact": None if impact is None else json.loads(json.dumps(impact, default=str)),
        }
        with self.engine.begin() as conn:
            existing = None
            if dag_run is not None:
                existing = conn.execute(
                    select(drift_checks.c.id).where(drift_checks.c.model == model, drift_checks.c.dag_run == dag_run)
                ).scalar()
            if existing is None:
                row_id = conn.execute(insert(drift_checks).values(**values)).inserted_primary_key[0]
            else:
                conn.execute(update(drift_checks).where(drift_checks.c.id == existing).values(**values))
                row_id = existing
            row = conn.execute(select(drift_checks).where(drift_checks.c.id == row_id)).mappings().one()
        return _row(row)

    def update_impact(self, check_id: int, impact: Any) -> None:
        """Replace one check's impact record (its window's realised quality arrived with the labels)."""
        value = json.loads(json.dumps(impact, default=str))
        with self.engine.begin() as conn:
            conn.execute(update(drift_checks).where(drift_checks.c.id == int(check_id)).values(impact=value))

    def latest(self, model: str, limit: int = 20) -> list[DriftCheck]:
        """The most recent checks of a model, newest first (by check time, then insertion)."""
        query = (
            select(drift_checks)
            .where(drift_checks.c.model == model)
            .order_by(drift_checks.c.at.desc(), drift_checks.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_row(row) for row in rows]

    def triggers_since(self, model: str, since: datetime) -> list[datetime]:
        """Times (UTC, oldest first) of the checks at or after ``since`` that triggered a retrain."""
        query = (
            select(drift_checks.c.at)
            .where(
                drift_checks.c.model == model, drift_checks.c.triggered.is_(True), drift_checks.c.at >= as_utc(since)
            )
            .order_by(drift_checks.c.at)
        )
        with self.engine.connect() as conn:
            return [as_utc(at) for at in conn.execute(query).scalars().all()]
