"""What the drift check cannot see in the prediction log: refused requests and levels the model does not know.

A refused request (422: a level the spec does not list, a value beyond the bounds, ...) never
reaches the model, so a shift that makes most traffic fail validation leaves the drift check
comparing the few rows that still pass. The service writes each refusal to the refusal log
(``loopline.serving.refusal_log``) with its reason, field and value; inputs the spec scores as
unknown (``features.unknown_levels: {<feature>: score}``) are flagged per row in the prediction
log (``unknown_levels``). This module counts both in a check's window, against every row the
service received (answered + refused), and says it in words::

    20% of rows refused (482 of 2,410, in 97 requests): region 'central' not allowed (20% of rows)
    region 'central': 20% of rows, unknown to the model (scored as unknown)

A share at or above ``monitoring.max_refused_share`` (per problem, or all refusals together) is
an alert of its own channel, beside the verdict (which grades what the model answered): once
when it starts or a new problem appears, then at most every ``reminder_hours``. It neither
changes the verdict nor starts a retrain: a model cannot learn from requests it never saw, the
fix is the spec's (a level or a bound) or the client's.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from loopline.core.clock import as_utc
from loopline.core.spec import ModelSpec

UNKNOWN_COLUMN = "unknown_levels"  # the prediction log's column (as serving.bento_service writes it)
STORED_MISSING_COLUMN = "stored_missing"  # likewise: the stored feature views a row was scored without
SHOWN = 5  # problems and unknown levels named in the headline


@dataclass(frozen=True)
class Problem:
    field: str
    reason: str
    value: Any
    rows: int
    share: float  # of every row received in the window
    message: str = ""

    @property
    def key(self) -> str:
        return f"{self.field}|{self.reason}|{self.value}"

    def text(self) -> str:
        value = repr(self.value) if isinstance(self.value, str) else self.value
        if self.reason == "literal_error":
            return f"{self.field} {value} not allowed"
        if self.reason in ("less_than_equal", "greater_than_equal", "less_than", "greater_than"):
            return f"{self.field} {value} out of range ({self.message})"
        if self.reason == "missing":
            return f"{self.field} missing"
        if self.reason == "extra_forbidden":
            return f"unknown key {self.field!r}"
        where = f"{self.field}: " if self.field else ""
        return f"{where}{self.message or self.reason}"


@dataclass(frozen=True)
class UnknownLevel:
    feature: str
    level: str
    rows: int
    share: float

    @property
    def key(self) -> str:
        return f"unknown|{self.feature}|{self.level}"

    def text(self) -> str:
        return f"{self.feature} {self.level!r}: {self.share:.0%} of rows, unknown to the model (scored as unknown)"


@dataclass(frozen=True)
class StoredMissing(UnknownLevel):
    """Rows scored without a stored feature view (``features.stored_missing: missing``): counted like a level."""

    @property
    def key(self) -> str:
        return f"stored|{self.feature}"

    def text(self) -> str:
        return (
            f"{self.feature}: {self.share:.0%} of rows scored without its stored features (no fresh value for the key)"
        )


@dataclass(frozen=True)
class RefusalCheck:
    answered_rows: int
    refused_rows: int
    refused_requests: int
    limit: float
    problems: list[Problem] = field(default_factory=list)
    unknown: list[UnknownLevel] = field(default_factory=list)
    by_client: dict[str, int] = field(default_factory=dict)  # refused rows per client

    @property
    def received_rows(self) -> int:
        return self.answered_rows + self.refused_rows

    @property
    def share(self) -> float:
        return self.refused_rows / self.received_rows if self.received_rows else 0.0

    @property
    def over(self) -> list[str]:
        """What reaches the limit: "refused" (all refusals together) and each problem or unknown level's key."""
        keys = ["refused"] if self.refused_rows and self.share >= self.limit else []
        keys += [p.key for p in self.problems if p.share >= self.limit]
        return keys + [u.key for u in self.unknown if u.share >= self.limit]

    def headline(self) -> str:
        parts = []
        if self.refused_rows:
            named = ", ".join(f"{p.text()} ({p.share:.0%} of rows)" for p in self.problems[:SHOWN])
            more = f" and {len(self.problems) - SHOWN} more" if len(self.problems) > SHOWN else ""
            parts.append(
                f"{self.share:.0%} of rows refused ({self.refused_rows:,} of {self.received_rows:,}, "
                f"in {self.refused_requests:,} request{'' if self.refused_requests == 1 else 's'}): {named}{more}"
            )
        parts += [u.text() for u in self.unknown[:SHOWN]]
        return "; ".join(parts)

    def lines(self) -> list[str]:
        """For the check's summary: one line each, only when there is anything to say."""
        text = self.headline()
        if not text:
            return []
        flag = "ALERT " if self.over else ""
        return [f"{flag}requests the model never scored as sent: {text} (limit {self.limit:.0%})"]

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "share": self.share,
            "received_rows": self.received_rows,
            "over": self.over,
            "headline": self.headline(),
        }


def check(refusals: Sequence[dict[str, Any]], window: pd.DataFrame, spec: ModelSpec, limit: float) -> RefusalCheck:
    """The window's refusals (refusal-log lines) and unknown levels (``window``: its prediction-log rows)."""
    answered = len(window)
    refused_rows, rows_by_problem, first = 0, Counter(), {}
    clients: Counter = Counter()
    for line in refusals:
        rows = max(int(line.get("rows") or 0), 1)  # a body that could not be read counts as one row
        refused_rows += rows
        clients[str(line.get("client"))] += rows
        for p in line.get("problems") or [{"field": "", "reason": line.get("reason", ""), "rows": 1}]:
            key = (str(p.get("field", "")), str(p.get("reason", "")), p.get("value"))
            rows_by_problem[key] += max(int(p.get("rows") or 0), 1)
            first.setdefault(key, str(p.get("message", "")))
    received = answered + refused_rows
    problems = [Problem(f, r, v, n, n / received, first[(f, r, v)]) for (f, r, v), n in rows_by_problem.most_common()]
    unknown = []
    if answered and UNKNOWN_COLUMN in window:
        levels: Counter = Counter()
        for i, flagged in enumerate(window[UNKNOWN_COLUMN].fillna("").astype(str)):
            for feature in filter(None, flagged.split(",")):
                value = window[feature].iloc[i] if feature in window else None
                levels[(feature, str(value))] += 1
        unknown = [UnknownLevel(f, lv, n, n / received) for (f, lv), n in levels.most_common()]
    if answered and STORED_MISSING_COLUMN in window:  # stored feature views scored as missing, per view
        flagged = window[STORED_MISSING_COLUMN].fillna("").astype(str)
        views = Counter(v for views_of_row in flagged for v in filter(None, views_of_row.split(",")))
        unknown += [StoredMissing(v, "", n, n / received) for v, n in views.most_common()]
    return RefusalCheck(answered, refused_rows, len(refusals), limit, problems, unknown, dict(clients))


@dataclass(frozen=True)
class RefusalAlert:
    alert: bool
    reason: str


def decide_alert(result: RefusalCheck, at: datetime, history: Sequence[Any], reminder_hours: float) -> RefusalAlert:
    """Alert when something reaches the limit that the last refusal alert (within ``reminder_hours``) did not name.

    ``history``: earlier checks (``monitoring_state.DriftCheck``, newest first), whose ``impact``
    carries this channel's ``refusals`` (``over`` and ``alerted``).
    """
    over = result.over
    if not over:
        return RefusalAlert(False, "no refusals or unknown levels at the limit")
    since = as_utc(at) - timedelta(hours=reminder_hours)
    for earlier in history:
        recorded = (getattr(earlier, "impact", None) or {}).get("refusals") or {}
        if recorded.get("alerted") and as_utc(earlier.at) >= since:
            new = sorted(set(over) - set(recorded.get("over") or ()))
            if not new:
                return RefusalAlert(False, f"already alerted at {as_utc(earlier.at).isoformat()}: {result.headline()}")
            return RefusalAlert(True, f"new since the last alert: {result.headline()}")
    return RefusalAlert(True, result.headline())


def section_html(result: dict[str, Any] | None) -> str:
    """The report's section (from ``RefusalCheck.to_dict``); empty when nothing was refused or unknown."""
    if not result or not (result.get("refused_rows") or result.get("unknown")):
        return ""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(str(p['field']))}</td><td>{e(str(p['reason']))}</td><td>{e(str(p['value']))}</td>"
        f"<td>{p['rows']:,}</td><td>{p['share']:.1%}</td><td>{e(str(p.get('message', '')))}</td></tr>"
        for p in result.get("problems") or []
    )
    rows += "".join(
        f"<tr><td>{e(str(u['feature']))}</td><td>unknown level (scored)</td><td>{e(str(u['level']))}</td>"
        f"<td>{u['rows']:,}</td><td>{u['share']:.1%}</td><td>unknown to the model</td></tr>"
        for u in result.get("unknown") or []
    )
    over = " — ALERT" if result.get("over") else ""
    return (
        f"<h2>Requests the model never scored as sent{e(over)}</h2><p>{e(str(result.get('headline', '')))} "
        f"(limit {result.get('limit', 0):.0%})</p><table><thead><tr><th>field</th><th>reason</th><th>value</th>"
        f"<th>rows</th><th>of all rows</th><th>message</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def into_report(page: str, result: dict[str, Any] | None) -> str:
    """The report page with the section before its first heading after the title (or at the end)."""
    section = section_html(result)
    if not section:
        return page
    at = page.find("<h2>")
    return page[:at] + section + page[at:] if at >= 0 else page.replace("</body>", section + "</body>", 1)
