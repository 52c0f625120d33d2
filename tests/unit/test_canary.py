"""Canary gates: each gate alone, then how a step's verdict is put together."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loopline.core.settings import get_settings
from loopline.core.spec import CanaryGates, load_spec
from loopline.rollout import canary

SPEC = load_spec("credit_risk", get_settings().models_dir)
GATES = CanaryGates(min_samples=100, max_error_rate=0.02, max_score_psi=0.2, min_labelled=100, max_quality_drop=0.03)
METRICS = """# HELP loopline_predictions_total Scored applications
# TYPE loopline_predictions_total counter
loopline_predictions_total{arm="champion",decision="approve",model_version="1"} 900.0
loopline_predictions_total{arm="champion",decision="decline",model_version="1"} 100.0
loopline_predictions_total{arm="canary",decision="approve",model_version="2"} 40.0
# HELP loopline_prediction_errors_total Failed scoring calls
# TYPE loopline_prediction_errors_total counter
loopline_prediction_errors_total{model_version="2"} 10.0
"""


def window(n_canary: int, n_champion: int, canary_shift: float = 0.0, canary_ms: float = 2.0, seed: int = 0):
    rng = np.random.default_rng(seed)

    def arm(name: str, version: str, n: int, shift: float, ms: float) -> pd.DataFrame:
        scores = np.clip(rng.beta(2, 8, n) + shift, 0, 1)
        return pd.DataFrame(
            {
                "arm": name,
                "model_version": version,
                "score": scores,
                "latency_seconds": rng.normal(ms, ms / 10, n) / 1000,
                "entity_hash": [f"{name}-{i}" for i in range(n)],
            }
        )

    return pd.concat([arm("canary", "2", n_canary, canary_shift, canary_ms), arm("champion", "1", n_champion, 0, 2)])


def test_counters_are_summed_per_model_version():
    counters = canary.counters_from_metrics(METRICS)
    assert counters == {"predictions": {"1": 1000.0, "2": 40.0}, "errors": {"2": 10.0}}


def test_counter_increase_survives_a_service_restart():
    assert canary.increase({"2": 50.0}, {"2": 80.0}, "2") == 30.0
    assert canary.increase({"2": 50.0}, {"2": 7.0}, "2") == 7.0  # reset: counts from zero
    assert canary.increase({}, {"2": 7.0}, "2") == 7.0


@pytest.mark.parametrize(
    ("calls", "errors", "expected"),
    [
        (500, 0, canary.PASS),
        (500, 5, canary.PASS),  # 1% <= 2%
        (500, 20, canary.FAIL),  # 4%
        (50, 0, canary.PENDING),  # too few calls to judge
        (10, 3, canary.FAIL),  # 3 errors already exceed 2% of the 100 calls needed: certain failure
    ],
)
def test_error_gate(calls, errors, expected):
    before = {"predictions": {}, "errors": {}}
    now = {"predictions": {"2": calls - errors, "1": 1000}, "errors": {"2": errors}}
    assert canary.error_gate(before, now, "2", "1", GATES).status == expected


def test_error_gate_without_metrics_is_pending():
    assert canary.error_gate(None, None, "2", "1", GATES).status == canary.PENDING


def test_latency_gate_fails_a_slow_canary_and_tolerates_noise():
    slow = canary._arms(window(300, 300, canary_ms=20), "2", "1")
    assert canary.latency_gate(*slow, GATES).status == canary.FAIL
    alike = canary._arms(window(300, 300, canary_ms=2.4), "2", "1")
    assert canary.latency_gate(*alike, GATES).status == canary.PASS
    few = canary._arms(window(30, 300), "2", "1")
    assert canary.latency_gate(*few, GATES).status == canary.PENDING


def test_psi_gate_fails_shifted_scores():
    assert (
        canary.psi_gate(*canary._arms(window(500, 500, canary_shift=0.25), "2", "1"), GATES, SPEC).status == canary.FAIL
    )
    assert canary.psi_gate(*canary._arms(window(500, 500, seed=3), "2", "1"), GATES, SPEC).status == canary.PASS


def test_psi_gate_allows_the_score_difference_the_quality_gate_measured():
    """A model retrained after drift scores differently by design; only a difference beyond that fails."""
    arms = canary._arms(window(500, 500, canary_shift=0.25), "2", "1")
    strict = canary.psi_gate(*arms, GATES, SPEC)
    assert strict.status == canary.FAIL
    allowed = canary.psi_gate(*arms, GATES, SPEC, expected=strict.canary)
    assert allowed.status == canary.PASS and "expected from evaluation" in allowed.detail
    assert allowed.limit == pytest.approx(GATES.max_score_psi + strict.canary)
    too_far = canary.psi_gate(*arms, GATES, SPEC, expected=strict.canary - GATES.max_score_psi - 0.05)
    assert too_far.status == canary.FAIL


def test_psi_gate_counts_each_applicant_once():
    """Twenty applicants re-sent ten times are twenty observations, not two hundred."""
    few = window(20, 1000, seed=4)
    repeated = pd.concat([few[few["arm"] == "canary"]] * 10 + [few[few["arm"] == "champion"]])
    verdict = canary.psi_gate(*canary._arms(repeated, "2", "1"), GATES, SPEC)
    assert verdict.status == canary.PENDING and "20/100" in verdict.detail


def test_fallback_rows_count_for_neither_arm():
    rows = window(200, 200)
    rows.loc[rows["arm"] == "canary", "arm"] = "fallback"
    canary_rows, champion_rows = canary._arms(rows, "2", "1")
    assert canary_rows.empty and len(champion_rows) == 200


def test_live_auc_gate_judges_only_with_enough_labels():
    rng = np.random.default_rng(1)
    rows = window(400, 400)
    good = pd.DataFrame(
        {"entity_hash": rows["entity_hash"], "outcome": (rows["score"] + rng.normal(0, 0.05, 800) > 0.2).astype(int)}
    )
    arms = canary._arms(rows, "2", "1")
    assert canary.quality_gate(*arms, None, GATES, SPEC).status == canary.SKIPPED
    assert canary.quality_gate(*arms, good.head(50), GATES, SPEC).status == canary.SKIPPED
    assert canary.quality_gate(*arms, good, GATES, SPEC).status == canary.PASS
    # Outcomes the canary ranks backwards: its live AUC collapses.
    flipped = good.copy()
    is_canary = flipped["entity_hash"].str.startswith("canary")
    flipped.loc[is_canary, "outcome"] = 1 - flipped.loc[is_canary, "outcome"]
    assert canary.quality_gate(*arms, flipped, GATES, SPEC).status == canary.FAIL


def _verdict(rows, elapsed, calls=500, errors=0):
    before = {"predictions": {}, "errors": {}}
    now = {"predictions": {"2": calls - errors, "1": 5000}, "errors": {"2": errors}}
    return canary.judge_step(0.2, elapsed, rows, before, now, "1", "2", GATES, 60, 600, spec=SPEC)


def test_a_step_passes_only_after_baking_with_every_gate_passed():
    rows = window(300, 900, seed=4)
    assert _verdict(rows, 30).status == canary.WAIT  # gates pass, but not baked yet
    verdict = _verdict(rows, 61)
    assert verdict.status == canary.PASS and verdict.samples == {"canary": 300, "champion": 900}
    assert "PASS" in verdict.summary()


def test_a_bad_gate_fails_the_step_before_the_bake_time():
    verdict = _verdict(window(300, 900), 5, calls=500, errors=100)
    assert verdict.status == canary.FAIL and "error_rate" in verdict.reason


def test_a_step_without_traffic_fails_when_its_time_is_up():
    rows = window(10, 900)
    assert _verdict(rows, 100, calls=10).status == canary.WAIT
    verdict = _verdict(rows, 601, calls=10)
    assert verdict.status == canary.FAIL and "not enough traffic" in verdict.reason


def test_psi_gate_discounts_sampling_noise_of_small_windows():
    """Many small windows of one distribution: raw PSI often tops 0.2, the corrected one never does."""
    gates = CanaryGates(min_samples=100, max_score_psi=0.2)
    verdicts = [canary.psi_gate(*canary._arms(window(100, 1000, seed=s), "2", "1"), gates, SPEC) for s in range(60)]
    assert all(v.status == canary.PASS for v in verdicts)
    shifted = canary._arms(window(100, 1000, canary_shift=0.15, seed=1), "2", "1")
    assert canary.psi_gate(*shifted, gates, SPEC).status == canary.FAIL
