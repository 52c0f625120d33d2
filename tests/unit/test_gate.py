"""The quality gate's rules (pure): absolute floor, no regression against the champion, idempotent re-runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.core.spec import load_spec
from loopline.core.tasks import TASKS
from loopline.training import gate as gate_module
from loopline.training.gate import CHALLENGER, CHAMPION, REJECTED, UNCHANGED, GateResult

GATE = {"min_auc": 0.70, "max_brier": 0.20, "auc_tolerance": 0.01, "brier_tolerance": 0.005}
CHAMP = {"auc": 0.80, "brier": 0.10}


def judge(candidate, gate=GATE, task=TASKS["binary"], **kwargs) -> GateResult:
    return gate_module.judge(candidate, gate, task, **kwargs)


def metrics(auc: float, brier: float = 0.10, **extra: float) -> dict[str, float]:
    return {"auc": auc, "brier": brier, **extra}


def checks_of(result: GateResult) -> dict[str, tuple[float, float, bool]]:
    return {c.name: (c.value, c.threshold, c.passed) for c in result.checks}


# --- no champion yet ----------------------------------------------------------------------------


def test_first_model_above_the_floor_becomes_champion():
    result = judge(metrics(0.80, 0.15), GATE)
    assert result.decision == CHAMPION and result.passed and result.champion_version is None
    assert [c.name for c in result.checks] == ["min_auc", "max_brier"]
    assert checks_of(result) == {"min_auc": (0.80, 0.70, True), "max_brier": (0.15, 0.20, True)}


def test_the_floor_is_inclusive():
    assert judge(metrics(0.70, 0.20), GATE).decision == CHAMPION


def test_below_min_auc_is_rejected():
    result = judge(metrics(0.69), GATE)
    assert result.decision == REJECTED and not result.passed
    assert checks_of(result) == {"min_auc": (0.69, 0.70, False), "max_brier": (0.10, 0.20, True)}


def test_above_max_brier_is_rejected():
    result = judge(metrics(0.95, brier=0.21), GATE)
    assert result.decision == REJECTED and not result.passed
    assert checks_of(result)["max_brier"] == (0.21, 0.20, False)
    assert checks_of(result)["min_auc"][2] is True


def test_nan_metrics_are_rejected():
    assert judge(metrics(float("nan")), GATE).decision == REJECTED
    assert judge(metrics(0.9, float("nan")), GATE).decision == REJECTED


def test_extra_metrics_are_ignored():
    assert judge(metrics(0.8, ks=0.01, precision_at_threshold=0.0), GATE).decision == CHAMPION


# --- against a champion -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "candidate",
    [metrics(0.795, 0.102), metrics(0.791, 0.1049), metrics(0.85, 0.08), metrics(0.80, 0.10)],
    ids=["slightly-worse", "just-inside", "better", "equal"],
)
def test_within_tolerance_of_the_champion_becomes_challenger(candidate):
    result = judge(candidate, GATE, champion=CHAMP, champion_version="1", candidate_version="2")
    assert result.decision == CHALLENGER and result.passed and result.champion_version == "1"
    assert [c.name for c in result.checks] == ["min_auc", "max_brier", "auc_vs_champion", "brier_vs_champion"]
    assert all(c.passed for c in result.checks)


def test_champion_checks_carry_floor_and_ceiling():
    result = judge(metrics(0.795, 0.102), GATE, champion=CHAMP, champion_version="1", candidate_version="2")
    auc_value, auc_floor, _ = checks_of(result)["auc_vs_champion"]
    brier_value, brier_ceiling, _ = checks_of(result)["brier_vs_champion"]
    assert (auc_value, brier_value) == (0.795, 0.102)
    assert auc_floor == pytest.approx(0.79) and brier_ceiling == pytest.approx(0.105)


@pytest.mark.parametrize(
    "candidate,failing",
    [
        (metrics(0.78, 0.10), "auc_vs_champion"),
        (metrics(0.80, 0.11), "brier_vs_champion"),
    ],
)
def test_worse_than_the_champion_beyond_tolerance_is_rejected(candidate, failing):
    result = judge(candidate, GATE, champion=CHAMP, champion_version="1", candidate_version="2")
    assert result.decision == REJECTED and not result.passed
    assert [c.name for c in result.checks if not c.passed] == [failing]


def test_below_the_floor_is_rejected_even_when_the_champion_is_worse():
    result = judge(metrics(0.65), GATE, champion=metrics(0.60), champion_version="1", candidate_version="2")
    assert result.decision == REJECTED
    assert [c.name for c in result.checks if not c.passed] == ["min_auc"]


def test_a_champion_without_versions_is_still_compared():
    result = judge(metrics(0.70), GATE, champion=CHAMP)
    assert result.decision == REJECTED and "auc_vs_champion" in checks_of(result)


# --- the champion itself ------------------------------------------------------------------------


def test_the_champion_judged_again_is_unchanged():
    result = judge(metrics(0.8), GATE, champion=metrics(0.8), champion_version="3", candidate_version="3")
    assert result.decision == UNCHANGED and result.passed and result.checks == []
    assert result.champion_version == "3"


def test_unchanged_does_not_re_apply_the_rules():
    # Re-running the gate on the serving model must not demote it, even if the spec tightened since.
    result = judge(metrics(0.5, 0.4), GATE, champion=metrics(0.5, 0.4), champion_version="3", candidate_version="3")
    assert result.decision == UNCHANGED and result.passed


def test_different_versions_with_equal_metrics_are_judged():
    result = judge(CHAMP, GATE, champion=CHAMP, champion_version="3", candidate_version="4")
    assert result.decision == CHALLENGER


# --- serialisation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,passed",
    [
        ({"candidate": metrics(0.8)}, True),
        ({"candidate": metrics(0.6)}, False),
        ({"candidate": CHAMP, "champion": CHAMP, "champion_version": "1", "candidate_version": "1"}, True),
    ],
)
def test_to_dict_includes_passed_and_is_json(kwargs, passed):
    result = judge(gate=GATE, **kwargs)
    as_dict = result.to_dict()
    assert as_dict["passed"] is passed
    assert as_dict["decision"] == result.decision
    assert as_dict["checks"] == [
        {"name": c.name, "value": c.value, "threshold": c.threshold, "passed": c.passed} for c in result.checks
    ]
    assert json.loads(json.dumps(as_dict)) == as_dict


def test_the_shipped_gate_rejects_a_coin_flip_and_accepts_a_good_model():
    gate = load_spec("credit_risk", Path(__file__).resolve().parents[2] / "models").quality_gate
    assert judge(metrics(0.5, 0.25), gate).decision == REJECTED
    assert judge(metrics(0.8, 0.12), gate).decision == CHAMPION


# --- other task types: the same two rules, on the task's own metrics ---------------------------------


def test_a_regression_gate_bounds_errors_from_above_and_r2_from_below():
    regression = TASKS["regression"]
    gate = {"max_rmse": 10.0, "min_r2": 0.5, "rmse_tolerance": 0.5, "r2_tolerance": 0.01}
    champion = {"rmse": 8.0, "r2": 0.7}
    assert judge({"rmse": 8.4, "r2": 0.695}, gate, regression, champion=champion).decision == CHALLENGER
    worse = judge({"rmse": 8.6, "r2": 0.7}, gate, regression, champion=champion)
    assert worse.decision == REJECTED and [c.name for c in worse.checks if not c.passed] == ["rmse_vs_champion"]
    assert checks_of(worse)["rmse_vs_champion"][1] == pytest.approx(8.5)  # a ceiling: lower is better
    assert judge({"rmse": 11.0, "r2": 0.9}, gate, regression).decision == REJECTED


def test_a_multiclass_gate_on_macro_f1_and_log_loss():
    multiclass = TASKS["multiclass"]
    gate = {"min_macro_f1": 0.4, "macro_f1_tolerance": 0.02, "log_loss_tolerance": 0.05}
    champion = {"macro_f1": 0.6, "log_loss": 0.9}
    assert judge({"macro_f1": 0.59, "log_loss": 0.93}, gate, multiclass, champion=champion).decision == CHALLENGER
    assert judge({"macro_f1": 0.59, "log_loss": 0.96}, gate, multiclass, champion=champion).decision == REJECTED
    assert judge({"macro_f1": 0.3, "log_loss": 0.5}, gate, multiclass).decision == REJECTED


# --- the task's baseline checks: a model that gives one answer to every row never passes -----------


def mostly_positive_table(n: int = 2400, seed: int = 3) -> pd.DataFrame:
    """Weekly rows whose target is mostly 1 and well ranked by ``signal``, but no score comes near 0.9."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(0, 1, n)
    # the positive share runs from about 0.35 to 0.85 along the signal: ranked, never near certain
    positive = rng.uniform(size=n) < 0.35 + 0.5 / (1 + np.exp(-3 * signal))
    return pd.DataFrame(
        {
            "account": [f"A{i:06d}" for i in range(n)],
            "seen_at": pd.date_range("2025-01-06", periods=n, freq="1h").strftime("%Y-%m-%d %H:%M:%S"),
            "signal": signal.round(3),
            "noise": rng.normal(0, 1, n).round(3),
            "segment": rng.choice(["a", "b", "c"], n),
            "converted": positive.astype(int),
        }
    )


@pytest.fixture(scope="module")
def mostly_positive(tmp_path_factory):
    from loopline.ops.onboarding import onboard

    root = tmp_path_factory.mktemp("mostly_positive")
    table = mostly_positive_table()
    table.head(600).to_csv(root / "sample.csv", index=False)
    onboard("accounts", root / "sample.csv", "converted", "seen_at", "account", root / "models", root / "exp")
    return load_spec("accounts", root / "models"), table


def with_threshold(spec, threshold: float):
    return spec.model_copy(update={"training": spec.training.model_copy(update={"decision_threshold": threshold})})


@pytest.mark.parametrize("threshold,failing", [(0.9, "decision_share_above_0"), (0.02, "decision_share_below_1")])
def test_a_classifier_answering_one_decision_to_every_row_is_rejected(mostly_positive, threshold, failing):
    from loopline.training import trainer

    spec, table = mostly_positive
    spec = with_threshold(spec, threshold)
    _, holdout = trainer.fit_and_evaluate(table, spec, dict(spec.training.params))
    assert holdout["positive_rate"] > 0.5 and holdout["auc"] > 0.6  # mostly positive, ranked: AUC alone passes
    assert holdout["decision_share"] in (0.0, 1.0)  # ... yet one answer for every row
    result = judge(holdout, {"min_auc": 0.6}, TASKS["binary"])
    assert result.decision == REJECTED
    assert failing in [c.name for c in result.checks if not c.passed]
    assert failing in result.failed() and "bound" in result.failed()


def test_the_same_model_at_a_threshold_that_decides_both_ways_passes(mostly_positive):
    from loopline.training import trainer

    spec, table = mostly_positive
    _, holdout = trainer.fit_and_evaluate(table, with_threshold(spec, 0.65), dict(spec.training.params))
    assert 0 < holdout["decision_share"] < 1
    result = judge(holdout, {"min_auc": 0.6}, TASKS["binary"])
    assert result.decision == CHAMPION, result.failed()
    names = [c.name for c in result.checks]
    assert {"decision_share_above_0", "decision_share_below_1"} <= set(names)


def test_decision_share_takes_a_floor_and_a_ceiling_and_no_tolerance():
    binary = TASKS["binary"]
    assert {"min_decision_share", "max_decision_share"} <= set(binary.gate_keys())
    assert "decision_share_tolerance" not in binary.gate_keys()
    assert binary.gate_problems({"min_decision_share": 1.5}) != []
    ok = {"auc": 0.8, "decision_share": 0.3, "precision_at_threshold": 0.5, "positive_rate": 0.2}
    gate = {"min_decision_share": 0.1, "max_decision_share": 0.25}
    assert checks_of(judge(ok, gate))["max_decision_share"] == (0.3, 0.25, False)


def test_a_multiclass_model_answering_the_majority_class_is_rejected():
    multiclass = TASKS["multiclass"]
    rng = np.random.default_rng(0)
    labels = rng.choice(3, 500, p=[0.6, 0.3, 0.1])
    always_first = np.tile([0.5, 0.3, 0.2], (500, 1))  # confident enough on the majority, never anything else
    metrics_ = multiclass.holdout_metrics(labels, always_first, None)
    assert metrics_["accuracy"] > 0.55  # an accuracy floor alone would let it through
    result = judge(metrics_, {"min_accuracy": 0.5}, multiclass)
    assert result.decision == REJECTED
    failed = {c.name for c in result.checks if not c.passed}
    assert failed == {"predicted_classes_at_least_2", "macro_f1_above_majority_baseline"}
    informed = np.eye(3)[labels] * 0.6 + 0.4 / 3  # knows the class
    assert judge(multiclass.holdout_metrics(labels, informed, None), {"min_accuracy": 0.5}, multiclass).passed


def test_a_regression_model_must_beat_predicting_the_mean():
    regression = TASKS["regression"]
    rng = np.random.default_rng(0)
    truth = rng.normal(50, 10, 400)
    guess = np.full(400, 55.0)  # a constant a little off the mean: R² below 0
    result = judge(regression.holdout_metrics(truth, guess, None), {"max_smape": 0.5}, regression)
    assert result.decision == REJECTED
    assert [c.name for c in result.checks if not c.passed] == ["rmse_below_mean_baseline"]
    good = truth + rng.normal(0, 3, 400)
    assert judge(regression.holdout_metrics(truth, good, None), {"max_smape": 0.5}, regression).passed
