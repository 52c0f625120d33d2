"""A drift check's graded verdict, and what it does: alert people (once per episode), start a retrain.

Verdicts, most serious first:

- ``concept_drift``: from outcome labels: realised quality dropped beyond ``max_quality_drop`` and
  sampling noise, or the outcomes moved away from the predictions (a base rate, a class's share,
  the mean outcome; ``loopline.monitoring.concept``);
- ``insufficient``: too little traffic in the window to judge (labels aside);
- ``performance_risk``: the model's quality, estimated without labels, dropped beyond
  ``max_estimated_drop`` (or inputs gone missing cost that much; ``loopline.monitoring.impact``):
  the model is expected to be worse, a reason to retrain;
- ``output_shift``: the answers moved (their mix, or the score distribution) while the quality
  is estimated to hold: a business fact to show (more declines, another class mix), not by
  itself a reason to retrain;
- ``feature_drift``: one or more inputs moved (significant and a real effect size) without
  a measurable effect on the model;
- ``stable``: nothing moved.

The policy (``monitoring`` in the spec) says which verdicts alert (``alert_on``) and which
retrain (``retrain_on``, after ``min_consecutive_windows`` such checks in a row and within the
storm guard). An *episode* is a run of checks that are not ``stable`` (``insufficient``
checks in between, a quiet night, neither end nor extend it): it alerts when it starts, when
its verdict becomes more serious than anything it has alerted (``feature_drift`` <
``output_shift`` < ``performance_risk`` < ``concept_drift``), and otherwise at most every ``reminder_hours``;
never at every check, and not when a window near a tolerance flips back and forth between two
verdicts.
"""

from __future__ import annotations

import itertools
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
    "performance_risk": "PERFORMANCE RISK: the model's quality is estimated to have dropped",
    "output_shift": "OUTPUT SHIFT: the model's answers moved, its quality is estimated to hold",
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
    if impact is not None and impact.quality_at_risk:
        return "performance_risk"
    score_moved = report.score is not None and report.score.shifted
    if score_moved or (impact is not None and impact.mix_moved):
        return "output_shift"
    return "feature_drift" if report.verdict == "feature_drift" else "stable"


# an episode alerts when it gets worse
SEVERITY = {"feature_drift": 1, "output_shift": 2, "performance_risk": 3, "concept_drift": 4}


def _judged(history: Sequence[DriftCheck]) -> list[DriftCheck]:
    return [c for c in history if c.verdict != "insufficient"]


@dataclass(frozen=True)
class AlertDecision:
    alert: bool
    reason: str


def decide_alert(verdict: str, now: datetime, history: Sequence[DriftCheck], policy: DriftPolicy) -> AlertDecision:
    """Alert when an episode starts or gets worse, else every ``reminder_hours``; ``history``: newest first."""
    if verdict not in policy.alert_on:
        return AlertDecision(False, f"{verdict} does not alert (monitoring.alert_on: {', '.join(policy.alert_on)})")
    now = as_utc(now)
    judged = _judged(history)
    episode = list(itertools.takewhile(lambda c: c.verdict != "stable", judged))
    before = judged[0] if judged else None
    if not episode:
        since = f" after {before.verdict} at {before.at:%Y-%m-%d %H:%M} UTC" if before else ""
        return AlertDecision(True, f"{verdict} starts{since}")
    started = episode[-1].at
    alerted = [c for c in episode if c.alerted]
    worst = max(alerted, key=lambda c: SEVERITY.get(c.verdict, 0), default=None)
    if worst is None or SEVERITY.get(verdict, 0) > SEVERITY.get(worst.verdict, 0):
        was = f"; alerted so far: {worst.verdict}" if worst else ""
        return AlertDecision(True, f"{verdict} after {before.verdict}: worse since {started:%Y-%m-%d %H:%M} UTC{was}")
    last = alerted[0]
    remind_after = timedelta(hours=policy.reminder_hours)
    if now - last.at >= remind_after:
        return AlertDecision(
            True, f"reminder: {verdict} since {started:%Y-%m-%d %H:%M} UTC ({len(episode) + 1} checks in a row)"
        )
    return AlertDecision(
        False,
        f"{verdict} in an episode since {started:%Y-%m-%d %H:%M} UTC that alerted {last.verdict} at"
        f" {last.at:%Y-%m-%d %H:%M} UTC; next reminder from {last.at + remind_after:%Y-%m-%d %H:%M} UTC",
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
