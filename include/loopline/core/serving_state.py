"""What serves traffic, and the audit trail of every change to it (SQLAlchemy; SQLite or Postgres).

One row per model says which version is the champion, which (if any) is the
canary and what share of traffic the canary gets, and which (if any) is the shadow:
a version that scores a copy of every request and answers none. Every change is written in the
same transaction as an audit record: who or what changed it (DAG run, user),
from what to what, and why (gate results). The serving side only reads; the
platform (DAGs, the admin CLI) writes.

The MLflow aliases stay the source of truth for *roles* (champion, challenger);
this store is the source of truth for *traffic*, which changes more often and must
be read by the service every few seconds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from loopline.core.clock import as_utc
from loopline.core.errors import LooplineError, RetryableError
from loopline.core.store_schema import add_missing_columns

MODES = ("canary", "bluegreen")
metadata = MetaData()

routes = Table(
    "loopline_routes",
    metadata,
    Column("model", String(128), primary_key=True),
    Column("champion_version", String(32), nullable=True),
    Column("canary_version", String(32), nullable=True),
    Column("canary_weight", Float, nullable=False, default=0.0),
    Column("shadow_version", String(32), nullable=True),  # scores a copy of every request, answers none
    Column("mode", String(16), nullable=False, default="canary"),
    Column("revision", Integer, nullable=False, default=0),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

audit = Table(
    "loopline_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("model", String(128), nullable=False, index=True),
    Column("action", String(64), nullable=False),
    Column("before", JSON, nullable=False),
    Column("after", JSON, nullable=False),
    Column("actor", String(256), nullable=False),
    Column("reason", String(2000), nullable=False),
    Column("details", JSON, nullable=False),
)


rollouts = Table(
    "loopline_rollouts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(128), nullable=False, index=True),
    Column("candidate_version", String(32), nullable=False),
    Column("champion_version", String(32), nullable=True),
    Column("mode", String(16), nullable=False),
    Column("status", String(16), nullable=False),  # running | succeeded | failed | aborted
    Column("step", Float, nullable=False, default=0.0),  # current canary share
    Column("phase", String(16), nullable=True),  # shadow | canary (None: not begun, or a rollout from before)
    Column("step_started_at", DateTime(timezone=True), nullable=True),
    Column("baseline", JSON, nullable=False),  # /metrics counters when the step began
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("trigger", String(256), nullable=False),  # DAG run or user that started it
    Column("gate_results", JSON, nullable=False),  # one verdict per judged step
    Column("outcome", String(2000), nullable=False, default=""),
    # The route-revision token: the revision the route had when the rollout opened, and the last
    # revision the rollout wrote itself. A rollout writes only on top of its own revision and its
    # clean-up reverts only a revision it wrote, so a person's change is never overwritten.
    Column("base_revision", Integer, nullable=True),
    Column("route_revision", Integer, nullable=True),
    Column("ended_by", String(256), nullable=True),  # the person whose manual action ended the rollout
)
ROLLOUT_STATUSES = ("running", "succeeded", "failed", "aborted")
# Columns added after the first release: created on an existing store by ServingState (additive only).
_ADDED_COLUMNS = {
    "loopline_routes": {"shadow_version": "VARCHAR(32)"},
    "loopline_rollouts": {
        "base_revision": "INTEGER", "route_revision": "INTEGER", "ended_by": "VARCHAR(256)", "phase": "VARCHAR(16)",
    },
}  # fmt: skip


class RoutingError(LooplineError, ValueError):
    """A requested traffic change is invalid (weight out of range, no champion, unknown mode)."""


class RouteConflict(RoutingError, RetryableError):
    """Another writer changed the route first (optimistic locking): a retry re-reads it and may succeed."""


class RolloutEnded(LooplineError, RuntimeError):
    """A person's manual action ended this rollout: it stops without touching the route (a skip, not a failure)."""


@dataclass(frozen=True)
class Route:
    model: str
    champion_version: str | None = None
    canary_version: str | None = None
    canary_weight: float = 0.0
    mode: str = "canary"
    revision: int = 0
    shadow_version: str | None = None  # scores a copy of every request; its answers go only to the log

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    model: str
    action: str
    before: dict[str, Any]
    after: dict[str, Any]
    actor: str
    reason: str
    details: dict[str, Any]

    def line(self) -> str:
        def fmt(route: dict[str, Any]) -> str:
            canary = (
                f" + v{route['canary_version']}@{route['canary_weight']:.0%}" if route.get("canary_version") else ""
            )
            shadow = f" + shadow v{route['shadow_version']}" if route.get("shadow_version") else ""
            return f"v{route.get('champion_version')}{canary}{shadow}"

        return (
            f"{self.at:%Y-%m-%d %H:%M:%S} #{self.id} {self.action:<14} {fmt(self.before)} -> {fmt(self.after)}"
            f"  by {self.actor}: {self.reason}"
        )


@dataclass(frozen=True)
class Rollout:
    id: int
    model: str
    candidate_version: str
    champion_version: str | None
    mode: str
    status: str
    step: float
    step_started_at: datetime | None
    baseline: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None
    trigger: str
    gate_results: list[dict[str, Any]]
    outcome: str
    base_revision: int | None = None
    route_revision: int | None = None
    ended_by: str | None = None
    phase: str | None = None  # shadow | canary: what the current step is (None: not begun)

    @property
    def expected_revision(self) -> int | None:
        """The route revision this rollout may write on top of: its own last write, else where it began."""
        return self.route_revision if self.route_revision is not None else self.base_revision

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))


def validate_route(route: Route) -> Route:
    if not 0.0 <= route.canary_weight <= 1.0:
        raise RoutingError(f"canary weight must be within [0, 1], got {route.canary_weight}")
    if route.mode not in MODES:
        raise RoutingError(f"mode must be one of {MODES}, got {route.mode!r}")
    if route.canary_weight > 0 and not route.canary_version:
        raise RoutingError("a canary weight above 0 needs a canary version")
    if route.canary_version and not route.champion_version:
        raise RoutingError("a canary needs a champion to compare with")
    if route.canary_version and route.canary_version == route.champion_version:
        raise RoutingError(f"version {route.canary_version} cannot be champion and canary at once")
    if route.shadow_version:
        if not route.champion_version:
            raise RoutingError("a shadow needs a champion whose answers it is compared with")
        if route.shadow_version == route.champion_version:
            raise RoutingError(f"version {route.shadow_version} cannot be champion and shadow at once")
        if route.canary_version:  # one candidate at a time: shadow first, then the canary steps
            raise RoutingError(f"a shadow (v{route.shadow_version}) and a canary cannot serve at once")
    return route


class ServingState:
    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url, future=True, pool_pre_ping=True)
        metadata.create_all(self.engine)
        add_missing_columns(self.engine, _ADDED_COLUMNS)

    def route(self, model: str) -> Route:
        with self.engine.connect() as conn:
            row = conn.execute(select(routes).where(routes.c.model == model)).mappings().first()
        if row is None:
            return Route(model=model)
        return Route(**{k: row[k] for k in Route.__dataclass_fields__})

    def change(
        self, new: Route, action: str, actor: str, reason: str, details: dict[str, Any] | None = None,
        owner: int | None = None,
    ) -> Route:  # fmt: skip
        """Apply a validated change and its audit record atomically; returns the stored route.

        ``new.revision`` must equal the stored revision (optimistic locking), so two
        writers can never silently overwrite each other's change. ``owner`` is the rollout
        making the change: in the same transaction its ``route_revision`` becomes the new
        revision, and the change is refused (``RolloutEnded``) if a person ended it.
        """
        validate_route(new)
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            if owner is not None:
                # First, so a concurrent manual end (a conditional UPDATE of the same row) serialises with it.
                claim = update(rollouts).where(
                    rollouts.c.id == owner, rollouts.c.ended_by.is_(None), rollouts.c.status.in_(("running", "failed"))
                )
                if conn.execute(claim.values(route_revision=new.revision + 1)).rowcount != 1:
                    raise RolloutEnded(f"rollout #{owner} was ended (by a person, or it finished); route left as is")
            current_row = conn.execute(select(routes).where(routes.c.model == new.model)).mappings().first()
            current = Route(**{k: current_row[k] for k in Route.__dataclass_fields__}) if current_row else None
            stored_revision = current.revision if current else 0
            if new.revision != stored_revision:
                raise RouteConflict(
                    f"route of {new.model} changed meanwhile (revision {stored_revision}, expected {new.revision})"
                )
            values = {**new.to_dict(), "revision": stored_revision + 1, "updated_at": now}
            # The write itself re-checks the revision: two writers that both read revision N cannot
            # both succeed (a conditional UPDATE, or the primary key for the first INSERT).
            conflict = RouteConflict(f"route of {new.model} changed meanwhile (expected revision {new.revision})")
            if current is None:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(routes).values(**values))
                except IntegrityError:
                    raise conflict from None
            else:
                guarded = routes.c.model == new.model, routes.c.revision == stored_revision
                if conn.execute(update(routes).where(*guarded).values(**values)).rowcount != 1:
                    raise conflict
            conn.execute(
                insert(audit).values(
                    at=now,
                    model=new.model,
                    action=action,
                    before=(current or Route(model=new.model)).to_dict(),
                    after={**new.to_dict(), "revision": stored_revision + 1},
                    actor=actor,
                    reason=reason,
                    details=json.loads(json.dumps(details or {}, default=str)),
                )
            )
        return self.route(new.model)

    def end_by_person(self, model: str, actor: str, reason: str) -> Rollout | None:
        """A manual action ends the running rollout of ``model`` (if any), recorded with who and why.

        A conditional update: a rollout that finished meanwhile stays as it finished. From
        here on the rollout's steps stop cleanly and its writes to the route are refused.
        """
        running = self.running_rollout(model)
        if running is None:
            return None
        values = {"status": "aborted", "ended_by": actor, "outcome": reason, "finished_at": datetime.now(UTC)}
        guarded = update(rollouts).where(rollouts.c.id == running.id, rollouts.c.status == "running")
        with self.engine.begin() as conn:
            ended = conn.execute(guarded.values(**values)).rowcount == 1
        return self.rollout(running.id) if ended else None

    def changes_since(self, model: str, since: datetime) -> list[AuditRecord]:
        """Audit records of ``model`` at or after ``since``, oldest first."""
        query = select(audit).where(audit.c.model == model, audit.c.at >= since).order_by(audit.c.id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [AuditRecord(**{**row, "at": as_utc(row["at"])}) for row in rows]

    def ended_by_people_since(self, model: str, since: datetime) -> list[Rollout]:
        """Rollouts of ``model`` a person ended at or after ``since``."""
        query = select(rollouts).where(
            rollouts.c.model == model, rollouts.c.ended_by.is_not(None), rollouts.c.finished_at >= since
        )
        with self.engine.connect() as conn:
            return [self._rollout(row) for row in conn.execute(query.order_by(rollouts.c.id)).mappings().all()]

    def trail(self, model: str, limit: int = 50) -> list[AuditRecord]:
        query = select(audit).where(audit.c.model == model).order_by(audit.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [AuditRecord(**{**row, "at": as_utc(row["at"])}) for row in rows]

    # Rollouts: one record per attempt to bring a candidate to 100%, with every step's gate results.

    def start_rollout(
        self,
        model: str,
        candidate: str,
        champion: str | None,
        mode: str,
        trigger: str,
        base_revision: int | None = None,
    ) -> Rollout:
        """A new running rollout, or the running one for the same candidate (a retried task).

        ``base_revision`` is the route revision the rollout starts from: its first change
        must be written on top of exactly that revision.
        """
        if mode not in MODES:
            raise RoutingError(f"mode must be one of {MODES}, got {mode!r}")
        running = self.running_rollout(model)
        if running is not None:
            if running.candidate_version == candidate:
                return running
            raise RoutingError(
                f"rollout #{running.id} of v{running.candidate_version} is still running; abort it first"
            )
        values = dict(
            model=model, candidate_version=candidate, champion_version=champion, mode=mode, status="running",
            step=0.0, baseline={}, started_at=datetime.now(UTC), trigger=trigger, gate_results=[], outcome="",
            base_revision=base_revision,
        )  # fmt: skip
        with self.engine.begin() as conn:
            new_id = conn.execute(insert(rollouts).values(**values)).inserted_primary_key[0]
        return self.rollout(new_id)

    def rollout(self, rollout_id: int) -> Rollout:
        with self.engine.connect() as conn:
            row = conn.execute(select(rollouts).where(rollouts.c.id == rollout_id)).mappings().first()
        if row is None:
            raise RoutingError(f"no rollout #{rollout_id}")
        return self._rollout(row)

    def running_rollout(self, model: str) -> Rollout | None:
        query = select(rollouts).where(rollouts.c.model == model, rollouts.c.status == "running")
        with self.engine.connect() as conn:
            row = conn.execute(query.order_by(rollouts.c.id.desc())).mappings().first()
        return self._rollout(row) if row else None

    def rollouts(self, model: str, limit: int = 20) -> list[Rollout]:
        query = select(rollouts).where(rollouts.c.model == model).order_by(rollouts.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [self._rollout(row) for row in conn.execute(query).mappings().all()]

    def begin_step(self, rollout_id: int, step: float, baseline: dict[str, Any], phase: str = "canary") -> Rollout:
        """A new step (``phase`` canary, at share ``step``) or the shadow phase (``phase`` shadow, step 0)."""
        values = {"step": step, "step_started_at": datetime.now(UTC), "baseline": baseline, "phase": phase}
        return self._update_rollout(rollout_id, values)

    def add_gate_result(self, rollout_id: int, result: dict[str, Any]) -> Rollout:
        current = self.rollout(rollout_id)
        results = [*current.gate_results, json.loads(json.dumps(result, default=str))]
        return self._update_rollout(rollout_id, {"gate_results": results})

    def finish_rollout(self, rollout_id: int, status: str, outcome: str) -> Rollout:
        if status not in ROLLOUT_STATUSES[1:]:
            raise RoutingError(f"a rollout finishes as one of {ROLLOUT_STATUSES[1:]}, not {status!r}")
        current = self.rollout(rollout_id)
        if current.status != "running":
            return current  # already finished: a retried task changes nothing
        values = {"status": status, "outcome": outcome, "finished_at": datetime.now(UTC)}
        return self._update_rollout(rollout_id, values)

    def _update_rollout(self, rollout_id: int, values: dict[str, Any]) -> Rollout:
        with self.engine.begin() as conn:
            conn.execute(update(rollouts).where(rollouts.c.id == rollout_id).values(**values))
        return self.rollout(rollout_id)

    @staticmethod
    def _rollout(row) -> Rollout:
        data = {k: row[k] for k in Rollout.__dataclass_fields__}
        for key in ("step_started_at", "started_at", "finished_at"):
            data[key] = as_utc(data[key]) if data[key] is not None else None
        return Rollout(**data)
