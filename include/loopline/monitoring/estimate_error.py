"""How right was the label-free estimate? Each check's estimate against the quality its window's labels show.

A drift check estimates the champion's quality on its window before any label exists
(``loopline.monitoring.impact``). Labels arrive later (``loopline.monitoring.outcomes``); every
later check looks back (``window_realised``): over the predictions the champion logged in each
earlier check's window whose outcome has arrived, it computes the task's live metric — once at
least ``min_labelled`` are known — and stores it beside the estimate with the error
(estimate − realised) in the check's ``impact`` record. It is recomputed while more of that
window's labels arrive. ``history`` is what the plugin page and the drift report show: estimate,
realised and error per window, and the mean absolute error over the last windows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from loopline.core.clock import as_utc
from loopline.core.spec import ModelSpec
from loopline.core.tasks import task_of

LOOK_BACK = 50  # checks re-examined for newly arrived labels
HISTORY = 10  # windows shown, and the mean absolute error's span


def realised_in_window(
    labelled: pd.DataFrame, version: str | None, start: datetime, end: datetime, spec: ModelSpec, min_labelled: int
) -> tuple[float, int] | None:
    """The live metric of ``version``'s predictions logged in [start, end) whose outcome is known, and their count.

    ``labelled``: logged answers with their outcome (columns logged_at as epoch seconds, score, decision,
    outcome, model_version). None while fewer than ``min_labelled`` are known or the metric is undefined.
    """
    if labelled.empty or version is None:
        return None
    at = labelled["logged_at"].astype(float)
    rows = labelled[
        (labelled["model_version"].astype(str) == str(version))
        & (at >= as_utc(start).timestamp())
        & (at < as_utc(end).timestamp())
        & labelled["outcome"].notna()
    ]
    if len(rows) < min_labelled:
        return None
    value = task_of(spec).live_quality(rows, spec)
    if value is None or not math.isfinite(value):
        return None
    return float(value), len(rows)


def window_start(check: Any, window_hours: float) -> datetime:
    """Where a check's window began: recorded with it, else (older checks) ``window_hours`` before it."""
    recorded = (check.impact or {}).get("window_start")
    if recorded:
        return as_utc(datetime.fromisoformat(recorded))
    return as_utc(check.at) - timedelta(hours=window_hours)


def with_realised(impact: dict[str, Any], realised: tuple[float, int] | None) -> dict[str, Any]:
    """``impact`` with the window's realised metric, its label count and the estimate's error (if both known)."""
    if realised is None:
        return impact
    value, n = realised
    estimated = impact.get("estimated")
    error = None if estimated is None else float(estimated) - value
    return {**impact, "window_realised": value, "window_realised_n": n, "estimate_error": error}


def window_realised(
    checks: Iterable[Any], labelled: pd.DataFrame, spec: ModelSpec, window_hours: float, min_labelled: int
) -> dict[int, dict[str, Any]]:
    """The checks whose window now has (more) labels: check id → its updated ``impact`` record.

    Only checks with an estimate count; a check whose realised value was computed on as many labels
    as are known now is left alone.
    """
    updates = {}
    for check in checks:
        impact = check.impact or {}
        if impact.get("estimated") is None:
            continue
        realised = realised_in_window(
            labelled, check.champion_version, window_start(check, window_hours), check.at, spec, min_labelled
        )
        if realised is None or realised[1] == impact.get("window_realised_n"):
            continue
        updates[check.id] = with_realised(impact, realised)
    return updates


def history(checks: Iterable[Any], last: int = HISTORY) -> dict[str, Any]:
    """The last ``last`` windows with an estimate (newest first): estimated, realised, error; and their MAE.

    ``checks``: drift checks newest first (``MonitoringState.latest``) or their ``to_dict()``.
    """
    rows = []
    for check in checks:
        record = check if isinstance(check, dict) else check.to_dict()
        impact = record.get("impact") or {}
        if impact.get("estimated") is None:
            continue
        rows.append(
            {
                "at": record.get("at"),
                "champion_version": record.get("champion_version"),
                "metric": impact.get("metric"),
                "estimated": impact.get("estimated"),
                "realised": impact.get("window_realised"),
                "labelled": impact.get("window_realised_n"),
                "error": impact.get("estimate_error"),
            }
        )
        if len(rows) == last:
            break
    errors = [abs(r["error"]) for r in rows if r["error"] is not None]
    return {
        "windows": rows,
        "mean_absolute_error": sum(errors) / len(errors) if errors else None,
        "judged": len(errors),
        "last": last,
    }
