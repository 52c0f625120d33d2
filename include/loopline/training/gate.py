"""The quality gate: may a freshly trained model become the challenger?

Two rules, both on the same holdout window: an absolute floor (the model is good
enough to serve at all) and no regression against the current champion beyond
the spec's tolerance (it is not worse than what serves now).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from loopline.core.spec import QualityGateSpec

CHAMPION, CHALLENGER, REJECTED, UNCHANGED = "champion", "challenger", "rejected", "unchanged"


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

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def judge(
    candidate: dict[str, float],
    gate: QualityGateSpec,
    champion: dict[str, float] | None = None,
    champion_version: str | None = None,
    candidate_version: str | None = None,
) -> GateResult:
    """Decide on metrics computed on one holdout; champion=None means there is no champion yet."""
    if champion_version is not None and champion_version == candidate_version:
        return GateResult(decision=UNCHANGED, champion_version=champion_version)
    checks = [
        GateCheck("min_auc", candidate["auc"], gate.min_auc, candidate["auc"] >= gate.min_auc),
        GateCheck("max_brier", candidate["brier"], gate.max_brier, candidate["brier"] <= gate.max_brier),
    ]
    if champion is not None:
        auc_floor = champion["auc"] - gate.auc_tolerance
        brier_ceiling = champion["brier"] + gate.brier_tolerance
        checks += [
            GateCheck("auc_vs_champion", candidate["auc"], auc_floor, candidate["auc"] >= auc_floor),
            GateCheck("brier_vs_champion", candidate["brier"], brier_ceiling, candidate["brier"] <= brier_ceiling),
        ]
    if not all(c.passed for c in checks):
        decision = REJECTED
    else:
        decision = CHALLENGER if champion is not None else CHAMPION
    return GateResult(decision=decision, checks=checks, champion_version=champion_version)
