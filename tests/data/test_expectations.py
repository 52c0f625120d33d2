"""The GE suite against data: it matches the spec, accepts good batches and rejects each bad kind."""

from __future__ import annotations

import pytest

from loopline import datagen
from loopline.settings import get_settings
from loopline.spec import load_spec
from loopline.validation import SuiteError, load_suite_dict, validate_file, validate_frame

SUITE = "credit_risk_batch"


@pytest.fixture(scope="module")
def spec():
    return load_spec("credit_risk", get_settings().models_dir)


def test_suite_covers_exactly_the_spec_columns(spec):
    suite = load_suite_dict(SUITE, get_settings().expectations_dir)
    column_set = next(e for e in suite["expectations"] if e["type"] == "expect_table_columns_to_match_set")
    assert column_set["kwargs"]["column_set"] == spec.input_columns
    ranges = {
        e["kwargs"]["column"]: (e["kwargs"]["min_value"], e["kwargs"]["max_value"])
        for e in suite["expectations"]
        if e["type"] == "expect_column_values_to_be_between"
    }
    assert ranges == {name: (r.min, r.max) for name, r in spec.features.numeric.items()}
    levels = {
        e["kwargs"]["column"]: e["kwargs"]["value_set"]
        for e in suite["expectations"]
        if e["type"] == "expect_column_values_to_be_in_set" and e["kwargs"]["column"] in spec.features.categorical
    }
    assert levels == spec.features.categorical


@pytest.mark.parametrize("week,seed", [(0, 0), (3, 1), (10, 2)])
def test_generated_batches_pass(tmp_path, week, seed):
    path = datagen.write_batch(datagen.make_batch(week, n_rows=500, seed=seed), tmp_path / "ok.csv")
    report, frame = validate_file(path, SUITE, get_settings().expectations_dir)
    assert report.success, report.summary()
    assert len(frame) == 500


def test_drifted_and_unlabelled_batches_still_pass(tmp_path):
    drift = datagen.DriftKnobs(covariate_shift=1.0, concept_shift=1.0)
    frame = datagen.make_batch(5, n_rows=500, drift=drift, with_labels=False)
    path = datagen.write_batch(frame, tmp_path / "drifted.parquet")
    report, _ = validate_file(path, SUITE, get_settings().expectations_dir)
    assert report.success, report.summary()


@pytest.mark.parametrize(
    "kind,expectation",
    [
        ("wrong_dtype", "expect_column_values_to_be_in_type_list"),
        ("missing_column", "expect_table_columns_to_match_set"),
        ("out_of_range", "expect_column_values_to_be_between"),
        ("empty_file", None),
        ("unparseable", None),
    ],
)
def test_each_malformed_kind_fails_with_a_readable_reason(tmp_path, kind, expectation):
    path = datagen.write_malformed(kind, tmp_path / f"{kind}.csv")
    report, _ = validate_file(path, SUITE, get_settings().expectations_dir)
    assert not report.success
    if expectation is None:
        assert report.read_error
    else:
        assert expectation in {f["expectation"] for f in report.failures}
    assert "FAILED" in report.summary()
    json_path, text_path = report.write(tmp_path / "report")
    assert json_path.exists() and text_path.read_text().startswith(f"{kind}.csv: FAILED")


def test_duplicate_applicants_and_unknown_categories_are_caught():
    frame = datagen.make_batch(1, n_rows=100)
    frame.loc[1, "applicant_id"] = frame.loc[0, "applicant_id"]
    frame.loc[2, "region"] = "atlantis"
    report = validate_frame(frame, "dupes", SUITE, get_settings().expectations_dir)
    failed = {(f["expectation"], f["column"]) for f in report.failures}
    assert ("expect_column_values_to_be_unique", "applicant_id") in failed
    assert ("expect_column_values_to_be_in_set", "region") in failed


def test_a_broken_suite_is_a_clear_error(tmp_path):
    for body in (
        '[{"type": "expect_nothing_at_all", "kwargs": {}}]',
        '[{"type": "expect_table_row_count_to_be_between"}]',
    ):
        (tmp_path / "broken.json").write_text(f'{{"name": "broken", "expectations": {body}}}')
        with pytest.raises(SuiteError, match="rejected"):
            validate_frame(datagen.make_batch(0, n_rows=10), "x", "broken", tmp_path)
    (tmp_path / "bad_json.json").write_text("{")
    with pytest.raises(SuiteError, match="not valid JSON"):
        load_suite_dict("bad_json", tmp_path)
    with pytest.raises(SuiteError, match="not found"):
        load_suite_dict("absent", tmp_path)
