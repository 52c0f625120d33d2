"""A drift check's graded verdict, and what it does: alert people (once per episode), start a retrain.

Verdicts, most serious first:

- ``concept_drift``: realised quality, from outcome labels, dropped beyond ``max_quality_drop``;
- ``insufficient``: too little traffic in the window to judge (labels aside);
- ``performance_risk``: the model's estimated quality dropped, or its answers' mix or score
  distribution moved, beyond the policy's tolerances (``loopline.monitoring.impact``);
- ``feature_drift``: one or more inputs moved (significant and a real effect size) without
  a measurable effect on the model;
- ``stable``: nothing moved.

The policy (``monitoring`` in the spec) says which verdicts alert (``alert_on``) and which
retrain (``retrain_on``, after ``min_consecutive_windows`` such checks in a row and within the
storm guard). An *episode* is a run of checks with the same verdict (``insufficient``
checks in between, a quiet night, neither end nor extend it): it alerts when it starts,
then at most every ``reminder_hours``, never at every check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from loopline.core.clock import as_utc
from loopline.core.spec import DriftPolicy

if TYPE_CHECKING:
    from loopline.monitoring.concept import ConceptVerdict
    from loopline.monitoring.detection import DriftReport
    from loopline.monitoring.impact import Impact
    from loopline.monitoring.monitoring_state import DriftCheck

HEADLINES = {
    "concept_drift": "CONCEPT DRIFT: the model's realised quality dropped",
    "performance_risk": "PERFORMANCE RISK: the model's answers or estimated quality moved",
    "feature_drift": "FEATURE DRIFT: inputs moved, the model's answers held",
    "stable": "STABLE",
    "insufficient": "NO VERDICT: too little traffic",
}


def grade(report: DriftReport, impact: Impact | None, concept: ConceptVerdict) -> str:
    """The check's verdict from its three channels (see the module docstring)."""
    if concept.confirmed:
        return "concept_drift"
    if report.verdict == "insufficient":
        return "insufficient"
    score_moved = report.score is not None and report.score.shifted
    if score_moved or (impact is not None and impact.at_risk):
        return "performance_risk"
    return "feature_drift" if report.verdict == "feature_drift" else "stable"


def _judged(history: Sequence[DriftCheck]) -> list[DriftCheck]:
    return [c for c in history if c.verdict != "insufficient"]


@dataclass(frozen=True)
class AlertDecision:
    alert: bool
    reason: str


def decide_alert(verdict: str, now: datetime, history: Sequence[DriftCheck], policy: DriftPolicy) -> AlertDecision:
    """Alert at an episode's start and then every ``reminder_hours``; ``history``: earlier checks, newest first."""
    if verdict not in policy.alert_on:
        return AlertDecision(False, f"{verdict} does not alert (monitoring.alert_on: {', '.join(policy.alert_on)})")
    now = as_utc(now)
    episode = []
    for check in _judged(history):
        if check.verdict != verdict:
            break
        episode.append(check)
    if not episode:
        before = next(iter(_judged(history)), None)
        since = f" after {before.verdict} at {before.at:%Y-%m-%d %H:%M} UTC" if before else ""
        return AlertDecision(True, f"{verdict} starts{since}")
    started = episode[-1].at
    last = next((c for c in episode if c.alerted), None)
    remind_after = timedelta(hours=policy.reminder_hours)
    if last is None or now - last.at >= remind_after:
        return AlertDecision(
            True, f"reminder: {verdict} since {started:%Y-%m-%d %H:%M} UTC ({len(episode) + 1} checks in a row)"
        )
    return AlertDecision(
        False,
        f"{verdict} since {started:%Y-%m-%d %H:%M} UTC, alerted at {last.at:%Y-%m-%d %H:%M} UTC;"
        f" next reminder from {last.at + remind_after:%Y-%m-%d %H:%M} UTC",
    )


def wants_retrain(verdict: str, history: Sequence[DriftCheck], policy: DriftPolicy) -> tuple[bool, str]:
    """Whether this verdict asks for a retrain now (before the storm guard), and why (not)."""
    if verdict not in policy.retrain_on:
        return False, f"{verdict}: no retrain (monitoring.retrain_on: {', '.join(policy.retrain_on) or 'none'})"
    needed = policy.min_consecutive_windows - 1
    earlier = _judged(history)[:needed]
    if len(earlier) < needed or any(c.verdict not in policy.retrain_on for c in earlier):
        run = 1 + next((i for i, c in enumerate(earlier) if c.verdict not in policy.retrain_on), len(earlier))
        return False, (
            f"{verdict} in {run} window(s) in a row; the policy retrains after {policy.min_consecutive_windows}"
            " (monitoring.min_consecutive_windows)"
        )
    return True, f"{verdict} asks for a retrain"
