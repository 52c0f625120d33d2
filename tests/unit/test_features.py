from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline import datagen
from loopline.features import build_features, feature_columns
from loopline.spec import load_spec

SPEC = load_spec("credit_risk", Path(__file__).resolve().parents[2] / "models")


def row(**overrides) -> pd.DataFrame:
    base = datagen.make_batch(0, n_rows=1, seed=0).iloc[[0]].reset_index(drop=True)
    for key, value in overrides.items():
        base[key] = pd.Series([value], dtype=object if isinstance(value, str) or value is None else None)
    return base


def test_columns_and_dtypes():
    out = build_features(datagen.make_batch(0, n_rows=50), SPEC)
    assert list(out.columns) == feature_columns(SPEC)
    assert set(out.dtypes) == {np.dtype("float64")}


def test_category_codes_follow_the_spec_not_the_data():
    only_own = build_features(row(home_ownership="OWN"), SPEC)
    assert only_own["home_ownership"].iloc[0] == 1.0  # RENT=0, OWN=1 in spec order
    unknown = build_features(row(home_ownership="CASTLE", region=None), SPEC)
    assert math.isnan(unknown["home_ownership"].iloc[0]) and math.isnan(unknown["region"].iloc[0])


def test_derived_features_by_hand():
    raw = row(loan_amount=12_000.0, annual_income=48_000.0, interest_rate=12.0, loan_term_months=12.0,
              credit_history_months=120.0, age=40.0)  # fmt: skip
    out = build_features(raw, SPEC).iloc[0]
    r = 0.01
    installment = 12_000 * r * (1 + r) ** 12 / ((1 + r) ** 12 - 1)
    assert out["loan_to_income"] == pytest.approx(0.25)
    assert out["installment_to_income"] == pytest.approx(installment / 4_000)
    assert out["history_to_age"] == pytest.approx(10 / 40)
    zero_rate = build_features(
        row(loan_amount=1200.0, interest_rate=0.0, loan_term_months=12.0, annual_income=12000.0), SPEC
    )
    assert zero_rate["installment_to_income"].iloc[0] == pytest.approx(100 / 1000)


def test_zero_or_missing_income_gives_nan_not_inf():
    raw = datagen.make_batch(0, n_rows=2, seed=0)
    raw["annual_income"] = [0.0, np.nan]
    out = build_features(raw, SPEC)
    assert out["loan_to_income"].isna().all() and out["installment_to_income"].isna().all()
    assert not np.isinf(out.to_numpy()).any()


def test_missing_column_is_named():
    with pytest.raises(KeyError, match="debt_to_income"):
        build_features(datagen.make_batch(0, n_rows=3).drop(columns=["debt_to_income"]), SPEC)
