"""How fresh a feature view is: the age of its newest materialised value against the view's schedule.

A view's pipeline runs on its ``schedule`` (``feature_<view>``); each run materialises values up to its
data. A view is **stale** when its newest value in the online store is older than ``STALE_PERIODS``
schedule periods: one late run is tolerated, two missed ones are not. A view with nothing
materialised is stale too. The service exports the age as ``loopline_feature_age_seconds{view}`` and
the drift check names a stale view in its alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

STALE_PERIODS = 2
_PRESETS = {
    "@hourly": timedelta(hours=1),
    "@daily": timedelta(days=1),
    "@weekly": timedelta(weeks=1),
    "@monthly": timedelta(days=31),
    "@quarterly": timedelta(days=92),
    "@yearly": timedelta(days=366),
}


def schedule_period(schedule: str, at: datetime | None = None) -> timedelta | None:
    """The time between two runs of ``schedule`` (a preset or cron) around ``at``; None for ``@once``."""
    if schedule in _PRESETS:
        return _PRESETS[schedule]
    if schedule.startswith("@"):
        return None
    from croniter import croniter

    it = croniter(schedule, at or datetime(2026, 1, 5, tzinfo=UTC))  # a fixed Monday: the same answer each time
    first = it.get_next(datetime)
    return it.get_next(datetime) - first


@dataclass(frozen=True)
class Freshness:
    view: str
    newest: datetime | None  # event time of the newest materialised value (None: nothing materialised)
    age_seconds: float | None
    period_seconds: float | None  # the schedule's period (None: @once, never stale by age)
    stale: bool

    def text(self) -> str:
        dag = f"feature_{self.view}"
        if self.newest is None:
            return f"feature view {self.view} has nothing materialised in the online store: look at DAG {dag}"
        period = f"{self.period_seconds / 3600:g} h" if self.period_seconds else "once"
        return (
            f"feature view {self.view}: newest value {self.age_seconds / 3600:.1f} h old, schedule every {period}"
            + (f": stale, look at DAG {dag}" if self.stale else "")
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "view": self.view,
            "newest": self.newest.isoformat() if self.newest else None,
            "age_seconds": self.age_seconds,
            "period_seconds": self.period_seconds,
            "stale": self.stale,
        }


def judge(view: str, schedule: str, newest: datetime | None, now: datetime) -> Freshness:
    """``view``'s freshness at ``now`` from the event time of its newest materialised value."""
    period = schedule_period(schedule, now)
    if newest is None:
        return Freshness(view, None, None, period.total_seconds() if period else None, True)
    if newest.tzinfo is None:
        newest = newest.replace(tzinfo=UTC)
    age = max((now - newest).total_seconds(), 0.0)
    stale = period is not None and age > STALE_PERIODS * period.total_seconds()
    return Freshness(view, newest, age, period.total_seconds() if period else None, stale)


def view_freshness(store: Any, defs: Any, views: list[str], now: datetime) -> list[Freshness]:
    """Each of ``views``' freshness, read from the store (``FeatureStore.freshness``)."""
    return [judge(view, defs.views[view].schedule, store.freshness(view), now) for view in views]
