"""Time splits, deterministic LightGBM training and the evaluation metrics, on a small synthetic frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.core.features import feature_columns
from loopline.core.spec import ModelSpec, load_spec
from loopline.core.tasks import TASKS, ks_statistic
from loopline.ingestion.ingest import normalise
from loopline.training import trainer as training
from tests.generators import credit_risk as datagen

SPEC = load_spec("credit_risk", Path(__file__).resolve().parents[2] / "models")
PARAMS = {**SPEC.training.params, "seed": SPEC.training.seed, "num_boost_round": 60}
FIRST_MONDAY = pd.Timestamp("2026-01-05")  # a Monday: weeks run Monday..Sunday
ROWS_PER_WEEK = 250


def synthetic(spec: ModelSpec, weeks: int = 5, rows_per_week: int = ROWS_PER_WEEK, seed: int = 7) -> pd.DataFrame:
    """Labelled applications within the spec's ranges; default risk rises with debt_to_income."""
    rng = np.random.default_rng(seed)
    n = weeks * rows_per_week
    week_of_row = np.repeat(np.arange(weeks), rows_per_week)
    seconds = rng.integers(0, 7 * 24 * 3600, n)
    frame = pd.DataFrame(
        {
            spec.dataset.entity_id: [f"A{i:06d}" for i in range(n)],
            spec.dataset.timestamp: FIRST_MONDAY
            + pd.to_timedelta(week_of_row * 7, unit="D")
            + pd.to_timedelta(seconds, unit="s"),
            "age": rng.integers(18, 80, n).astype(float),
            "annual_income": rng.uniform(15_000, 200_000, n).round(-2),
            "loan_amount": rng.uniform(1_000, 50_000, n).round(-1),
            "loan_term_months": rng.choice([12.0, 24.0, 36.0, 60.0], n),
            "interest_rate": rng.uniform(3, 25, n).round(2),
            "debt_to_income": rng.uniform(0, 1.5, n).round(3),
            "credit_history_months": rng.integers(0, 400, n).astype(float),
            "num_open_accounts": rng.integers(0, 20, n).astype(float),
            "num_delinquencies_2y": rng.integers(0, 5, n).astype(float),
            "credit_utilization": rng.uniform(0, 1.2, n).round(3),
            "employment_years": rng.uniform(0, 40, n).round(1),
        }
    )
    for name, levels in spec.features.categorical.items():
        frame[name] = pd.array(rng.choice(levels, n), dtype="string")
    noisy = frame["debt_to_income"] + rng.normal(0, 0.15, n)
    frame[spec.dataset.target] = pd.array((noisy > 0.9).astype(int), dtype="Int8")
    # every value is inside the spec's ranges, like a batch that passed validation
    for name, bounds in spec.features.numeric.items():
        assert frame[name].between(bounds.min, bounds.max).all(), name
    return frame[spec.input_columns]


def week_starts(frame: pd.DataFrame) -> set[pd.Timestamp]:
    return set(frame["applied_at"].dt.to_period("W-SUN").dt.start_time)


def weeks(*offsets: int) -> set[pd.Timestamp]:
    return {FIRST_MONDAY + pd.Timedelta(weeks=o) for o in offsets}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic(SPEC)


@pytest.fixture(scope="module")
def split(frame) -> training.Split:
    return training.time_split(frame, SPEC)


@pytest.fixture(scope="module")
def model(split) -> training.TrainedModel:
    return training.train(split, SPEC, PARAMS)


# --- the synthetic data itself ------------------------------------------------------------------


def test_the_synthetic_frame_matches_the_spec(frame):
    assert list(frame.columns) == SPEC.input_columns
    assert week_starts(frame) == weeks(0, 1, 2, 3, 4)
    assert 0.2 < frame["defaulted"].astype(float).mean() < 0.6


# --- time split ---------------------------------------------------------------------------------


def test_time_split_puts_the_latest_weeks_in_holdout_and_the_earliest_in_train(split):
    assert week_starts(split.train) == weeks(0, 1, 2)
    assert week_starts(split.valid) == weeks(3)
    assert week_starts(split.holdout) == weeks(4)
    assert split.train["applied_at"].max() < split.valid["applied_at"].min()
    assert split.valid["applied_at"].max() < split.holdout["applied_at"].min()


def test_time_split_has_no_overlap_and_loses_no_row(frame, split):
    ids = [set(part["applicant_id"]) for part in (split.train, split.valid, split.holdout)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert ids[0] | ids[1] | ids[2] == set(frame["applicant_id"])
    assert (len(split.train), len(split.valid), len(split.holdout)) == (750, 250, 250)
    assert all(part.index.tolist() == list(range(len(part))) for part in (split.train, split.valid, split.holdout))


def test_time_split_does_not_depend_on_row_order(frame, split):
    shuffled = training.time_split(frame.sample(frac=1, random_state=1), SPEC)
    for a, b in ((split.train, shuffled.train), (split.valid, shuffled.valid), (split.holdout, shuffled.holdout)):
        assert set(a["applicant_id"]) == set(b["applicant_id"])


def test_weeks_end_on_sunday_night(frame):
    edge = frame.copy()
    sunday_night = FIRST_MONDAY + pd.Timedelta(weeks=4) - pd.Timedelta(seconds=1)  # Sun 2026-02-01 23:59:59
    monday_morning = FIRST_MONDAY + pd.Timedelta(weeks=4)  # Mon 2026-02-02 00:00:00
    edge.loc[0, "applied_at"], edge.loc[1, "applied_at"] = sunday_night, monday_morning
    split = training.time_split(edge, SPEC)
    assert "A000000" in set(split.valid["applicant_id"])
    assert "A000001" in set(split.holdout["applicant_id"])


def test_time_split_accepts_timestamp_strings(frame, split):
    as_text = frame.assign(applied_at=frame["applied_at"].dt.strftime("%Y-%m-%d %H:%M:%S"))
    assert len(training.time_split(as_text, SPEC).holdout) == len(split.holdout)


def test_describe_reports_rows_and_bounds(split):
    described = split.describe("applied_at")
    assert (described["train_rows"], described["valid_rows"], described["holdout_rows"]) == (750, 250, 250)
    assert described["holdout_start"] == str(split.holdout["applied_at"].min())
    assert described["train_end"] < described["valid_start"] < described["holdout_start"]


def test_too_few_weeks_is_refused(frame):
    two_weeks = frame[frame["applied_at"] < FIRST_MONDAY + pd.Timedelta(weeks=2)]
    with pytest.raises(training.TrainingError, match="need at least 3 weeks of labelled data for a time split, have 2"):
        training.time_split(two_weeks, SPEC)


def test_too_few_training_rows_is_refused(frame):
    last_three_weeks = frame[frame["applied_at"] >= FIRST_MONDAY + pd.Timedelta(weeks=2)]
    with pytest.raises(training.TrainingError, match="only 250 training rows; the spec asks for at least 500"):
        training.time_split(last_three_weeks, SPEC)


def test_a_single_class_window_is_refused(frame):
    with pytest.raises(training.TrainingError, match="the train window has a single class"):
        training.time_split(frame.assign(defaulted=pd.array([0] * len(frame), dtype="Int8")), SPEC)
    only_payers_in_holdout = frame.copy()
    in_holdout = only_payers_in_holdout["applied_at"] >= FIRST_MONDAY + pd.Timedelta(weeks=4)
    only_payers_in_holdout.loc[in_holdout, "defaulted"] = 0
    with pytest.raises(training.TrainingError, match="the holdout window has a single class"):
        training.time_split(only_payers_in_holdout, SPEC)


def test_training_errors_are_value_errors():
    assert issubclass(training.TrainingError, ValueError)


# --- labelled rows ------------------------------------------------------------------------------


def test_unlabelled_rows_are_dropped(frame):
    partly = frame.copy()
    partly.loc[:9, "defaulted"] = pd.NA
    kept = training.labelled(partly, SPEC)
    assert len(kept) == len(frame) - 10 and kept.index.tolist() == list(range(len(kept)))
    assert "A000000" not in set(kept["applicant_id"]) and kept["defaulted"].notna().all()


# --- training -----------------------------------------------------------------------------------


def test_training_is_deterministic(split, model):
    again = training.train(split, SPEC, PARAMS)
    assert again.best_iteration == model.best_iteration
    first = training.predict_scores(model.booster, split.holdout, SPEC)
    second = training.predict_scores(again.booster, split.holdout, SPEC)
    assert np.array_equal(first, second)


def test_the_seed_matters(split, model):
    other = training.train(split, SPEC, {**PARAMS, "seed": PARAMS["seed"] + 1})
    first = training.predict_scores(model.booster, split.holdout, SPEC)
    assert not np.array_equal(first, training.predict_scores(other.booster, split.holdout, SPEC))


def test_train_does_not_modify_the_params_it_is_given(split):
    params = dict(PARAMS)
    trained = training.train(split, SPEC, params)
    assert params == PARAMS
    assert trained.params["num_boost_round"] == 60 and trained.params["deterministic"] is True
    assert 1 <= trained.best_iteration <= 60


def test_scores_are_probabilities_one_per_row(split, model):
    scores = training.predict_scores(model.booster, split.holdout, SPEC)
    assert scores.shape == (len(split.holdout),) and ((scores >= 0) & (scores <= 1)).all()


def test_feature_importance_sums_to_one_over_the_model_columns(model):
    importance = training.feature_importance(model.booster)
    assert list(importance) == feature_columns(SPEC)
    assert sum(importance.values()) == pytest.approx(1.0)
    assert all(v >= 0 for v in importance.values())
    assert max(importance, key=importance.get) == "debt_to_income"  # the label was made from it


# --- metrics by hand ----------------------------------------------------------------------------


def classification_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """The binary task's holdout metrics with a given decision threshold."""
    training_spec = SPEC.training.model_copy(update={"decision_threshold": threshold})
    return TASKS["binary"].holdout_metrics(labels, scores, SPEC.model_copy(update={"training": training_spec}))


def test_ks_of_perfect_separation_is_one():
    assert ks_statistic(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0


def test_ks_of_a_reversed_score_is_zero():
    # KS here is one-sided (defaulters must score higher); a score that ranks them lowest separates nothing
    assert ks_statistic(np.array([0, 0, 1, 1]), np.array([0.9, 0.8, 0.2, 0.1])) == 0.0


def test_ks_of_an_uninformative_score_is_zero():
    assert ks_statistic(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5])) == 0.0


def test_ks_by_hand():
    # thresholds 0.8, 0.4, 0.35, 0.1 give (fpr, tpr) = (0, .5), (.5, .5), (.5, 1), (1, 1): max gap 0.5
    assert ks_statistic(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.5)
    # 3 payers, 1 defaulter ranked second: best cut keeps the defaulter and one payer -> 1 - 1/3
    assert ks_statistic(np.array([0, 1, 0, 0]), np.array([0.9, 0.7, 0.3, 0.1])) == pytest.approx(2 / 3)


def test_classification_metrics_of_perfect_separation():
    m = classification_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]), threshold=0.5)
    assert m["auc"] == 1.0 and m["ks"] == 1.0
    assert m["brier"] == pytest.approx((0.01 + 0.04 + 0.04 + 0.01) / 4)
    assert m["precision_at_threshold"] == 1.0 and m["recall_at_threshold"] == 1.0
    assert m["positive_decision_rate"] == 0.5 and m["positive_rate"] == 0.5 and m["rows"] == 4.0


def test_classification_metrics_by_hand():
    m = classification_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]), threshold=0.5)
    assert m["auc"] == pytest.approx(0.75)  # 3 of the 4 (defaulter, payer) pairs ranked right
    assert m["ks"] == pytest.approx(0.5)
    assert m["brier"] == pytest.approx((0.1**2 + 0.4**2 + 0.65**2 + 0.2**2) / 4)
    assert m["precision_at_threshold"] == 1.0 and m["recall_at_threshold"] == 0.5  # only 0.8 declined
    assert m["positive_decision_rate"] == 0.25


def test_a_score_equal_to_the_threshold_is_declined():
    m = classification_metrics(np.array([0, 1]), np.array([0.2, 0.3]), threshold=0.3)
    assert m["positive_decision_rate"] == 0.5 and m["recall_at_threshold"] == 1.0


def test_no_declines_gives_zero_precision_not_an_error():
    m = classification_metrics(np.array([0, 1, 1]), np.array([0.1, 0.2, 0.25]), threshold=0.9)
    assert m["precision_at_threshold"] == 0.0 and m["recall_at_threshold"] == 0.0 and m["positive_decision_rate"] == 0.0


def test_all_metrics_are_plain_floats():
    m = classification_metrics(np.array([0, 1]), np.array([0.2, 0.7]), threshold=0.5)
    assert all(type(v) is float for v in m.values())


# --- the whole recipe ---------------------------------------------------------------------------


def test_fit_and_evaluate_returns_holdout_metrics(frame, split, model):
    trained, metrics = training.fit_and_evaluate(frame, SPEC, PARAMS)
    assert set(metrics) >= {"auc", "ks", "brier", "precision_at_threshold", "recall_at_threshold"}
    assert metrics["rows"] == float(len(split.holdout))
    assert metrics["auc"] > 0.85 and 0 < metrics["ks"] <= 1 and 0 <= metrics["brier"] < 0.2
    assert metrics == training.evaluate(model.booster, split.holdout, SPEC)  # same as the step-by-step recipe
    assert trained.best_iteration == model.best_iteration


def test_fit_and_evaluate_ignores_unlabelled_rows(frame):
    _, baseline = training.fit_and_evaluate(frame, SPEC, PARAMS)
    unlabelled = synthetic(SPEC, weeks=5, rows_per_week=40, seed=99).assign(
        applicant_id=lambda d: "U" + d["applicant_id"], defaulted=pd.array([pd.NA] * 200, dtype="Int8")
    )
    _, with_unlabelled = training.fit_and_evaluate(pd.concat([frame, unlabelled], ignore_index=True), SPEC, PARAMS)
    assert with_unlabelled == baseline


def test_rows_without_a_timestamp_are_refused_not_dropped():
    frame = pd.concat([normalise(datagen.make_batch(w, 200, seed=2), SPEC) for w in range(4)], ignore_index=True)
    frame.loc[:4, "applied_at"] = pd.NaT
    with pytest.raises(training.TrainingError, match="5 rows have no applied_at"):
        training.time_split(frame, SPEC)
