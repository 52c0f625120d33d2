"""The champion's calibration recorded at training time (loopline.training.calibration), on real models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.isotonic import IsotonicRegression

from loopline.core.spec import load_spec
from loopline.monitoring import impact
from loopline.training import calibration as calib
from loopline.training import trainer as training
from tests.unit.test_tasks import tickets  # noqa: F401 (the multiclass fixture)
from tests.unit.test_training import PARAMS, SPEC, synthetic


@pytest.fixture(scope="module")
def trained():
    split = training.time_split(synthetic(SPEC, weeks=6, rows_per_week=600), SPEC)
    return split, training.train(split, SPEC, PARAMS)


def squash(rows: pd.DataFrame) -> pd.DataFrame:  # the same ranking, probabilities pushed towards 0.5
    return rows.assign(score=0.5 + (rows["score"] - 0.5) * 0.3)


def test_a_well_calibrated_binary_champion_records_its_holdout_ece_and_no_map(trained):
    split, model = trained
    result = training.calibration_of(model.booster, split, SPEC)
    holdout = training.answers(model.booster, split.holdout, SPEC)
    assert result.holdout_ece == pytest.approx(calib.calibration_error(holdout["score"], holdout["outcome"]))
    assert result.holdout_ece < SPEC.training.max_calibration_error and not result.calibrated
    assert result.describe() == f"well calibrated (ECE {result.holdout_ece:.3f} on holdout)"


def test_a_poorly_calibrated_champion_is_mapped_on_validation_not_on_the_holdout(trained):
    split, model = trained
    valid = squash(training.answers(model.booster, split.valid, SPEC))
    holdout = squash(training.answers(model.booster, split.holdout, SPEC))
    result = calib.measure(SPEC, valid, holdout, limit=0.05)
    assert result.calibrated and result.fitted_on == "validation" and result.holdout_ece > 0.05
    assert result.calibrated_ece < result.holdout_ece
    assert result.describe().startswith(f"isotonic on validation (holdout ECE {result.holdout_ece:.3f} → ")
    # the map is the isotonic fit of the validation answers, exactly as scikit-learn predicts it
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(valid["score"], valid["outcome"])
    probe = np.linspace(-0.1, 1.1, 301)
    np.testing.assert_allclose(result.probabilities(probe), iso.predict(probe), atol=1e-12)
    # fitting on the holdout instead would give another map: the holdout only judges it
    on_holdout = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    on_holdout.fit(holdout["score"], holdout["outcome"])
    assert not np.allclose(result.probabilities(probe), on_holdout.predict(probe))


def test_the_recorded_calibration_survives_json_and_the_estimate_reads_a_map_fitted_on_the_unseen_rows(trained):
    split, model = trained
    valid = squash(training.answers(model.booster, split.valid, SPEC))
    holdout = squash(training.answers(model.booster, split.holdout, SPEC))
    recorded = calib.measure(SPEC, valid, holdout, limit=0.05)
    loaded = calib.Calibration.from_dict(json.loads(json.dumps(recorded.to_dict())))
    assert loaded == recorded
    # the recorded map is the champion's lineage, named in the estimate; the estimate's probabilities come from
    # the map fitted on all its unseen rows (the recorded one's steps flatten the ranking: see calibration.py)
    estimator = impact.fit_estimator(SPEC, valid, holdout, loaded)
    assert estimator.calibration is loaded and estimator.calibrated
    unseen = pd.concat([valid, holdout], ignore_index=True)
    mapped = calib.fit_probability_map(unseen["score"].to_numpy(), unseen["outcome"].to_numpy())
    window = squash(training.answers(model.booster, split.holdout, SPEC))
    np.testing.assert_allclose(estimator.probabilities(window["score"]), mapped.probabilities(window["score"]))
    assert abs(estimator.probabilities(unseen["score"]).mean() - unseen["outcome"].mean()) < 0.005
    judged = impact.judge(estimator, holdout, window, SPEC, SPEC.monitoring)
    assert judged.calibration == f"{recorded.describe()}, recorded at training; probabilities from {mapped.describe()}"
    # an older champion (nothing recorded): measured at check time, and the estimate says so
    fallback = impact.fit_estimator(SPEC, valid, holdout)
    assert fallback.calibration.source == "fitted at check time" and fallback.calibration.calibrated
    assert "fitted at check time" in impact.judge(fallback, holdout, window, SPEC, SPEC.monitoring).calibration


def test_a_multiclass_champion_records_its_top_label_calibration(tickets):  # noqa: F811
    spec, table, model, _ = tickets
    split = training.time_split(training.labelled(table, spec), spec)
    result = training.calibration_of(model.booster, split, spec)
    holdout = training.answers(model.booster, split.holdout, spec)
    classes = np.array(spec.dataset.classes, dtype=object)
    right = (classes[holdout["outcome"].astype(int)] == holdout["decision"].to_numpy(dtype=object)).astype(float)
    assert result.holdout_ece == pytest.approx(calib.calibration_error(holdout["score"], right))
    assert result.calibrated == (result.holdout_ece > spec.training.max_calibration_error)


def test_a_regressor_has_no_calibration():
    from tests.unit.test_tasks import DELIVERY

    assert calib.measure(DELIVERY, pd.DataFrame(), pd.DataFrame(), 0.05) is None


@pytest.mark.parametrize("value", [0, 1, -0.1, 1.5, "high"])
def test_the_calibration_limit_is_validated_strictly(value):
    raw = SPEC.model_dump()
    raw["training"]["max_calibration_error"] = value
    with pytest.raises(ValidationError):
        type(SPEC).model_validate(raw)
    assert load_spec("credit_risk", SPEC.model_dir.parent).training.max_calibration_error == 0.05
