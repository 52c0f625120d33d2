"""The quality gate's rules (pure)."""

from __future__ import annotations

import pytest

from loopline.gate import CHALLENGER, CHAMPION, REJECTED, UNCHANGED, judge
from loopline.spec import QualityGateSpec

GATE = QualityGateSpec(min_auc=0.7, max_brier=0.2, auc_tolerance=0.01, brier_tolerance=0.005)


def metrics(auc: float, brier: float = 0.1) -> dict[str, float]:
    return {"auc": auc, "brier": brier}


def test_first_model_above_the_floor_becomes_champion():
    result = judge(metrics(0.8), GATE)
    assert result.decision == CHAMPION and result.passed
    assert [c.name for c in result.checks] == ["min_auc", "max_brier"]


@pytest.mark.parametrize("candidate", [metrics(0.69), metrics(0.9, brier=0.25)])
def test_below_the_absolute_floor_is_rejected(candidate):
    result = judge(candidate, GATE)
    assert result.decision == REJECTED and not result.passed


def test_within_tolerance_of_the_champion_becomes_challenger():
    result = judge(
        metrics(0.795, 0.102), GATE, champion=metrics(0.80, 0.10), champion_version="1", candidate_version="2"
    )
    assert result.decision == CHALLENGER
    assert {c.name for c in result.checks} == {"min_auc", "max_brier", "auc_vs_champion", "brier_vs_champion"}


@pytest.mark.parametrize("candidate", [metrics(0.78, 0.10), metrics(0.80, 0.11)])
def test_worse_than_the_champion_beyond_tolerance_is_rejected(candidate):
    result = judge(candidate, GATE, champion=metrics(0.80, 0.10), champion_version="1", candidate_version="2")
    assert result.decision == REJECTED
    assert any(not c.passed and c.name.endswith("vs_champion") for c in result.checks)


def test_the_champion_itself_is_unchanged():
    result = judge(metrics(0.8), GATE, champion=metrics(0.8), champion_version="3", candidate_version="3")
    assert result.decision == UNCHANGED and result.passed and result.checks == []
    assert result.to_dict()["passed"] is True
