"""The demo data generator: deterministic, realistic, with the documented relation and knobs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.core.spec import load_spec
from tests.generators import credit_risk as datagen

SPEC = load_spec("credit_risk", Path(__file__).resolve().parents[2] / "models")


def test_deterministic_by_seed_and_week():
    pd.testing.assert_frame_equal(datagen.make_batch(3, 200, seed=1), datagen.make_batch(3, 200, seed=1))
    assert not datagen.make_batch(3, 200, seed=1).equals(datagen.make_batch(3, 200, seed=2))
    assert (
        not datagen.make_batch(3, 200, seed=1)["applicant_id"]
        .isin(datagen.make_batch(4, 200, seed=1)["applicant_id"])
        .any()
    )


def test_schema_ranges_and_missing_values():
    df = datagen.make_batch(0, 5000, seed=0)
    assert list(df.columns) == SPEC.input_columns
    for name, bounds in SPEC.features.numeric.items():
        assert df[name].min() >= bounds.min and df[name].max() <= bounds.max, name
    for name, levels in SPEC.features.categorical.items():
        assert set(df[name].dropna()) <= set(levels), name
    assert 0.05 < df["employment_years"].isna().mean() < 0.11
    assert 0.10 < df["defaulted"].mean() < 0.22
    week = pd.to_datetime(df["applied_at"])
    assert week.min() >= pd.Timestamp(datagen.EPOCH) and week.max() < pd.Timestamp(datagen.EPOCH) + pd.Timedelta(days=7)


def test_documented_directions_hold():
    df = datagen.make_batch(0, 20000, seed=0)
    high_dti = df["debt_to_income"] > df["debt_to_income"].quantile(0.9)
    low_dti = df["debt_to_income"] < df["debt_to_income"].quantile(0.1)
    assert df.loc[high_dti, "defaulted"].mean() > 2 * df.loc[low_dti, "defaulted"].mean()
    assert df.loc[df["employment_type"] == "unemployed", "defaulted"].mean() > df["defaulted"].mean()


def test_covariate_shift_moves_the_documented_features():
    base = datagen.make_batch(1, 5000, seed=0)
    shifted = datagen.make_batch(1, 5000, seed=0, drift=datagen.DriftKnobs(covariate_shift=1.0))
    assert shifted["annual_income"].median() < base["annual_income"].median()
    assert shifted["debt_to_income"].mean() > base["debt_to_income"].mean()
    assert (shifted["home_ownership"] == "RENT").mean() > (base["home_ownership"] == "RENT").mean()


def test_concept_shift_changes_the_relation_not_the_applicants():
    base = datagen.make_batch(1, 2000, seed=0)
    shifted = datagen.make_batch(1, 2000, seed=0, drift=datagen.DriftKnobs(concept_shift=1.0))
    features = list(datagen.FEATURE_COLUMNS)
    pd.testing.assert_frame_equal(base[features], shifted[features])
    assert not np.allclose(datagen.true_default_logit(base), datagen.true_default_logit(base, concept_shift=1.0))


def test_label_delay_and_late_labels_agree():
    unlabelled = datagen.make_batch(2, 300, seed=4, with_labels=False)
    assert unlabelled["defaulted"].isna().all()
    labels = datagen.make_labels(2, 300, seed=4)
    assert labels["defaulted"].tolist() == datagen.make_batch(2, 300, seed=4)["defaulted"].tolist()
    assert labels["applicant_id"].tolist() == unlabelled["applicant_id"].tolist()


@pytest.mark.parametrize("kind", datagen.MALFORMED_KINDS)
def test_malformed_kinds_are_malformed(tmp_path, kind):
    path = datagen.write_malformed(kind, tmp_path / f"{kind}.csv")
    if kind in ("empty_file", "unparseable"):
        with pytest.raises((pd.errors.EmptyDataError, pd.errors.ParserError)):
            pd.read_csv(path)
        return
    df = pd.read_csv(path)
    if kind == "wrong_dtype":
        assert not pd.api.types.is_numeric_dtype(df["annual_income"])
    elif kind == "missing_column":
        assert "debt_to_income" not in df.columns
    else:
        assert (df["age"] < SPEC.features.numeric["age"].min).any()


def test_unknown_kind_and_atomic_writes(tmp_path):
    with pytest.raises(ValueError, match="expected one of"):
        datagen.write_malformed("sideways", tmp_path / "x.csv")
    datagen.write_batch(datagen.make_batch(0, 10), tmp_path / "a.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "a.parquet.done"]  # no temp file left
