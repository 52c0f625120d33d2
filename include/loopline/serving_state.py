"""What serves traffic, and the audit trail of every change to it (SQLAlchemy; SQLite or Postgres).

One row per model says which version is the champion, which (if any) is the
canary and what share of traffic the canary gets. Every change is written in the
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

from loopline.errors import LooplineError

MODES = ("canary", "bluegreen")
metadata = MetaData()

routes = Table(
    "loopline_routes",
    metadata,
    Column("model", String(128), primary_key=True),
    Column("champion_version", String(32), nullable=True),
    Column("canary_version", String(32), nullable=True),
    Column("canary_weight", Float, nullable=False, default=0.0),
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


class RoutingError(LooplineError, ValueError):
    """A requested traffic change is invalid (weight out of range, no champion, unknown mode)."""


@dataclass(frozen=True)
class Route:
    model: str
    champion_version: str | None = None
    canary_version: str | None = None
    canary_weight: float = 0.0
    mode: str = "canary"
    revision: int = 0

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
            return f"v{route.get('champion_version')}{canary}"

        return (
            f"{self.at:%Y-%m-%d %H:%M:%S} #{self.id} {self.action:<14} {fmt(self.before)} -> {fmt(self.after)}"
            f"  by {self.actor}: {self.reason}"
        )


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
    return route


class ServingState:
    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url, future=True, pool_pre_ping=True)
        metadata.create_all(self.engine)

    def route(self, model: str) -> Route:
        with self.engine.connect() as conn:
            row = conn.execute(select(routes).where(routes.c.model == model)).mappings().first()
        if row is None:
            return Route(model=model)
        return Route(**{k: row[k] for k in Route.__dataclass_fields__})

    def change(self, new: Route, action: str, actor: str, reason: str, details: dict[str, Any] | None = None) -> Route:
        """Apply a validated change and its audit record atomically; returns the stored route.

        ``new.revision`` must equal the stored revision (optimistic locking), so two
        writers can never silently overwrite each other's change.
        """
        validate_route(new)
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            current_row = conn.execute(select(routes).where(routes.c.model == new.model)).mappings().first()
            current = Route(**{k: current_row[k] for k in Route.__dataclass_fields__}) if current_row else None
            stored_revision = current.revision if current else 0
            if new.revision != stored_revision:
                raise RoutingError(
                    f"route of {new.model} changed meanwhile (revision {stored_revision}, expected {new.revision})"
                )
            values = {**new.to_dict(), "revision": stored_revision + 1, "updated_at": now}
            if current is None:
                conn.execute(insert(routes).values(**values))
            else:
                conn.execute(update(routes).where(routes.c.model == new.model).values(**values))
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

    def trail(self, model: str, limit: int = 50) -> list[AuditRecord]:
        query = select(audit).where(audit.c.model == model).order_by(audit.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [AuditRecord(**dict(row)) for row in rows]
