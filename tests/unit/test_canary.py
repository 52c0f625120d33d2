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


SHADOW_METRICS = """# TYPE loopline_predictions_total counter
loopline_predictions_total{arm="champion",decision="approve",model_version="1"} 900.0
loopline_predictions_total{arm="shadow",decision="approve",model_version="3"} 850.0
loopline_predictions_total{arm="shadow",decision="decline",model_version="3"} 50.0
# TYPE loopline_prediction_errors_total counter
loopline_prediction_errors_total{arm="shadow",model_version="3"} 4.0
# TYPE loopline_shadow_compared_total counter
loopline_shadow_compared_total{model_version="3"} 900.0
# TYPE loopline_shadow_disagreements_total counter
loopline_shadow_disagreements_total{model_version="3"} 45.0
"""
NO_SHADOW = {"shadow_predictions": {}, "shadow_errors": {}, "shadow_compared": {}, "shadow_disagreements": {}}


def test_counters_are_summed_per_model_version():
    counters = canary.counters_from_metrics(METRICS)
    assert counters == {"predictions": {"1": 1000.0, "2": 40.0}, "errors": {"2": 10.0}, **NO_SHADOW}


def test_shadow_rows_are_counted_apart_from_answers():
    counters = canary.counters_from_metrics(SHADOW_METRICS)
    assert counters["predictions"] == {"1": 900.0} and counters["errors"] == {}
    assert counters["shadow_predictions"] == {"3": 900.0} and counters["shadow_errors"] == {"3": 4.0}
    assert counters["shadow_compared"] == {"3": 900.0} and counters["shadow_disagreements"] == {"3": 45.0}
    view = canary.shadow_counters(counters, "3", "1")
    assert view == {"predictions": {"3": 900.0, "1": 900.0}, "errors": {"3": 4.0, "1": 0.0}}


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


def shadow_window(n: int, shift: float = 0.0, shadow_ms: float = 2.0, seed: int = 0) -> pd.DataFrame:
    """The champion's answers and the shadow's copy of the same applicants."""
    rows = window(n, n, canary_shift=shift, canary_ms=shadow_ms, seed=seed)
    rows["arm"] = rows["arm"].replace({"canary": "shadow"})
    rows["model_version"] = rows["model_version"].replace({"2": "3"})
    rows["entity_hash"] = [f"e-{i}" for i in range(n)] * 2
    return rows


def _counters(compared: float, differ: float, calls: float = 500, errors: float = 0) -> dict:
    return {
        "predictions": {"1": 5000}, "errors": {}, "shadow_predictions": {"3": calls - errors},
        "shadow_errors": {"3": errors}, "shadow_compared": {"3": compared}, "shadow_disagreements": {"3": differ},
    }  # fmt: skip


def _shadow_verdict(rows, elapsed, now, gates=GATES, spec=SPEC):
    before = _counters(0, 0, 0)
    return canary.judge_shadow(elapsed, rows, before, now, "1", "3", gates, 60, 600, spec=spec)


@pytest.mark.parametrize(
    ("compared", "differ", "expected"),
    [
        (500, 20, canary.PASS),  # 4% <= 10%
        (500, 100, canary.FAIL),  # 20%
        (50, 2, canary.PENDING),  # too few rows compared
        (50, 11, canary.FAIL),  # 11 already exceed 10% of the 100 rows needed
    ],
)
def test_disagreement_gate(compared, differ, expected):
    gates = GATES.model_copy(update={"max_disagreement": 0.1})
    result = canary.disagreement_gate(_counters(0, 0), _counters(compared, differ), "3", gates, SPEC)
    assert result.status == expected and result.limit == 0.1


def test_disagreement_gate_skips_a_task_without_decisions_and_waits_for_metrics():
    regression = SPEC.model_copy(update={"task": "regression"})
    assert canary.disagreement_gate({}, {}, "3", GATES, regression).status == canary.SKIPPED
    assert canary.disagreement_gate(None, None, "3", GATES, SPEC).status == canary.PENDING


def test_a_shadow_alike_the_champion_passes_after_its_bake_time():
    rows = shadow_window(300, seed=2)
    now = _counters(500, 10)
    assert _shadow_verdict(rows, 30, now).status == canary.WAIT
    verdict = _shadow_verdict(rows, 61, now)
    assert verdict.status == canary.PASS and verdict.phase == "shadow", verdict.summary()
    assert verdict.samples == {"shadow": 300, "champion": 300}
    assert [g.name for g in verdict.gates] == ["error_rate", "disagreement", "p95_latency", "score_psi"]
    assert verdict.summary().startswith("shadow: PASS")


@pytest.mark.parametrize(
    ("rows", "now", "gate"),
    [
        (shadow_window(300), _counters(500, 10, errors=100), "error_rate"),
        (shadow_window(300), _counters(500, 200), "disagreement"),
        (shadow_window(300, shadow_ms=30), _counters(500, 10), "p95_latency"),
        (shadow_window(300, shift=0.25), _counters(500, 10), "score_psi"),
    ],
)
def test_a_bad_shadow_fails_on_its_gate_before_the_bake_time(rows, now, gate):
    verdict = _shadow_verdict(rows, 5, now)
    assert verdict.status == canary.FAIL and gate in verdict.reason, verdict.summary()
    if gate == "error_rate":
        assert next(g for g in verdict.gates if g.name == gate).detail == "100/500 shadow calls failed"


def test_canary_rows_do_not_count_as_shadow_rows():
    rows = window(300, 300)  # a canary step's window: no arm "shadow"
    verdict = _shadow_verdict(rows, 61, _counters(0, 0, 0))
    assert verdict.samples["shadow"] == 0 and verdict.status == canary.WAIT
