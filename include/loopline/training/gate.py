"""The quality gate: may a freshly trained model become the challenger?

Three rules, all on the same holdout window: the task's baseline checks, which no spec can
turn off (a classifier gives more than one answer and beats answering the same one to every
row; a regressor beats predicting the mean), absolute floors and ceilings (the model is good
enough to serve at all) and no regression against the current champion beyond the spec's
tolerance (it is not worse than what serves now). The keys are made of the task's holdout
metrics (``loopline.core.tasks``): ``min_<m>`` / ``max_<m>`` and ``<m>_tolerance``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from loopline.core.tasks import HIGHER, Task

CHAMPION, CHALLENGER, REJECTED, UNCHANGED = "champion", "challenger", "rejected", "unchanged"
TOLERANCE = "_tolerance"
GATE_FAILED_TAG = "loopline.gate_failed"  # on a rejected model version: each failed check, value and bound


@dataclass
class GateCheck:
    name: str
    value: float
    threshold: float
    passed: bool


@dataclass
class GateResult:
    decision: str  # champion (first model) | challenger | rejected | unchanged (already the champion)
    checks: list[GateCheck] = field(default_factory=list)
    champion_version: str | None = None

    @property
    def passed(self) -> bool:
        return self.decision in (CHAMPION, CHALLENGER, UNCHANGED)

    def failed(self) -> str:
        """The checks that failed, as a person reads them: ``metric value (bound)``; empty if none did."""
        return "; ".join(f"{c.name} {c.value:.4g} (bound {c.threshold:.4g})" for c in self.checks if not c.passed)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def judge(
    candidate: Mapping[str, float],
    gate: Mapping[str, float],
    task: Task,
    champion: Mapping[str, float] | None = None,
    champion_version: str | None = None,
    candidate_version: str | None = None,
) -> GateResult:
    """Decide on metrics computed on one holdout; champion=None means there is no champion yet."""
    if champion_version is not None and champion_version == candidate_version:
        return GateResult(decision=UNCHANGED, champion_version=champion_version)
    checks = []
    for key, bound in gate.items():
        if key.startswith("min_"):
            value = candidate[key[4:]]
            checks.append(GateCheck(key, value, bound, value >= bound))
        elif key.startswith("max_"):
            value = candidate[key[4:]]
            checks.append(GateCheck(key, value, bound, value <= bound))
    # The task's own floors, whatever the spec says: better than one answer for every row.
    checks += [
        GateCheck(name, value, bound, bool(passed)) for name, value, bound, passed in task.baseline_checks(candidate)
    ]
    if champion is not None:
        for key, tolerance in gate.items():
            if not key.endswith(TOLERANCE):
                continue
            metric = key[: -len(TOLERANCE)]
            value, theirs = candidate[metric], champion[metric]
            if task.metrics[metric] == HIGHER:
                limit, passed = theirs - tolerance, value >= theirs - tolerance
            else:
                limit, passed = theirs + tolerance, value <= theirs + tolerance
            checks.append(GateCheck(f"{metric}_vs_champion", value, limit, passed))
    if not all(c.passed for c in checks):
        decision = REJECTED
    else:
        decision = CHALLENGER if champion is not None else CHAMPION
    return GateResult(decision=decision, checks=checks, champion_version=champion_version)
