"""Feature building: column order, spec-ordered category codes, hand-checked derived features, NaN not inf."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.core.features import build_features, categorical_columns, derived_sources, feature_columns
from loopline.core.spec import load_spec
from tests.generators import credit_risk as datagen

SPEC = load_spec("credit_risk", Path(__file__).resolve().parents[2] / "models")

BASE = {
    "applicant_id": "A-1",
    "applied_at": "2026-01-05 10:00:00",
    "age": 40.0,
    "annual_income": 48_000.0,
    "loan_amount": 12_000.0,
    "loan_term_months": 12.0,
    "interest_rate": 12.0,
    "debt_to_income": 0.3,
    "credit_history_months": 120.0,
    "num_open_accounts": 4.0,
    "num_delinquencies_2y": 0.0,
    "credit_utilization": 0.25,
    "employment_years": 5.0,
    "home_ownership": "RENT",
    "loan_purpose": "car",
    "employment_type": "salaried",
    "region": "north",
    "defaulted": 0,
}


def frame(*rows: dict) -> pd.DataFrame:
    """Raw applications: each row is BASE with the given changes."""
    return pd.DataFrame([{**BASE, **row} for row in (rows or ({},))])


# --- shape --------------------------------------------------------------------------------------


def test_feature_columns_are_numeric_then_derived_then_categorical():
    assert feature_columns(SPEC) == [
        "age",
        "annual_income",
        "loan_amount",
        "loan_term_months",
        "interest_rate",
        "debt_to_income",
        "credit_history_months",
        "num_open_accounts",
        "num_delinquencies_2y",
        "credit_utilization",
        "employment_years",
        "loan_to_income",
        "installment_to_income",
        "history_to_age",
        "home_ownership",
        "loan_purpose",
        "employment_type",
        "region",
    ]
    assert list(derived_sources(SPEC)) == ["loan_to_income", "installment_to_income", "history_to_age"]
    assert categorical_columns(SPEC) == ["home_ownership", "loan_purpose", "employment_type", "region"]


def test_output_columns_follow_feature_columns_whatever_the_input_order():
    raw = frame({}, {"age": 30.0})
    shuffled = raw[list(reversed(raw.columns))]
    out = build_features(shuffled, SPEC)
    assert list(out.columns) == feature_columns(SPEC)
    pd.testing.assert_frame_equal(out, build_features(raw, SPEC))


def test_every_output_column_is_float64():
    raw = frame({}, {"home_ownership": None, "annual_income": 0.0})
    raw["num_open_accounts"] = raw["num_open_accounts"].astype("int64")  # ints in, floats out
    raw["region"] = raw["region"].astype("string")
    out = build_features(raw, SPEC)
    assert out.dtypes.tolist() == [np.dtype("float64")] * len(feature_columns(SPEC))


def test_numeric_text_is_coerced_and_garbage_becomes_nan():
    raw = frame({}, {}).astype({"age": object})
    raw.loc[0, "age"], raw.loc[1, "age"] = "41", "forty"
    out = build_features(raw, SPEC)
    assert out["age"].iloc[0] == 41.0 and math.isnan(out["age"].iloc[1])


def test_the_index_is_kept_and_the_input_is_not_modified():
    raw = frame({}, {"age": 50.0}).set_axis([10, 7])
    before = raw.copy()
    out = build_features(raw, SPEC)
    assert out.index.tolist() == [10, 7]
    pd.testing.assert_frame_equal(raw, before)


def test_extra_columns_are_ignored():
    out = build_features(frame().assign(favourite_colour="blue"), SPEC)
    assert "favourite_colour" not in out.columns and "applicant_id" not in out.columns


# --- categorical codes --------------------------------------------------------------------------


@pytest.mark.parametrize("feature", list(SPEC.features.categorical))
def test_each_level_gets_its_position_in_the_spec(feature):
    levels = SPEC.features.categorical[feature]
    out = build_features(frame(*({feature: level} for level in levels)), SPEC)
    assert out[feature].tolist() == [float(i) for i in range(len(levels))]


def test_codes_do_not_depend_on_which_levels_a_frame_contains():
    only_own = build_features(frame({"home_ownership": "OWN"}), SPEC)
    assert only_own["home_ownership"].iloc[0] == 1.0  # RENT=0, OWN=1 in spec order
    mixed = build_features(frame({"home_ownership": "OTHER"}, {"home_ownership": "OWN"}), SPEC)
    assert mixed["home_ownership"].tolist() == [3.0, 1.0]


def test_a_pandas_categorical_with_one_category_still_gets_the_spec_code():
    raw = frame({"home_ownership": "MORTGAGE"}, {"home_ownership": "MORTGAGE"})
    raw["home_ownership"] = raw["home_ownership"].astype("category")  # its own code would be 0
    assert build_features(raw, SPEC)["home_ownership"].tolist() == [2.0, 2.0]


@pytest.mark.parametrize("value", ["CASTLE", "own", " OWN", "", None, np.nan])
def test_unknown_or_missing_category_is_nan(value):
    out = build_features(frame({"home_ownership": value}, {"home_ownership": "RENT"}), SPEC)
    assert math.isnan(out["home_ownership"].iloc[0]) and out["home_ownership"].iloc[1] == 0.0


def test_missing_category_in_a_string_column_is_nan():
    raw = frame({}, {})
    raw["region"] = pd.array(["west", pd.NA], dtype="string")
    assert build_features(raw, SPEC)["region"].iloc[0] == 3.0
    assert math.isnan(build_features(raw, SPEC)["region"].iloc[1])


# --- derived features ---------------------------------------------------------------------------


def test_derived_features_on_a_hand_computed_row():
    # 12 000 over 12 months at 12 %/year: the textbook annuity payment is 1 066.19 per month.
    out = build_features(frame(), SPEC).iloc[0]
    assert out["loan_to_income"] == pytest.approx(12_000 / 48_000)
    assert out["installment_to_income"] == pytest.approx(1066.19 / 4_000, abs=0.01 / 4_000)
    assert out["history_to_age"] == pytest.approx(10 / 40)  # 120 months = 10 years, age 40


def test_annuity_on_a_second_textbook_loan():
    # 10 000 over 36 months at 6 %/year: 304.22 per month; income 60 000/year = 5 000/month.
    raw = frame({"loan_amount": 10_000.0, "loan_term_months": 36.0, "interest_rate": 6.0, "annual_income": 60_000.0})
    assert build_features(raw, SPEC)["installment_to_income"].iloc[0] == pytest.approx(304.22 / 5_000, abs=1e-6)


def test_zero_interest_rate_pays_principal_over_term():
    raw = frame({"loan_amount": 1_200.0, "interest_rate": 0.0, "loan_term_months": 12.0, "annual_income": 12_000.0})
    out = build_features(raw, SPEC)
    assert out["installment_to_income"].iloc[0] == pytest.approx(100 / 1_000)  # 100/month over 1 000/month
    assert not np.isinf(out.to_numpy()).any()


def test_a_higher_rate_means_a_higher_installment():
    out = build_features(frame({"interest_rate": 0.0}, {"interest_rate": 6.0}, {"interest_rate": 30.0}), SPEC)
    low, mid, high = out["installment_to_income"]
    assert low < mid < high


@pytest.mark.parametrize("income", [0.0, np.nan, -1.0])
def test_zero_missing_or_negative_income_gives_nan_ratios_not_inf(income):
    out = build_features(frame({"annual_income": income}), SPEC)
    assert math.isnan(out["loan_to_income"].iloc[0]) and math.isnan(out["installment_to_income"].iloc[0])
    assert out["history_to_age"].iloc[0] == pytest.approx(0.25)  # unaffected
    assert not np.isinf(out.to_numpy()).any()


@pytest.mark.parametrize("age", [0.0, np.nan])
def test_zero_or_missing_age_gives_nan_history_to_age(age):
    out = build_features(frame({"age": age}), SPEC)
    assert math.isnan(out["history_to_age"].iloc[0]) and not np.isinf(out.to_numpy()).any()


def test_missing_interest_rate_gives_nan_installment():
    out = build_features(frame({"interest_rate": np.nan}), SPEC)
    assert math.isnan(out["installment_to_income"].iloc[0])


# --- missing input ------------------------------------------------------------------------------


def test_a_missing_raw_column_raises_key_error_naming_it():
    with pytest.raises(KeyError, match="debt_to_income"):
        build_features(frame().drop(columns=["debt_to_income"]), SPEC)


def test_all_missing_raw_columns_are_named():
    with pytest.raises(KeyError) as err:
        build_features(frame().drop(columns=["region", "age"]), SPEC)
    assert "'age'" in str(err.value) and "'region'" in str(err.value)


def test_id_timestamp_and_label_are_not_needed():
    out = build_features(frame().drop(columns=["applicant_id", "applied_at", "defaulted"]), SPEC)
    assert len(out) == 1


def test_every_derived_input_names_raw_features_it_is_built_from():
    """Drift weighs raw features by the importance of the derived inputs built from them."""
    raw = datagen.make_batch(0, n_rows=50, seed=2)
    base = build_features(raw, SPEC)
    for derived, sources in derived_sources(SPEC).items():
        assert set(sources) <= set(SPEC.features.numeric)
        for source in sources:  # changing a source changes the derived input
            moved = build_features(raw.assign(**{source: raw[source] * 1.5 + 1}), SPEC)
            assert not np.allclose(moved[derived], base[derived], equal_nan=True), (derived, source)
