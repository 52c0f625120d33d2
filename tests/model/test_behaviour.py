"""Behavioural tests of a model trained by the real recipe: quality, direction, invariance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loopline.core.settings import get_settings
from loopline.core.spec import load_spec
from loopline.ingestion.ingest import normalise
from loopline.training import trainer as training
from tests.generators import credit_risk as datagen


@pytest.fixture(scope="module")
def spec():
    return load_spec("credit_risk", get_settings().models_dir)


@pytest.fixture(scope="module")
def trained(spec):
    frame = pd.concat([normalise(datagen.make_batch(w, 1000, seed=3), spec) for w in range(5)], ignore_index=True)
    model, metrics = training.fit_and_evaluate(frame, spec, {**spec.training.params, "seed": spec.training.seed})
    return model.booster, metrics


@pytest.fixture(scope="module")
def applicants(spec):
    return normalise(datagen.make_batch(20, 400, seed=9), spec)


def test_minimum_quality_on_the_holdout(trained, spec):
    _, metrics = trained
    assert metrics["auc"] >= spec.quality_gate["min_auc"]
    assert metrics["brier"] <= spec.quality_gate["max_brier"]


@pytest.mark.parametrize(
    "column,delta,direction",
    [("debt_to_income", 0.5, +1), ("num_delinquencies_2y", 3, +1), ("annual_income", 60_000, -1)],
)
def test_direction(trained, spec, applicants, column, delta, direction):
    booster, _ = trained
    before = training.predict_scores(booster, applicants, spec)
    after = training.predict_scores(booster, applicants.assign(**{column: applicants[column] + delta}), spec)
    assert np.mean(np.sign(after - before) == direction) > 0.6
    assert direction * (after.mean() - before.mean()) > 0


def test_invariance_to_identity_and_timestamp(trained, spec, applicants):
    booster, _ = trained
    renamed = applicants.assign(applicant_id="someone-else", applied_at=pd.Timestamp("2030-01-01"))
    assert np.array_equal(
        training.predict_scores(booster, applicants, spec), training.predict_scores(booster, renamed, spec)
    )
