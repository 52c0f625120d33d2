"""The retrain policy: may a confirmed drift start a retrain now (the guard against retrain storms)?"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from loopline.core.clock import as_utc
from loopline.core.spec import DriftPolicy
from loopline.monitoring.detection import jsonable


@dataclass(frozen=True)
class TriggerDecision:
    trigger: bool
    reason: str
    next_allowed: datetime | None = None  # when a confirmed drift could trigger again (None: now, or n/a)

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))


def _fmt_at(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M} UTC"


def decide_trigger(
    confirmed: bool, now: datetime, past_triggers: Sequence[datetime], policy: DriftPolicy
) -> TriggerDecision:
    """Whether a (confirmed) drift may start a retrain now.

    Not within ``cooldown_hours`` after the last trigger, and at most ``max_retrains_per_week``
    triggers in any trailing 7 days (the window (now - 7 days, now], this one included).
    Triggers after ``now`` (a re-run of an older interval) are ignored: ``now`` is the check's
    own time, e.g. the end of its data interval.
    """
    if not confirmed:
        return TriggerDecision(False, "no confirmed drift: nothing to retrain")
    now = as_utc(now)
    past = sorted(t for t in map(as_utc, past_triggers) if t <= now)
    week = timedelta(days=7)
    if policy.max_retrains_per_week == 0:
        return TriggerDecision(False, "drift confirmed but drift-triggered retraining is off (max_retrains_per_week 0)")
    if past and now - past[-1] < timedelta(hours=policy.cooldown_hours):
        until = past[-1] + timedelta(hours=policy.cooldown_hours)
        return TriggerDecision(
            False,
            f"drift confirmed but in cooldown until {_fmt_at(until)} (last retrain trigger {_fmt_at(past[-1])},"
            f" cooldown {policy.cooldown_hours:g} h)",
            until,
        )
    recent = [t for t in past if t > now - week]
    if len(recent) >= policy.max_retrains_per_week:
        # The slot frees up when enough of the recent triggers leave the 7-day window.
        until = recent[len(recent) - policy.max_retrains_per_week] + week
        return TriggerDecision(
            False,
            f"drift confirmed but {len(recent)} retrains were already triggered in the last 7 days"
            f" (at most {policy.max_retrains_per_week}); next possible at {_fmt_at(until)}",
            until,
        )
    return TriggerDecision(
        True,
        f"drift confirmed: triggering a retrain ({len(recent) + 1} of at most {policy.max_retrains_per_week}"
        f" in the last 7 days; {f'last trigger {_fmt_at(past[-1])}' if past else 'no earlier trigger'})",
    )
