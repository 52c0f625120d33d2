"""Additive schema upgrades for Loopline's own SQLAlchemy stores (serving state, drift checks)."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Engine


def add_missing_columns(engine: Engine, added: Mapping[str, Mapping[str, str]]) -> None:
    """Bring a store created by an earlier release up to date: add the (nullable) columns it lacks.

    ``added``: table -> {column: SQL type}. Safe to run from several processes at once.
    """
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import DBAPIError

    for table, columns in added.items():
        for name, kind in columns.items():
            if name in {c["name"] for c in inspect(engine).get_columns(table)}:
                continue
            try:
                with engine.begin() as conn:
                    conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {kind}"))
            except DBAPIError:  # another process added it first
                if name not in {c["name"] for c in inspect(engine).get_columns(table)}:
                    raise
