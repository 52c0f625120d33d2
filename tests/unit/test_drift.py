"""Drift detection on generated data: few false alarms, real shifts caught, concept drift, the storm guard.

The reference is one generated batch (the champion's training data); live windows are
other batches, stable or with the generator's drift knobs. A small LightGBM trained on
the reference stands in for the champion (importances, scores, holdout AUC). The detector is a
real TabularDrift folder, fitted and run by the real drift worker in .venv-drift.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from loopline.core.clock import as_utc
from loopline.core.errors import LooplineError
from loopline.core.features import build_features, categorical_columns
from loopline.core.spec import DriftPolicy, load_spec
from loopline.monitoring import concept, detection, retrain_policy
from loopline.monitoring.report_page import render_html
from loopline.training.trainer import feature_importance
from tests.generators import credit_risk as _generator

DriftKnobs, make_batch = _generator.DriftKnobs, _generator.make_batch

SPEC = load_spec("credit_risk", Path(__file__).resolve().parents[2] / "models")
POLICY = SPEC.monitoring
# What DriftKnobs.covariate_shift moves (datagen._features): income, DTI, utilisation,
# delinquencies, home ownership and employment type directly; loan amount (a share of
# income) and interest rate (driven by DTI and delinquencies) through them.
SHIFTED = {
    "annual_income", "loan_amount", "interest_rate", "debt_to_income", "num_delinquencies_2y",
    "credit_utilization", "home_ownership", "employment_type",
}  # fmt: skip
UNAFFECTED = set(SPEC.features.names) - SHIFTED


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return make_batch(0, 20_000, seed=1)


@pytest.fixture(scope="module")
def champion(reference):
    """A small, deterministic LightGBM on the reference: the champion's importances, scores and booster."""
    train = pd.concat([reference, make_batch(1, 10_000, seed=1)], ignore_index=True)
    data = lgb.Dataset(
        build_features(train, SPEC), label=train["defaulted"], categorical_feature=categorical_columns(SPEC)
    )
    params = {"objective": "binary", "learning_rate": 0.1, "num_leaves": 15, "min_child_samples": 40}
    booster = lgb.train({**params, "verbosity": -1, "num_threads": 1, "deterministic": True, "seed": 1}, data, 100)
    return booster, feature_importance(booster), booster.predict(build_features(reference, SPEC))


@pytest.fixture(scope="module")
def detector(reference, tmp_path_factory) -> Path:
    """The detector folder, fitted once (tests that change a detector work on a copy)."""
    path = tmp_path_factory.mktemp("detectors") / "credit_risk" / "v1"
    assert detection.run_detector(path, reference, SPEC, POLICY.p_value).fitted
    return path


def _check(detector, reference, champion, current, policy: DriftPolicy = POLICY, **kwargs) -> detection.DriftReport:
    booster, importances, ref_scores = champion
    cur_scores = booster.predict(build_features(current, SPEC)) if len(current) else None
    return detection.check(detector, reference, current, SPEC, importances, ref_scores, cur_scores, policy, **kwargs)


def _checks(detector, reference, champion, windows: list[pd.DataFrame]) -> list[detection.DriftReport]:
    """Many windows, one worker call (what the bench does): the same reports as one check each."""
    answer = detection.run_detector(detector, reference, SPEC, POLICY.p_value, windows)
    assert not answer.fitted and len(answer.windows) == len(windows)
    return [_check(detector, reference, champion, w, detection=d) for w, d in zip(windows, answer.windows, strict=True)]


# --- (a) false alarms --------------------------------------------------------------------------


def test_stable_windows_almost_never_confirm_drift(detector, reference, champion):
    reports = _checks(detector, reference, champion, [make_batch(2 + i % 8, 2_000, seed=100 + i) for i in range(40)])
    confirmed = sum(r.confirmed for r in reports)
    assert confirmed / len(reports) <= POLICY.p_value
    assert confirmed == 0  # significance AND effect size: stable windows do not reach PSI 0.1
    assert sum(len(r.drifted_features) for r in reports) <= 1
    assert all(r.verdict == "stable" and r.n_current == 2_000 for r in reports)
    # FDR alone (no effect size) keeps "any feature significant" near its level too
    assert sum(any(f.significant for f in r.features) for r in reports) <= 6


# --- (b) covariate shift -----------------------------------------------------------------------


def test_a_covariate_shift_is_confirmed_within_one_window(detector, reference, champion):
    shifted = make_batch(5, 2_000, seed=7, drift=DriftKnobs(covariate_shift=1.0))
    report = _check(detector, reference, champion, shifted)
    assert report.confirmed and report.verdict == "feature_drift"
    flagged = set(report.drifted_features)
    assert {"debt_to_income", "interest_rate", "credit_utilization"} <= flagged
    assert flagged <= SHIFTED and not flagged & UNAFFECTED
    assert report.drift_share >= 0.3  # the moved inputs carry much of the model's importance
    assert report.score is not None and report.score.shifted  # the applicants got riskier: scores moved too
    assert any("features drifted" in r for r in report.reasons)


def test_a_shift_in_an_unimportant_feature_is_reported_as_carrying_no_weight(detector, reference, champion):
    current = make_batch(5, 2_000, seed=8)
    current["region"] = np.where(np.arange(len(current)) % 2 == 0, "south", current["region"])
    report = _check(detector, reference, champion, current)
    assert report.drifted_features == ["region"] and report.verdict == "feature_drift"  # seen and reported ...
    assert report.drift_share < 0.05 and not report.score.shifted  # ... but the model gives region no weight


def test_a_small_window_gives_no_verdict_even_if_shifted(detector, reference, champion):
    small = make_batch(5, 200, seed=9, drift=DriftKnobs(covariate_shift=1.0))
    report = _check(detector, reference, champion, small)
    assert report.verdict == "insufficient" and not report.confirmed
    assert "only 200 predictions" in report.reasons[0] and report.features  # statistics still shown
    assert f"needs at least {POLICY.min_window:,}" in report.reasons[0]  # what it had and what it needs


# --- (c) concept drift -------------------------------------------------------------------------


def _labelled(booster, batch: pd.DataFrame, version: str = "1") -> pd.DataFrame:
    scores = booster.predict(build_features(batch, SPEC))
    decision = np.where(scores >= SPEC.training.decision_threshold, "decline", "approve")
    return pd.DataFrame(
        {"score": scores, "decision": decision, "outcome": batch["defaulted"], "model_version": version}
    )


def test_concept_drift_is_confirmed_from_labels_and_stable_labels_are_not(champion):
    booster = champion[0]
    holdout = concept.live_quality(_labelled(booster, make_batch(3, 5_000, seed=21)), SPEC)["1"]
    stable = concept.live_quality(_labelled(booster, make_batch(6, 2_000, seed=22)), SPEC)["1"]
    changed = make_batch(6, 2_000, seed=22, drift=DriftKnobs(concept_shift=1.0))
    moved = concept.live_quality(_labelled(booster, changed), SPEC)["1"]

    ok = concept.concept_verdict(stable, holdout.value, POLICY, SPEC)
    assert not ok.confirmed and ok.verdict == "no_concept_drift"
    bad = concept.concept_verdict(moved, holdout.value, POLICY, SPEC)
    assert bad.confirmed and bad.verdict == "concept_drift" and bad.live < holdout.value - POLICY.max_quality_drop
    assert "worse than the holdout" in bad.reason
    json.dumps(bad.to_dict()) and json.dumps(moved.to_dict())


def test_live_quality_per_version_and_too_few_labels(champion):
    booster = champion[0]
    frame = pd.concat(
        [_labelled(booster, make_batch(6, 400, seed=30), "1"), _labelled(booster, make_batch(6, 100, seed=31), "2")],
        ignore_index=True,
    )
    frame.loc[frame.index[:50], "outcome"] = None  # labels not arrived yet: skipped
    quality = concept.live_quality(frame, SPEC)
    assert set(quality) == {"1", "2"} and quality["1"].n == 350 and quality["2"].n == 100
    q = quality["1"]
    assert q.metric == "auc" and 0.5 < q.value <= 1 and abs(q.calibration_gap) < 0.1
    few = concept.concept_verdict(quality["2"], 0.85, POLICY, SPEC)
    assert few.verdict == "insufficient" and not few.confirmed and "needs 300" in few.reason
    assert concept.concept_verdict(None, 0.85, POLICY, SPEC).verdict == "insufficient"
    with pytest.raises(detection.DriftError, match="must be 0 or 1"):
        concept.live_quality(frame.assign(outcome=2), SPEC)


# --- (d) the storm guard -----------------------------------------------------------------------

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
GUARD = DriftPolicy(cooldown_hours=24, max_retrains_per_week=2)


def test_no_trigger_without_confirmed_drift():
    decision = retrain_policy.decide_trigger(False, T0, [], GUARD)
    assert not decision.trigger and "no confirmed drift" in decision.reason


def test_first_confirmed_drift_triggers():
    decision = retrain_policy.decide_trigger(True, T0, [], GUARD)
    assert decision.trigger and "no earlier trigger" in decision.reason


def test_never_inside_the_cooldown():
    last = T0 - timedelta(hours=23, minutes=59)
    decision = retrain_policy.decide_trigger(True, T0, [last], GUARD)
    assert not decision.trigger and decision.next_allowed == last + timedelta(hours=24)
    assert "in cooldown until 2026-03-02 09:01 UTC (last retrain trigger 2026-03-01 09:01 UTC" in decision.reason
    assert retrain_policy.decide_trigger(
        True, last + timedelta(hours=24), [last], GUARD
    ).trigger  # exactly when it ends


def test_never_more_than_the_weekly_budget():
    past = [T0 - timedelta(days=6), T0 - timedelta(days=2)]
    decision = retrain_policy.decide_trigger(True, T0, past, GUARD)
    assert not decision.trigger and "2 retrains were already triggered in the last 7 days" in decision.reason
    assert decision.next_allowed == past[0] + timedelta(days=7)
    assert retrain_policy.decide_trigger(True, past[0] + timedelta(days=7), past, GUARD).trigger
    old = [T0 - timedelta(days=9), T0 - timedelta(days=8)]  # outside the trailing week
    assert retrain_policy.decide_trigger(True, T0, old, GUARD).trigger


def test_hourly_confirmed_drift_for_three_weeks_triggers_exactly_as_allowed():
    triggers: list[datetime] = []
    for hour in range(21 * 24):
        now = T0 + timedelta(hours=hour)
        if retrain_policy.decide_trigger(True, now, triggers, GUARD).trigger:
            triggers.append(now)
    day = timedelta(days=1)
    assert triggers == [T0, T0 + day, T0 + 7 * day, T0 + 8 * day, T0 + 14 * day, T0 + 15 * day]
    assert all(b - a >= timedelta(hours=GUARD.cooldown_hours) for a, b in zip(triggers, triggers[1:], strict=False))
    for t in triggers:
        assert sum(t - timedelta(days=7) < u <= t for u in triggers) <= GUARD.max_retrains_per_week


def test_the_guard_can_be_switched_off_and_accepts_naive_utc_times():
    off = DriftPolicy(max_retrains_per_week=0)
    assert not retrain_policy.decide_trigger(True, T0, [], off).trigger
    naive_last = (T0 - timedelta(hours=1)).replace(tzinfo=None)  # as SQLite returns it
    assert not retrain_policy.decide_trigger(True, T0, [naive_last], GUARD).trigger
    later = [T0 + timedelta(hours=1)]  # a trigger after "now" (re-run of an older interval) is ignored
    assert retrain_policy.decide_trigger(True, T0, later, GUARD).trigger


def test_the_guard_takes_airflows_pendulum_times():
    """A scheduled drift run's window end is a pendulum DateTime; a trigger 2 days ago must be counted, not crash."""
    import pendulum

    now = pendulum.instance(T0)  # what context["data_interval_end"] holds
    past = [T0 - timedelta(days=2)]
    decision = retrain_policy.decide_trigger(True, now, past, GUARD)
    assert decision.trigger and "2 of at most 2 in the last 7 days" in decision.reason
    full = retrain_policy.decide_trigger(True, now, [T0 - timedelta(days=6), *past], GUARD)
    assert not full.trigger and full.next_allowed == T0 + timedelta(days=1)
    assert type(as_utc(now)) is datetime and as_utc(now) - timedelta(days=7) == T0 - timedelta(days=7)


# --- (e) saving and loading ----------------------------------------------------------------------


def test_a_saved_detector_reports_as_a_fresh_fit_and_a_batched_call(tmp_path, detector, reference, champion):
    window = make_batch(5, 2_000, seed=41, drift=DriftKnobs(covariate_shift=0.5))
    saved = _check(detector, reference, champion, window)  # loaded from the folder
    fresh = _check(tmp_path / "v1", reference, champion, window)  # fitted by this call
    assert (tmp_path / "v1" / "config.toml").is_file()
    assert [f.p_value for f in saved.features] == [f.p_value for f in fresh.features]
    assert saved.to_dict() == fresh.to_dict()
    (batched,) = _checks(detector, reference, champion, [window])
    assert batched.to_dict() == saved.to_dict()


def test_the_worker_fits_once_and_refits_a_stale_or_broken_detector(tmp_path, reference):
    path = tmp_path / "v1"
    first = detection.run_detector(path, reference, SPEC, POLICY.p_value)
    assert first.fitted and first.stale_reason is None and (path / "config.toml").is_file()
    assert first.windows == () and first.versions["alibi_detect"] == "0.13.0"
    again = detection.run_detector(path, reference, SPEC, POLICY.p_value)  # it matches: loaded, not refitted
    assert not again.fitted and again.stale_reason is None
    other_p = detection.run_detector(path, reference, SPEC, 0.01)  # the policy changed: refit
    assert other_p.fitted and "p=0.01" in other_p.stale_reason
    other_ref = detection.run_detector(path, reference.head(5_000), SPEC, 0.01)  # another reference: refit
    assert other_ref.fitted and "is not this reference's sample" in other_ref.stale_reason
    assert not detection.run_detector(path, reference.head(5_000), SPEC, 0.01).fitted
    (path / "config.toml").write_text("garbage = [")  # a broken folder is refitted, not trusted
    broken = detection.run_detector(path, reference.head(5_000), SPEC, 0.01)
    assert broken.fitted and "cannot be loaded" in broken.stale_reason
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1"]  # atomic: no temporary folder left behind


def test_the_reference_sample_is_bounded_and_seeded():
    big = make_batch(0, 25_000, seed=3)
    a, b = detection.reference_sample(big), detection.reference_sample(big)
    assert len(a) == detection.REFERENCE_MAX_ROWS and a.equals(b)


# --- (f) the report --------------------------------------------------------------------------


def test_the_report_serialises_and_renders_a_self_contained_page(detector, reference, champion):
    report = _check(detector, reference, champion, make_batch(5, 2_000, seed=51, drift=DriftKnobs(1.0)))
    data = report.to_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text)["verdict"] == "feature_drift" and len(data["features"]) == len(SPEC.features.names)
    assert all(set(row) >= {"name", "p_value", "psi", "drifted"} for row in report.feature_rows())
    json.dumps(report.feature_rows(), allow_nan=False)
    summary = report.summary()
    assert "\n" not in summary and summary.startswith("credit_risk: inputs moved")
    page = render_html(report, context={"champion": "v3", "window": "2026-03-01 .. 2026-03-02"})
    assert page.startswith("<!DOCTYPE html>") and '<table class="features">' in page
    svgs = re.findall(r"<svg.*?</svg>", page, flags=re.S)
    assert len(svgs) == len(SPEC.features.names) + 1  # every feature + the score
    assert all(ElementTree.fromstring(svg).tag.endswith("svg") for svg in svgs)  # well-formed inline SVG
    for name in SPEC.features.names:
        assert f"<td>{name}</td>" in page
    assert "FEATURE DRIFT" in page and "champion" in page and "effect size (floor)" in page
    assert "<script" not in page and "src=" not in page and "href=" not in page and "@import" not in page


# --- (g) bad input ---------------------------------------------------------------------------


def test_a_window_missing_a_feature_is_a_clear_error(detector, reference, champion):
    window = make_batch(5, 600, seed=61).drop(columns=["debt_to_income"])
    with pytest.raises(detection.DriftError, match=r"live window lacks columns \['debt_to_income'\]") as info:
        detection.check(detector, reference, window, SPEC, champion[1], champion[2], window["age"], POLICY)
    assert isinstance(info.value, LooplineError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("empty", [pd.DataFrame(), make_batch(5, 10, seed=62).iloc[:0]])
def test_an_empty_window_is_insufficient(detector, reference, champion, empty):
    report = _check(detector, reference, champion, empty)
    assert report.verdict == "insufficient" and not report.confirmed and report.n_current == 0
    assert "no predictions in the window" in report.reasons[0]
    json.dumps(report.to_dict(), allow_nan=False)
    assert "NO VERDICT" in render_html(report)


def test_a_detector_fitted_on_other_data_is_refitted_not_trusted(tmp_path, detector, champion, caplog):
    copy = shutil.copytree(detector, tmp_path / "v1")  # the module's detector stays as it is
    other = make_batch(9, 3_000, seed=63)
    report = _check(copy, other, champion, make_batch(5, 600, seed=64))
    assert report.n_reference == 3_000
    assert "is not this reference's sample" in caplog.text and "refitted" in caplog.text
    assert not detection.run_detector(copy, other, SPEC, POLICY.p_value).fitted  # saved over the stale one


def test_a_missing_drift_environment_is_a_clear_error(tmp_path, reference):
    missing = tmp_path / "no-venv" / "bin" / "python"
    with pytest.raises(detection.DriftError, match=r"no-venv/bin/python does not exist \(LOOPLINE_DRIFT_PYTHON\)"):
        detection.run_detector(tmp_path / "v1", reference, SPEC, POLICY.p_value, python=missing)


def test_a_failing_worker_is_a_drift_error_with_its_stderr(tmp_path, reference):
    python = tmp_path / "python"  # an interpreter that fails the way a broken .venv-drift would
    python.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named alibi_detect' >&2\nexit 1\n")
    python.chmod(0o755)
    with pytest.raises(detection.DriftError, match=r"exit status 1 .*No module named alibi_detect"):
        detection.run_detector(tmp_path / "v1", reference, SPEC, POLICY.p_value, python=python)
    slow = tmp_path / "slow"
    slow.write_text("#!/bin/sh\necho 'importing' >&2\nexec sleep 30\n")
    slow.chmod(0o755)
    with pytest.raises(detection.DriftError, match=r"took longer than 0.5 s"):
        detection.run_detector(tmp_path / "v1", reference, SPEC, POLICY.p_value, python=slow, timeout=0.5)


def test_scores_are_optional(detector, reference):
    report = detection.check(detector, reference, make_batch(5, 600, seed=65), SPEC, {}, None, None, POLICY)
    assert report.score is None and any("score drift not checked" in r for r in report.reasons)
    assert abs(sum(f.importance for f in report.features) - 1) < 1e-9  # no importances: equal weights


# --- helpers ---------------------------------------------------------------------------------


def test_encoding_uses_spec_level_order_an_extra_code_and_the_reference_median():
    frame = make_batch(0, 5, seed=70)
    frame["home_ownership"] = ["OWN", None, "CASTLE", "RENT", "OTHER"]
    frame["age"] = [30.0, np.nan, 50.0, 40.0, np.nan]
    medians = {**detection.reference_medians(frame, SPEC), "age": 41.5}
    x = detection.encode(frame, SPEC, medians)
    names = SPEC.features.names
    assert x.dtype == np.float64 and x.shape == (5, len(names))
    assert x[:, names.index("home_ownership")].tolist() == [1, 4, 4, 0, 3]
    assert x[:, names.index("age")].tolist() == [30, 41.5, 50, 40, 41.5]


def test_encoding_coerces_text_numbers_nullable_integers_and_categorical_dtypes():
    assert detection.numeric_values(pd.Series(["1.5", "x", None]), 9.0).tolist() == [1.5, 9.0, 9.0]
    assert detection.numeric_values(pd.Series([2, pd.NA], dtype="Int64"), 9.0).tolist() == [2.0, 9.0]
    assert detection.numeric_values(pd.Series([1.0, np.inf]), 9.0).tolist() == [1.0, np.inf]  # only missing filled
    levels = ["a", "b"]
    assert detection.category_codes(pd.Series(["b", "z", None, np.nan]), levels).tolist() == [1, 2, 2, 2]
    as_category = pd.Series(pd.Categorical(["a", None, "b"], categories=["b", "a"]))  # spec order, not the dtype's
    assert detection.category_codes(as_category, levels).tolist() == [0, 2, 1]
    assert detection.category_codes(pd.Series([1, 2]), ["1", "2"]).tolist() == [2, 2]  # a number is not its text


def test_categorical_psi():
    ref = ["a"] * 50 + ["b"] * 50
    assert detection.categorical_psi(ref, ref) == 0
    assert detection.categorical_psi(ref, ["a"] * 45 + ["b"] * 55) < 0.02
    assert detection.categorical_psi(ref, ["a"] * 50 + ["c"] * 50) > 1  # a new category
    assert detection.categorical_psi([0, 1, 1, 2], [0.0, 1.0, 1.0, 2.0]) == 0  # codes, fast path
    assert detection.categorical_psi(["a", None], ["a", None]) == 0  # missing is a category
    with pytest.raises(ValueError):
        detection.categorical_psi([], ["a"])


def test_feature_weights_fold_derived_features_and_normalise():
    weights = detection.feature_weights({"history_to_age": 2.0, "age": 2.0, "region": -1, "bogus": 5.0}, SPEC)
    assert weights["age"] == pytest.approx(0.75) and weights["credit_history_months"] == pytest.approx(0.25)
    assert sum(weights.values()) == pytest.approx(1) and weights["region"] == 0
    uniform = detection.feature_weights({}, SPEC)
    assert set(uniform.values()) == {1 / len(SPEC.features.names)}


def test_bh_adjusted_p_values():
    q = detection.bh_adjusted(np.array([0.01, 0.04, 0.03, 0.5]))
    assert q.tolist() == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.5])


def test_a_large_window_is_compared_as_a_bounded_sample(detector, reference, monkeypatch):
    monkeypatch.setattr(detection, "CURRENT_MAX_ROWS", 1_000)
    window = make_batch(5, 3_000, seed=66)
    scores = np.linspace(0, 1, 3_000)
    report = detection.check(detector, reference, window, SPEC, {}, scores, scores, POLICY)
    assert report.n_current == 3_000 and report.n_compared == 1_000 and report.score.n_current == 1_000
    assert any("compared as a seeded sample of 1,000" in r for r in report.reasons)
    again = detection.check(detector, reference, window, SPEC, {}, scores, scores, POLICY)
    assert again.to_dict() == report.to_dict()  # seeded: the same window gives the same report


# --- the effect-size floor that knows the window's size ------------------------------------------


def test_the_expected_null_shift_is_what_sampling_noise_gives():
    rng = np.random.default_rng(3)
    for n in (200, 2_000):
        pairs = [(rng.gamma(2.0, 1.5, 5_000), rng.gamma(2.0, 1.5, n)) for _ in range(200)]  # both sides sampled
        simulated = np.mean([detection.normalised_wasserstein(ref, cur) for ref, cur in pairs])
        expected = np.mean([detection.expected_null_shift(ref, n) for ref, _ in pairs])
        assert abs(expected / simulated - 1) < 0.1
    reference = rng.gamma(2.0, 1.5, 5_000)
    assert detection.normalised_wasserstein(reference, reference + 0.3 * reference.std()) == pytest.approx(0.3)
    assert detection.expected_null_shift(np.ones(100), 50) == 0.0  # a constant reference has no noise to scale


def test_the_floor_is_noise_for_small_windows_and_min_shift_for_big_ones():
    policy = DriftPolicy()
    rng = np.random.default_rng(4)
    reference = rng.normal(size=20_000)
    floors = [
        detection.effect_floor("numeric", policy, 20_000, n, detection.expected_null_shift(reference, n))
        for n in (200, 2_000, 1_000_000)
    ]
    assert floors[0] > 0.2 > floors[1] > 0.06 and floors[2] == policy.min_shift  # 3x noise; noise ~ 1/sqrt(n)
    assert detection.effect_floor("categorical", policy, 20_000, 2_000, levels=4) == policy.min_psi
    assert detection.effect_floor("categorical", policy, 20_000, 20, levels=4) > 0.4  # 3 x 3 x (1/20 + 1/20000)
    with pytest.raises(ValueError):
        DriftPolicy(noise_multiple=0.5)  # below the noise itself: the floor would let noise through
    with pytest.raises(ValueError):
        DriftPolicy(min_shift=0)


def test_a_small_move_of_one_input_is_caught_in_a_big_window_and_only_that_input(detector, reference, champion):
    window = make_batch(5, 2_000, seed=61)
    window["age"] = window["age"] + 0.15 * reference["age"].std()  # 0.15 SD: PSI about 0.02, far below 0.1
    report = _check(detector, reference, champion, window)
    assert report.drifted_features == ["age"] and report.verdict == "feature_drift"
    age = next(f for f in report.features if f.name == "age")
    assert age.shift == pytest.approx(0.15, abs=0.03) and age.effect_floor < 0.1 and age.psi < POLICY.min_psi
    assert "age (mean +0.1" in report.reasons[0] and ", shift 0.1" in report.reasons[0]  # signed, then the distance
    assert {"shift", "effect_floor"} <= set(report.feature_rows()[0])
