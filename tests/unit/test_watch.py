"""The watch on tables the tests generate (``watch_data``): the label-free estimate against the realised quality,
a moved base rate, the concept check's noise at a window's size, and what moved answers alone mean."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from loopline.monitoring import impact
from tests.unit import watch_data as wd


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("watch_models")


# A champion under-confident on unseen rows (its raw scores put the expected AUC ~0.02 low) and one over-confident
# (many leaves on few rows: ~0.01 high), both "well calibrated" by their holdout ECE.
SHAPES = {
    "under": {"rows_a_week": 1_000, "strength": 2.5, "num_leaves": 63, "min_child_samples": 10},
    "over": {"rows_a_week": 1_500, "strength": 4.0, "num_leaves": 63, "min_child_samples": 10},
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_classifier_estimate_is_the_realised_auc_on_the_champions_unseen_rows(folder, shape):
    knobs = dict(SHAPES[shape])
    spec = wd.spec_folder(folder, "binary")
    champion = wd.champion(spec, rows_a_week=knobs.pop("rows_a_week"), strength=knobs.pop("strength"), **knobs)
    assert champion.calibration.describe().startswith("well calibrated")
    estimator = impact.fit_estimator(spec, champion.valid, champion.holdout, champion.calibration)
    unseen = champion.unseen
    assert estimator.reference_quality == pytest.approx(roc_auc_score(unseen["outcome"], unseen["score"]), abs=0.01)
    errors = []
    for seed in range(6):  # fresh rows of the same weeks' kind, each with its realised AUC
        rows = wd.label(wd.inputs(5_000, 300 + seed, week=6), "binary", 300 + seed, strength=SHAPES[shape]["strength"])
        window = champion.answer(rows)
        errors.append(estimator.estimate(window)["auc"] - roc_auc_score(window["outcome"], window["score"]))
    assert np.mean(np.abs(errors)) <= 0.01, errors
    text = " ".join(impact.judge(estimator, unseen, window, spec, spec.monitoring).reasons(spec.monitoring))
    assert "well calibrated" in text and "unseen rows" in text
