"""The card_fraud demo model: its folder keeps the platform's contracts (spec, feature repo, generator, suite)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from loopline.core.features import build_features, feature_set
from loopline.core.settings import get_settings
from loopline.core.spec import load_spec
from loopline.features.definitions import check_model_uses, load_definitions
from loopline.ingestion.ingest import normalise
from loopline.ingestion.validation import read_batch, validate_frame
from loopline.serving.request_schema import application_model
from tests.generators import card_fraud as datagen

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_spec("card_fraud", ROOT / "models")
KNOBS = [
    datagen.DriftKnobs(),
    datagen.DriftKnobs(covariate_shift=3.0),
    datagen.DriftKnobs(concept_shift=3.0),
    datagen.DriftKnobs(covariate_shift=3.0, concept_shift=3.0),
]


def test_the_spec_uses_the_feature_repos_views_by_its_keys():
    assert SPEC.dataset.keys == ["card_id", "merchant_id"]
    assert check_model_uses(load_definitions(ROOT / "feature_repo"), SPEC) == []
    assert not set(SPEC.dataset.keys) & set(feature_set(SPEC).columns), "a key is never a model input"
    assert feature_set(SPEC).columns == [
        "amount",
        "hour",
        *SPEC.features.stored_columns,
        "amount_vs_card_mean",
        "merchant_surge",
        "merchant_category",
        "channel",
    ]


def test_a_request_must_carry_the_keys_and_the_model_never_sees_them():
    row = application_model(SPEC)
    good = {"transaction_id": "T1", "card_id": "C1", "merchant_id": "M1", "amount": 12.5, "channel": "online"}
    assert row.model_validate(good).card_id == "C1"
    assert row.model_validate({**good, "card_id": 42}).card_id == 42  # an int64 entity's key
    for missing in ("card_id", "merchant_id"):
        with pytest.raises(ValidationError, match=missing):
            row.model_validate({k: v for k, v in good.items() if k != missing})
    for bad in ("", None, 1.5, True):
        with pytest.raises(ValidationError, match="card_id"):
            row.model_validate({**good, "card_id": bad})
    assert set(row.model_json_schema()["required"]) >= {"transaction_id", "card_id", "merchant_id"}


def test_without_its_stored_columns_the_model_refuses_to_build_a_matrix():
    batch = datagen.make_batch(0, 200, seed=1)
    with pytest.raises(KeyError, match="stored feature columns .*card_activity__spend_1h.* feature store"):
        build_features(batch, SPEC)
    joined = batch.assign(**{c: 2.0 for c in SPEC.features.stored_columns})
    matrix = build_features(joined, SPEC)
    assert list(matrix.columns) == feature_set(SPEC).columns
    np.testing.assert_allclose(matrix["amount_vs_card_mean"], batch["amount"] / 2.0)
    np.testing.assert_allclose(matrix["merchant_surge"], 1.0)


# -- the generator's contract (loopline.ops.demo_data) ----------------------------------------------


def test_deterministic_and_weeks_continue_one_population():
    pd.testing.assert_frame_equal(datagen.make_batch(3, 600, seed=1), datagen.make_batch(3, 600, seed=1))
    a, b = datagen.make_batch(3, 600, seed=1), datagen.make_batch(4, 600, seed=1)
    assert not a["transaction_id"].isin(b["transaction_id"]).any()
    assert a["card_id"].isin(b["card_id"]).mean() > 0.8, "the same cards spend week after week"
    assert not a.equals(datagen.make_batch(3, 600, seed=2))


def test_schema_ranges_and_labels():
    df = datagen.make_batch(0, 5000, seed=0)
    assert list(df.columns) == SPEC.input_columns == list(datagen.COLUMNS)
    for name, bounds in SPEC.features.numeric.items():
        assert df[name].min() >= bounds.min and df[name].max() <= bounds.max, name
    for name, levels in SPEC.features.categorical.items():
        assert set(df[name]) <= set(levels), name
    assert 0.015 < df["is_fraud"].mean() < 0.06
    ts = pd.to_datetime(df["transacted_at"])
    assert ts.is_monotonic_increasing
    assert ts.min() >= pd.Timestamp(datagen.EPOCH) and ts.max() < pd.Timestamp(datagen.EPOCH) + pd.Timedelta(days=7)
    assert (ts.dt.hour == df["hour"]).all()


def test_labels_arrive_later_for_the_same_rows_and_events_never_carry_them():
    unlabelled = datagen.make_batch(2, 800, seed=3, with_labels=False)
    assert unlabelled["is_fraud"].isna().all()
    labels = datagen.make_labels(2, 800, seed=3)
    assert list(labels["transaction_id"]) == list(unlabelled["transaction_id"])
    assert set(labels["is_fraud"]) == {0, 1}
    events = datagen.make_events(2, 800, seed=3)
    assert list(events.columns) == ["transaction_id", "transacted_at", "card_id", "merchant_id", "amount"]
    pd.testing.assert_frame_equal(events, unlabelled[list(events.columns)])


def test_fraud_shows_in_the_cards_last_hour():
    """The documented story: a stolen card's burst; genuine spending rarely repeats within the hour."""
    df = pd.concat([datagen.make_batch(w, 3000, seed=0) for w in range(2)], ignore_index=True)
    ts = pd.to_datetime(df["transacted_at"])
    previous = df.assign(ts=ts).groupby("card_id")["ts"].diff()
    recent = previous < pd.Timedelta(hours=1)
    assert recent[df["is_fraud"] == 1].mean() > 0.5
    assert recent[df["is_fraud"] == 0].mean() < 0.15


@pytest.mark.parametrize("knobs", KNOBS)
def test_every_knob_setting_passes_the_real_suite_and_normalises(tmp_path, knobs):
    for n, labelled in ((1, True), (7, True), (3000, False)):
        frame = datagen.make_batch(5, n, seed=n, drift=knobs, with_labels=labelled)
        raw = read_batch(datagen.write_batch(frame, tmp_path / f"b{n}.csv"))
        report = validate_frame(
            raw, "b", SPEC.dataset.expectation_suite, get_settings().expectations_dir, entity_id="transaction_id"
        )
        assert report.success, report.summary()
        stored = normalise(raw, SPEC)
        assert list(stored.columns) == SPEC.input_columns and str(stored["card_id"].dtype) == "string"


def test_malformed_batches_fail_the_suite(tmp_path):
    for kind in datagen.MALFORMED_KINDS:
        raw = read_batch(datagen.write_malformed(kind, tmp_path / f"{kind}.csv"))
        report = validate_frame(
            raw, kind, SPEC.dataset.expectation_suite, get_settings().expectations_dir, entity_id="transaction_id"
        )
        assert not report.success, kind


def test_generated_weeks_can_end_now_in_whole_days_keeping_their_hours():
    """``loopline generate --ending-now``: the demo's online store serves values within their ttl."""
    import pandas as pd

    from loopline.ops.demo_data import days_to_now, shift_days, week_start

    now = pd.Timestamp("2026-12-07 16:30", tz="UTC")
    days = days_to_now(5, now)
    end = week_start(6).tz_localize("UTC") + pd.Timedelta(days=days)
    assert end <= now < end + pd.Timedelta(days=1)
    assert days_to_now(5, week_start(2).tz_localize("UTC")) == 0  # never moved backwards
    stamps = pd.DataFrame({"at": pd.to_datetime(["2026-02-09 23:15:00", "2026-02-10 01:00:00"])})
    moved = shift_days(stamps, "at", 3)
    assert moved["at"].dt.hour.tolist() == [23, 1] and moved["at"].dt.day.tolist() == [12, 13]
    text = shift_days(stamps.assign(at=stamps["at"].dt.strftime("%Y-%m-%d %H:%M:%S")), "at", 1)
    assert text["at"].tolist() == ["2026-02-10 23:15:00", "2026-02-11 01:00:00"]  # written back as text
