from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline import datagen, training
from loopline.ingest import normalise
from loopline.spec import load_spec

SPEC = load_spec("credit_risk", Path(__file__).resolve().parents[2] / "models")
PARAMS = {**SPEC.training.params, "seed": SPEC.training.seed, "num_boost_round": 60}


@pytest.fixture(scope="module")
def frame():
    return pd.concat([normalise(datagen.make_batch(w, 400, seed=2), SPEC) for w in range(4)], ignore_index=True)


def test_time_split_is_ordered_and_disjoint(frame):
    split = training.time_split(frame, SPEC)
    assert split.train["applied_at"].max() < split.valid["applied_at"].min()
    assert split.valid["applied_at"].max() < split.holdout["applied_at"].min()
    assert len(split.train) + len(split.valid) + len(split.holdout) == len(frame)
    assert split.describe("applied_at")["holdout_rows"] == 400


def test_too_few_weeks_or_one_class_is_refused(frame):
    with pytest.raises(training.TrainingError, match="weeks"):
        training.time_split(frame[frame["applied_at"] < pd.Timestamp("2026-01-19")], SPEC)
    with pytest.raises(training.TrainingError, match="single class"):
        training.time_split(frame.assign(defaulted=pd.array([0] * len(frame), dtype="Int8")), SPEC)


def test_unlabelled_rows_are_dropped(frame):
    partly = frame.copy()
    partly.loc[:9, "defaulted"] = pd.NA
    assert len(training.labelled(partly, SPEC)) == len(frame) - 10


def test_training_is_deterministic(frame):
    a, metrics_a = training.fit_and_evaluate(frame, SPEC, PARAMS)
    b, metrics_b = training.fit_and_evaluate(frame, SPEC, PARAMS)
    assert metrics_a == metrics_b
    assert sum(training.feature_importance(a.booster).values()) == pytest.approx(1.0)
    assert set(metrics_a) >= {"auc", "ks", "brier", "precision_at_threshold", "recall_at_threshold"}


def test_metrics_by_hand():
    y = np.array([0, 0, 1, 1])
    perfect = training.classification_metrics(y, np.array([0.1, 0.2, 0.8, 0.9]), threshold=0.5)
    assert perfect["auc"] == 1.0 and perfect["ks"] == 1.0
    assert perfect["brier"] == pytest.approx((0.01 + 0.04 + 0.04 + 0.01) / 4)
    assert perfect["precision_at_threshold"] == 1.0 and perfect["recall_at_threshold"] == 1.0
    half = training.classification_metrics(y, np.array([0.6, 0.2, 0.8, 0.4]), threshold=0.5)
    assert half["precision_at_threshold"] == 0.5 and half["recall_at_threshold"] == 0.5
    assert half["auc"] == 0.75
