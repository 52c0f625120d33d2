"""Times in Loopline's stores are UTC; SQLite hands timezone-aware columns back naive."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(at: datetime) -> datetime:
    """``at`` in UTC as a plain ``datetime``; a naive datetime is taken to be UTC already.

    Plain, not a subclass: Airflow hands DAG code pendulum DateTimes (``data_interval_end``), and a
    pendulum DateTime moved to the standard library's UTC loses it in arithmetic (``- timedelta(days=7)``
    gives a naive time), which then cannot be compared with the store's times.
    """
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return datetime(at.year, at.month, at.day, at.hour, at.minute, at.second, at.microsecond, tzinfo=UTC)
