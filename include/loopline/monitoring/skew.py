"""Training/serving skew and freshness of a model's stored features: a channel of the drift check.

**Skew.** The service logs each stored value it served (``<view>__<feature>``) with the row's time
and join keys (``loopline.serving.bento_service``). For a sample of those rows (the newest
``monitoring.skew_sample`` of the window), this module asks the offline store for the point-in-time
value of the same key at the same time (``FeatureStore.training_set``: what training would have
joined) and counts, per feature, the share of rows whose two values differ. Above
``monitoring.max_feature_skew`` the model is scored on values it was not trained on: the alert
names the view, the feature and the pipeline DAG that writes it (``feature_<view>``), e.g.::

    ALERT skew: card_activity__spend_1h differs from the offline value in 23% of 500 served rows
    (limit 1%): look at DAG feature_card_activity

Rows scored as missing (``stored_missing``) are left out: the service did not serve a value there.
A view keyed on the model's entity id is not compared: the log keeps only the id's pseudonym,
never the id, so its offline value cannot be looked up (said once in the check's lines).

**Freshness.** Each view's newest materialised value against its schedule
(``loopline.features.freshness``); a stale view is named in the same alert.

Like refusals, this channel alerts but never retrains: a new model does not fix a pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from loopline.core.clock import as_utc
from loopline.core.spec import ModelSpec
from loopline.features.freshness import Freshness

MISSING_COLUMN = "stored_missing"  # the prediction log's column (as serving.bento_service writes it)


@dataclass(frozen=True)
class FeatureSkew:
    column: str  # "<view>__<feature>"
    compared: int  # served rows compared
    differ: int  # of those, rows whose served value is not the offline point-in-time value

    @property
    def view(self) -> str:
        return self.column.split("__", 1)[0]

    @property
    def feature(self) -> str:
        return self.column.split("__", 1)[1]

    @property
    def share(self) -> float:
        return self.differ / self.compared if self.compared else 0.0

    def text(self, limit: float) -> str:
        return (
            f"{self.column} differs from the offline value in {self.share:.0%} of {self.compared:,} served rows"
            f" (limit {limit:.0%}): look at DAG feature_{self.view}"
        )


@dataclass(frozen=True)
class StoreCheck:
    limit: float
    skew: list[FeatureSkew] = field(default_factory=list)
    freshness: list[Freshness] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be checked, and why

    @property
    def skewed(self) -> list[FeatureSkew]:
        return [s for s in self.skew if s.compared and s.share > self.limit]

    @property
    def stale(self) -> list[Freshness]:
        return [f for f in self.freshness if f.stale]

    @property
    def over(self) -> list[str]:
        """What alerts: ``skew:<column>`` and ``stale:<view>`` keys (the alert's memory across checks)."""
        return [f"skew:{s.column}" for s in self.skewed] + [f"stale:{f.view}" for f in self.stale]

    def headline(self) -> str:
        parts = [s.text(self.limit) for s in self.skewed] + [f.text() for f in self.stale]
        return "; ".join(parts)

    def lines(self) -> list[str]:
        """For the check's summary: what alerts, then what could not be checked."""
        lines = [f"ALERT stored features: {s.text(self.limit)}" for s in self.skewed]
        lines += [f"ALERT stored features: {f.text()}" for f in self.stale]
        return lines + [f"stored features: {note}" for note in self.notes]

    def to_dict(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "skew": [
                {"column": s.column, "compared": s.compared, "differ": s.differ, "share": s.share} for s in self.skew
            ],
            "freshness": [f.to_dict() for f in self.freshness],
            "notes": list(self.notes),
            "over": self.over,
            "headline": self.headline(),
        }


def compare(served: pd.DataFrame, offline: pd.DataFrame, columns: Sequence[str]) -> list[FeatureSkew]:
    """Per column, rows where the served and the offline value differ (both missing is equal; floats to 1e-9)."""
    out = []
    for column in columns:
        a = pd.to_numeric(served[column], errors="coerce").to_numpy(dtype="float64")
        b = pd.to_numeric(offline[column], errors="coerce").to_numpy(dtype="float64")
        same = np.isclose(a, b, rtol=1e-9, atol=1e-9, equal_nan=True)
        out.append(FeatureSkew(column, len(a), int((~same).sum())))
    return out


def served_sample(window: pd.DataFrame, spec: ModelSpec, n: int) -> pd.DataFrame:
    """The newest ``n`` answered rows with stored values the model saw (not scored as missing), oldest first."""
    columns = spec.features.stored_columns
    if window.empty or not set(columns) <= set(window.columns):
        return window.iloc[0:0]
    rows = window
    if MISSING_COLUMN in rows:
        rows = rows[rows[MISSING_COLUMN].fillna("").astype(str) == ""]
    return rows.sort_values("logged_at", kind="stable").tail(n).reset_index(drop=True)


def skew_of(sample: pd.DataFrame, spec: ModelSpec, store: Any, defs: Any) -> tuple[list[FeatureSkew], list[str]]:
    """Served vs offline point-in-time values per stored feature, view by view; (skews, notes)."""
    skews, notes = [], []
    entity, event_time = spec.dataset.entity_id, spec.dataset.timestamp
    for view in spec.features.stored_views:
        refs = [r for r in spec.features.stored if r.split(":", 1)[0] == view]
        columns = [r.replace(":", "__", 1) for r in refs]
        keys = defs.join_keys(view)
        if entity in keys:
            notes.append(f"{view} not compared for skew: it is keyed on {entity}, logged only as a pseudonym")
            continue
        absent = [k for k in keys if k not in sample.columns]
        if absent:
            notes.append(f"{view} not compared for skew: the prediction log has no {', '.join(absent)}")
            continue
        if sample.empty:
            notes.append(f"{view} not compared for skew: no served rows with its values in the window")
            continue
        rows = sample[keys].copy()
        rows[event_time] = pd.to_datetime(sample["logged_at"].astype(float), unit="s", utc=True)
        offline = store.training_set(rows, refs, event_time=event_time).frame
        skews += compare(sample, offline.reset_index(drop=True), columns)
    return skews, notes


def check(
    window: pd.DataFrame, spec: ModelSpec, store: Any, defs: Any, now: datetime, limit: float, sample: int
) -> StoreCheck:
    """Skew over a sample of the window's served rows, and every used view's freshness at ``now``."""
    from loopline.features.freshness import view_freshness

    skews, notes = skew_of(served_sample(window, spec, sample), spec, store, defs)
    return StoreCheck(limit, skews, view_freshness(store, defs, spec.features.stored_views, now), notes)


@dataclass(frozen=True)
class StoreAlert:
    alert: bool
    reason: str


def decide_alert(result: StoreCheck, at: datetime, history: Sequence[Any], reminder_hours: float) -> StoreAlert:
    """Alert when something is over that the last such alert (within ``reminder_hours``) did not name.

    ``history``: earlier checks, newest first, whose ``impact`` carries this channel's ``feature_store``.
    """
    over = result.over
    if not over:
        return StoreAlert(False, "stored features: no skew over the limit, no stale view")
    since = as_utc(at) - timedelta(hours=reminder_hours)
    for earlier in history:
        recorded = (getattr(earlier, "impact", None) or {}).get("feature_store") or {}
        if recorded.get("alerted") and as_utc(earlier.at) >= since:
            if not set(over) - set(recorded.get("over") or ()):
                return StoreAlert(False, f"already alerted at {as_utc(earlier.at).isoformat()}: {result.headline()}")
            return StoreAlert(True, f"new since the last alert: {result.headline()}")
    return StoreAlert(True, result.headline())
