"""The generator emits only data its own suite accepts, at any size, seed, week and drift knob setting."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loopline.core.settings import get_settings
from loopline.core.spec import load_spec
from loopline.ingestion.validation import load_suite_dict, read_batch, validate_frame
from tests.generators import credit_risk as datagen

SUITE = "credit_risk_batch"
EXTREMES = [
    datagen.DriftKnobs(),
    datagen.DriftKnobs(covariate_shift=3.0),  # the CLI's maximum
    datagen.DriftKnobs(concept_shift=3.0),
    datagen.DriftKnobs(covariate_shift=3.0, concept_shift=3.0),
]


@pytest.fixture(scope="module")
def suite() -> dict:
    return load_suite_dict(SUITE, get_settings().expectations_dir)


@pytest.fixture(scope="module")
def entity_id() -> str:
    return load_spec("credit_risk", get_settings().models_dir).dataset.entity_id


def _expectations(suite: dict, kind: str) -> dict[str, dict]:
    return {e["kwargs"].get("column"): e["kwargs"] for e in suite["expectations"] if e["type"] == kind}


def test_the_generators_limits_are_the_suites(suite):
    """datagen keeps to constants of its own; they must be the suite's (a changed suite fails here)."""
    rows = _expectations(suite, "expect_table_row_count_to_be_between")[None]
    assert rows["min_value"] == 1 and rows["max_value"] == datagen.MAX_ROWS
    between = _expectations(suite, "expect_column_values_to_be_between")
    assert between["employment_years"]["max_value"] == datagen.MAX_EMPLOYMENT_YEARS
    not_null = _expectations(suite, "expect_column_values_to_not_be_null")
    for column, (_rate, mostly) in datagen.MISSING.items():
        assert not_null[column].get("mostly", 1.0) == mostly, column
    # the generator leaves gaps only where the suite tolerates some; no expectation it does not know of
    assert set(datagen.MISSING) <= {c for c, kw in not_null.items() if kw.get("mostly", 1.0) < 1.0}
    known = {
        "expect_table_columns_to_match_set",
        "expect_table_row_count_to_be_between",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_unique",
        "expect_column_values_to_match_regex",
        "expect_column_values_to_be_in_type_list",
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
    }
    assert {e["type"] for e in suite["expectations"]} <= known, "a new kind of expectation: teach datagen and this test"


@pytest.mark.slow  # ~40 s: GE over 200k rows
def test_200k_rows_over_seeds_weeks_and_extreme_knobs_pass_the_real_suite(tmp_path, entity_id):
    """Eight batches of 25k rows (every knob at 0 and at its maximum, labelled and not), each through
    a CSV file as ingest reads it, then all of them as one dataset as training validates it."""
    frames = []
    for n, drift in enumerate(EXTREMES * 2):
        frame = datagen.make_batch(3 + 7 * n, n_rows=25_000, seed=n % 3, drift=drift, with_labels=n < 6)
        path = datagen.write_batch(frame, tmp_path / f"b{n}.csv")
        frames.append(read_batch(path))
    for n in (1, 7):  # one batch of each kind on its own (per-batch shares), the rest as a whole
        report = validate_frame(frames[n], f"b{n}", SUITE, get_settings().expectations_dir, entity_id=entity_id)
        assert report.success, report.summary()
    whole = pd.concat(frames, ignore_index=True)
    assert len(whole) == 200_000
    report = validate_frame(whole, "all", SUITE, get_settings().expectations_dir, entity_id=entity_id)
    assert report.success, report.summary()


def test_small_batches_never_miss_more_than_the_suite_tolerates(tmp_path, entity_id):
    """Gaps are drawn per row: 3 of 10 missing employment years would break `mostly: 0.8`."""
    for n in range(1, 41):
        for seed in range(25):
            frame = datagen.make_batch(seed, n_rows=n, seed=seed, drift=EXTREMES[seed % 4])
            for column, (_rate, mostly) in datagen.MISSING.items():
                assert frame[column].notna().mean() >= mostly, (n, seed, column)
    for n in (1, 7, 10):  # and the real suite agrees
        report = validate_frame(
            datagen.make_batch(2, n_rows=n, seed=n),
            "small",
            SUITE,
            get_settings().expectations_dir,
            entity_id=entity_id,
        )
        assert report.success, report.summary()


@pytest.mark.slow  # ~20 s: two million rows
def test_careers_fit_the_applicant_and_the_suite_in_millions_of_rows():
    """Old applicants with long careers: at most since age 16 and within the suite's 70 years."""
    frame = datagen.make_batch(0, n_rows=datagen.MAX_ROWS, seed=0, drift=EXTREMES[3])
    years, age = frame["employment_years"], frame["age"]
    assert (years.dropna() <= datagen.MAX_EMPLOYMENT_YEARS).all()
    assert (years.dropna() <= (age[years.notna()] - 16)).all()
    assert (frame["credit_history_months"] <= (age - 18) * 12).all()


def test_batch_sizes_outside_the_suite_are_refused():
    for n in (0, datagen.MAX_ROWS + 1):
        with pytest.raises(ValueError, match="n_rows"):
            datagen.make_batch(0, n_rows=n)


def test_the_distribution_of_large_batches_is_unchanged():
    """Only offending rows are touched: at the usual sizes the draws are exactly the earlier ones."""
    frame = datagen.make_batch(4, n_rows=5000, seed=1)
    rng = np.random.default_rng([1, 4])
    age = np.clip(rng.gamma(6.0, 6.5, 5000) + 18, 18, 90).round()
    assert np.array_equal(frame["age"].to_numpy(), age)
    assert 0.06 < frame["employment_years"].isna().mean() < 0.10
