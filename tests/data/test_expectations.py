"""The GE suite against data: it matches the spec, accepts good batches and rejects each bad kind."""

from __future__ import annotations

import json

import pytest

from loopline.core.settings import get_settings
from loopline.core.spec import load_spec
from loopline.ingestion.validation import SuiteError, load_suite_dict, validate_file, validate_frame
from tests.generators import credit_risk as datagen

SUITE = "credit_risk_batch"
ENTITY = "applicant_id"  # the spec's dataset.entity_id (checked below)


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
    report, frame = validate_file(path, SUITE, get_settings().expectations_dir, entity_id=ENTITY)
    assert report.success, report.summary()
    assert len(frame) == 500


def test_drifted_and_unlabelled_batches_still_pass(tmp_path):
    drift = datagen.DriftKnobs(covariate_shift=1.0, concept_shift=1.0)
    frame = datagen.make_batch(5, n_rows=500, drift=drift, with_labels=False)
    path = datagen.write_batch(frame, tmp_path / "drifted.parquet")
    report, _ = validate_file(path, SUITE, get_settings().expectations_dir, entity_id=ENTITY)
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
    report, _ = validate_file(path, SUITE, get_settings().expectations_dir, entity_id=ENTITY)
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
    report = validate_frame(frame, "dupes", SUITE, get_settings().expectations_dir, entity_id=ENTITY)
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
            validate_frame(datagen.make_batch(0, n_rows=10), "x", "broken", tmp_path, entity_id=ENTITY)
    (tmp_path / "bad_json.json").write_text("{")
    with pytest.raises(SuiteError, match="not valid JSON"):
        load_suite_dict("bad_json", tmp_path)
    with pytest.raises(SuiteError, match="not found"):
        load_suite_dict("absent", tmp_path)


def test_entity_column_is_the_specs(spec):
    assert spec.dataset.entity_id == ENTITY


def test_failures_on_the_entity_column_show_pseudonyms_never_ids(tmp_path):
    """Duplicate and missing ids: the report (failures, summary, full GE result, files) names no id in clear."""
    from loopline.core.pseudonym import pseudonym
    from loopline.ingestion.validation import validate_frame

    frame = datagen.make_batch(2, n_rows=300, seed=4)
    ids = list(frame[ENTITY])
    frame.loc[1:4, ENTITY] = ids[0]  # one id five times
    frame.loc[7, ENTITY] = ids[6]
    frame.loc[9, ENTITY] = None
    report = validate_frame(frame, "dupes", SUITE, get_settings().expectations_dir, entity_id=ENTITY, secret="k")
    assert not report.success
    unique = next(f for f in report.failures if f["expectation"] == "expect_column_values_to_be_unique")
    assert pseudonym(ids[0], "k") in unique["detail"] and "7 of 300 rows" in unique["detail"]
    json_path, text_path = report.write(tmp_path)
    written = json_path.read_text() + text_path.read_text() + report.summary()
    assert not [i for i in ids if i in written]
    result = next(
        e["result"]
        for e in report.ge_result["validation_results"][0]["expectations"]
        if e["expectation_type"] == "expect_column_values_to_be_unique"
    )
    assert result["partial_unexpected_index_list"] == [0, 1, 2, 3, 4, 6, 7]  # row positions stay
    assert {c["value"] for c in result["partial_unexpected_counts"]} == {pseudonym(ids[0], "k"), pseudonym(ids[6], "k")}
    assert result["unexpected_count"] == 7 and result["element_count"] == 300
    # everything else is as without redaction
    plain = validate_frame(frame, "dupes", SUITE, get_settings().expectations_dir, entity_id=None)
    assert [f["expectation"] for f in plain.failures] == [f["expectation"] for f in report.failures]
    assert plain.statistics == report.statistics and plain.success == report.success
    assert ids[0] in json.dumps(plain.to_dict())  # (what the redaction removes)


def test_entity_values_elsewhere_in_a_result_are_pseudonymised_too():
    """A multicolumn expectation or a GE format with observed values: strings are values there too."""
    from loopline.ingestion.validation import redact_entity_values

    described = {
        "validation_results": [
            {
                "expectations": [
                    {
                        "kwargs": {"column_list": ["applied_at", ENTITY]},
                        "result": {
                            "observed_value": ["A1", 3],
                            "details": {"mismatched": [{"value": "A2", "count": 2}]},
                            "unexpected_list": ["A3", None],
                            "partial_unexpected_index_list": [5],
                            "unexpected_count": 2,
                        },
                    },
                    {"kwargs": {"column": "region"}, "result": {"partial_unexpected_list": ["atlantis"]}},
                ]
            }
        ]
    }
    result = redact_entity_values(described, ENTITY, "k")["validation_results"][0]["expectations"]
    assert "A1" not in json.dumps(result[0]) and "A2" not in json.dumps(result[0]) and "A3" not in json.dumps(result[0])
    assert result[0]["result"]["observed_value"][1] == 3 and result[0]["result"]["unexpected_list"][1] is None
    assert result[0]["result"]["partial_unexpected_index_list"] == [5] and result[0]["result"]["unexpected_count"] == 2
    assert result[1]["result"]["partial_unexpected_list"] == ["atlantis"]  # other columns untouched
