"""Stored features at serving time, in batch scoring and in the drift check, against a real Feast store (SQLite).

One feature repo (cards: a string key; merchants: an int64 key), values written offline and
materialised into the online store, a model whose spec reads three stored features.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("feast")

from loopline.core.features import FeatureSet  # noqa: E402
from loopline.core.spec import SpecError, load_spec  # noqa: E402
from loopline.features.definitions import load_definitions  # noqa: E402
from loopline.features.freshness import judge, schedule_period, view_freshness  # noqa: E402
from loopline.features.store import FeatureStore, StoreConfig  # noqa: E402
from loopline.monitoring import skew  # noqa: E402
from loopline.serving.stored import (  # noqa: E402
    StoredFeatureRefused,
    StoredFeatures,
    apply_rule,
    offline_features,
)

CARDS = """
entities:
  - {name: card, join_key: card_id, value_type: string}
  - {name: merchant, join_key: merchant_id, value_type: int64}
feature_views:
  - name: card_activity
    owner: risk
    entities: [card]
    ttl: 2d
    schedule: "@hourly"
    source: {dataset: payments, event_time: paid_at}
    features:
      - {name: spend_1h, agg: sum, of: amount, window: 1h}
      - {name: payments_1d, agg: count, window: 1d}
  - name: merchant_risk
    owner: risk
    entities: [merchant]
    ttl: 7d
    schedule: "@daily"
    source: {dataset: payments, event_time: paid_at}
    features:
      - {name: chargebacks_30d, agg: count, window: 30d}
"""

STORED = ["card_activity:spend_1h", "card_activity:payments_1d", "merchant_risk:chargebacks_30d"]
NOW = datetime.now(UTC).replace(microsecond=0)


def spec_raw(stored_missing: dict | None = None) -> dict:
    features = {
        "version": "1",
        "numeric": {"amount": {"min": 0, "max": 10000}},
        "categorical": {"channel": ["web", "pos"]},
        "stored": STORED,
    }
    if stored_missing is not None:
        features["stored_missing"] = stored_missing
    return {
        "name": "card_fraud",
        "task": "regression",
        "dataset": {
            "name": "card_fraud",
            "entity_id": "payment_id",
            "timestamp": "paid_at",
            "target": "y",
            "keys": ["card_id", "merchant_id"],
            "expectation_suite": "card_fraud_batch",
        },
        "features": features,
        "training": {
            "valid_weeks": 1,
            "holdout_weeks": 1,
            "min_train_rows": 10,
            "seed": 1,
            "early_stopping_rounds": 5,
            "params": {"objective": "regression"},
        },
        "quality_gate": {"max_rmse": 10},
    }


def spec_of(tmp_path: Path, raw: dict):
    folder = tmp_path / "models" / raw["name"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(raw))
    return load_spec(raw["name"], tmp_path / "models")


def card_rows(rows: list[tuple[str, datetime, float, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "card_id": [r[0] for r in rows],
            "paid_at": pd.to_datetime([r[1] for r in rows], utc=True),
            "spend_1h": [r[2] for r in rows],
            "payments_1d": np.array([r[3] for r in rows], dtype="int64"),
        }
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    root = tmp_path_factory.mktemp("feast")
    repo = root / "feature_repo"
    repo.mkdir()
    (repo / "cards.yaml").write_text(CARDS)
    defs = load_definitions(repo)
    assert not defs.errors, defs.errors
    fs = FeatureStore.open(defs, StoreConfig(root=root / "store"))
    fs.apply()
    # c3's only value is three days old: materialised by a first run that ended then, stale (ttl 2d) by now.
    fs.write_offline("card_activity", card_rows([("c3", NOW - timedelta(days=3), 7.0, 1)]), batch_id="old")
    fs.materialize("card_activity", NOW - timedelta(days=2, hours=12))
    fs.write_offline(
        "card_activity",
        card_rows(
            [
                ("c1", NOW - timedelta(hours=3), 10.0, 2),
                ("c1", NOW - timedelta(minutes=30), 25.0, 3),
                ("c2", NOW - timedelta(hours=1), 5.0, 1),
            ]
        ),
        batch_id="b1",
    )
    fs.materialize("card_activity", NOW)
    merchants = pd.DataFrame(
        {
            "merchant_id": np.array([7, 8], dtype="int64"),
            "paid_at": pd.to_datetime([NOW - timedelta(days=1), NOW - timedelta(days=1)], utc=True),
            "chargebacks_30d": np.array([4, 0], dtype="int64"),
        }
    )
    fs.write_offline("merchant_risk", merchants, batch_id="m1")
    fs.materialize("merchant_risk", NOW)
    return fs


def served(tmp_path: Path, store: FeatureStore, stored_missing: dict | None = None) -> StoredFeatures:
    return StoredFeatures(spec_of(tmp_path, spec_raw(stored_missing)), store.defs, store)


# --- the spec ----------------------------------------------------------------------------------------


def test_the_rule_defaults_to_refuse_and_names_only_views_the_model_reads(tmp_path):
    spec = spec_of(tmp_path, spec_raw())
    assert spec.features.stored_views == ["card_activity", "merchant_risk"]
    assert spec.features.scored_missing_views == []
    with pytest.raises(SpecError, match=r"stored_missing names views that no stored feature reads: \['cards'\]"):
        spec_of(tmp_path, spec_raw({"cards": "missing"}))
    with pytest.raises(SpecError, match="stored_missing"):
        spec_of(tmp_path, spec_raw({"card_activity": "zero"}))


def test_stored_columns_follow_the_numeric_ones_and_a_model_without_them_is_unchanged(tmp_path):
    spec = spec_of(tmp_path, spec_raw())
    assert FeatureSet(spec).columns == ["amount", *spec.features.stored_columns, "channel"]
    raw = spec_raw()
    raw["features"].pop("stored")
    plain = spec_of(tmp_path, raw)
    assert FeatureSet(plain).columns == ["amount", "channel"]


# --- online lookups ----------------------------------------------------------------------------------


def test_a_lookup_gives_each_rows_newest_values_by_its_keys_in_row_order(tmp_path, store):
    looked = served(tmp_path, store).lookup({"card_id": ["c2", "c1"], "merchant_id": [7, "8"]})
    assert looked.columns == {
        "card_activity__spend_1h": [5.0, 25.0],
        "card_activity__payments_1d": [1.0, 3.0],
        "merchant_risk__chargebacks_30d": [4.0, 0.0],
    }
    assert looked.missing == [[], []]


@pytest.mark.parametrize(
    ("card", "words"),
    [("zz", "card_id='zz' is not in the store"), ("c3", "card_id='c3' has only a stale value")],
)
def test_an_unknown_or_stale_key_is_refused_naming_the_key_and_the_view(tmp_path, store, card, words):
    with pytest.raises(StoredFeatureRefused) as err:
        served(tmp_path, store).lookup({"card_id": ["c1", card], "merchant_id": [7, 7]})
    assert str(err.value).startswith(f"row 1: {words}")
    assert "feature view 'card_activity'" in str(err.value)
    assert err.value.view == "card_activity" and err.value.key == {"card_id": card}


def test_rule_missing_scores_the_views_features_as_missing_and_flags_the_row(tmp_path, store):
    lookup = served(tmp_path, store, {"card_activity": "missing"})
    looked = lookup.lookup({"card_id": ["zz", "c3", "c1"], "merchant_id": [7, 7, 7]})
    assert looked.columns["card_activity__spend_1h"] == [None, None, 25.0]
    assert looked.columns["card_activity__payments_1d"] == [None, None, 3.0]
    assert looked.columns["merchant_risk__chargebacks_30d"] == [4.0, 4.0, 4.0]  # the other view is served
    assert looked.missing == [["card_activity"], ["card_activity"], []]
    with pytest.raises(StoredFeatureRefused, match="merchant_id=99 is not in the store for feature view"):
        lookup.lookup({"card_id": ["c1"], "merchant_id": [99]})  # merchant_risk still refuses


def test_a_row_without_a_key_or_with_a_key_of_the_wrong_type_is_refused(tmp_path, store):
    lookup = served(tmp_path, store)
    with pytest.raises(StoredFeatureRefused, match="row 0: card_id is needed to look up feature view 'card_activity'"):
        lookup.lookup({"card_id": [None], "merchant_id": [7]})
    with pytest.raises(StoredFeatureRefused, match="merchant_id='x' is not an integer"):
        lookup.lookup({"card_id": ["c1"], "merchant_id": ["x"]})


def test_the_warm_up_reads_each_view_once_and_needs_no_known_key(tmp_path, store):
    served(tmp_path, store).warm_up()


def test_apply_rule_blanks_the_whole_view_when_one_feature_is_absent():
    columns = {"v__a": [1.0, 2.0], "v__b": [3.0, None]}
    status = {"v__a": ["present", "present"], "v__b": ["present", "not_found"]}
    values, flagged = apply_rule("v", "missing", [{"k": 1}, {"k": 2}], columns, status)
    assert values == {"v__a": [1.0, None], "v__b": [3.0, None]} and flagged == [False, True]
    assert columns["v__a"] == [1.0, 2.0]  # the read itself is left as it was


# --- batch scoring: the offline store, point in time -------------------------------------------------


def test_batch_rows_get_the_values_as_of_their_own_time(tmp_path, store):
    spec = spec_of(tmp_path, spec_raw())
    rows = pd.DataFrame(
        {
            "payment_id": ["p1", "p2", "p3"],
            "card_id": ["c1", "c1", "c2"],
            "merchant_id": np.array([7, 7, 8], dtype="int64"),
            "paid_at": pd.to_datetime([NOW - timedelta(hours=2), NOW, NOW], utc=True),
        }
    )
    joined, missing = offline_features(rows, spec, store, store.defs)
    assert joined["card_activity__spend_1h"].tolist() == [10.0, 25.0, 5.0]  # p1 is before c1's 25.0
    assert joined["payment_id"].tolist() == ["p1", "p2", "p3"]
    assert missing == [[], [], []]


def test_batch_rows_follow_the_same_rule(tmp_path, store):
    rows = pd.DataFrame(
        {
            "payment_id": ["p1", "p2"],
            "card_id": ["c1", "c1"],
            "merchant_id": np.array([7, 7], dtype="int64"),
            "paid_at": pd.to_datetime([NOW - timedelta(hours=5), NOW], utc=True),  # p1: before c1's first value
        }
    )
    with pytest.raises(StoredFeatureRefused, match=r"1 row\(s\) have no value in feature view 'card_activity'"):
        offline_features(rows, spec_of(tmp_path, spec_raw()), store, store.defs)
    spec = spec_of(tmp_path, spec_raw({"card_activity": "missing"}))
    joined, missing = offline_features(rows, spec, store, store.defs)
    assert missing == [["card_activity"], []] and np.isnan(joined["card_activity__spend_1h"].iloc[0])


# --- skew: served vs offline point-in-time values ----------------------------------------------------


def logged_window(lookup: StoredFeatures, cards: list[str], merchants: list[int]) -> pd.DataFrame:
    """Rows as the service logs them: the values served, the keys, the time (and the entity's pseudonym)."""
    looked = lookup.lookup({"card_id": cards, "merchant_id": merchants})
    frame = pd.DataFrame(looked.columns)
    frame["card_id"], frame["merchant_id"] = cards, merchants
    frame["entity_hash"] = [f"h{i}" for i in range(len(cards))]
    frame["stored_missing"] = [",".join(m) for m in looked.missing]
    frame["logged_at"] = NOW.timestamp() + np.arange(len(cards))
    return frame


def test_served_values_that_match_the_offline_store_show_no_skew(tmp_path, store):
    lookup = served(tmp_path, store)
    window = logged_window(lookup, ["c1", "c2", "c1"], [7, 8, 8])
    result = skew.check(window, lookup.spec, store, store.defs, NOW, limit=0.01, sample=100)
    assert [(s.column, s.compared, s.differ) for s in result.skew] == [
        ("card_activity__spend_1h", 3, 0),
        ("card_activity__payments_1d", 3, 0),
        ("merchant_risk__chargebacks_30d", 3, 0),
    ]
    assert result.over == [] and not skew.decide_alert(result, NOW, [], 24).alert


def test_a_deliberately_skewed_feature_is_found_and_named_with_its_dag(tmp_path, store):
    lookup = served(tmp_path, store)
    # The online store is given a spend for c2 the offline store never had (a pipeline bug, say).
    store._fs.write_to_online_store(
        "card_activity",
        pd.DataFrame(
            {
                "card_id": ["c2"],
                "paid_at": pd.to_datetime([NOW - timedelta(minutes=50)], utc=True),
                "created": pd.to_datetime([NOW], utc=True),
                "spend_1h": [999.0],
                "payments_1d": np.array([1], dtype="int64"),
            }
        ),
    )
    try:
        window = logged_window(lookup, ["c1", "c2", "c1", "c2"], [7, 7, 8, 8])
        assert window["card_activity__spend_1h"].tolist() == [25.0, 999.0, 25.0, 999.0]
        result = skew.check(window, lookup.spec, store, store.defs, NOW, limit=0.01, sample=100)
    finally:  # put the offline truth back for the other tests
        store._fs.write_to_online_store(
            "card_activity",
            pd.DataFrame(
                {
                    "card_id": ["c2"],
                    "paid_at": pd.to_datetime([NOW - timedelta(hours=1)], utc=True),
                    "created": pd.to_datetime([NOW], utc=True),
                    "spend_1h": [5.0],
                    "payments_1d": np.array([1], dtype="int64"),
                }
            ),
        )
    shares = {s.column: s.share for s in result.skew}
    assert shares == {
        "card_activity__spend_1h": 0.5,
        "card_activity__payments_1d": 0.0,
        "merchant_risk__chargebacks_30d": 0.0,
    }
    assert result.over == ["skew:card_activity__spend_1h"]
    (line,) = result.lines()
    assert line == (
        "ALERT stored features: card_activity__spend_1h differs from the offline value in 50% of 4 served rows"
        " (limit 1%): look at DAG feature_card_activity"
    )
    alert = skew.decide_alert(result, NOW, [], 24)
    assert alert.alert and "feature_card_activity" in alert.reason


def test_rows_scored_as_missing_are_left_out_and_a_view_keyed_on_the_entity_is_said_not_compared(tmp_path, store):
    lookup = served(tmp_path, store, {"card_activity": "missing"})
    window = logged_window(lookup, ["zz", "c1"], [7, 7])
    assert len(skew.served_sample(window, lookup.spec, 100)) == 1
    raw = spec_raw()
    raw["dataset"]["entity_id"], raw["dataset"]["keys"] = "card_id", ["merchant_id"]
    keyed_on_entity = spec_of(tmp_path, raw)
    sample = window.assign(logged_at=window["logged_at"])
    skews, notes = skew.skew_of(sample.iloc[1:], keyed_on_entity, store, store.defs)
    assert notes == ["card_activity not compared for skew: it is keyed on card_id, logged only as a pseudonym"]
    assert [s.column for s in skews] == ["merchant_risk__chargebacks_30d"]


# --- freshness ---------------------------------------------------------------------------------------


def test_schedule_periods():
    assert schedule_period("@hourly") == timedelta(hours=1)
    assert schedule_period("*/15 * * * *") == timedelta(minutes=15)
    assert schedule_period("@once") is None


def test_a_view_is_stale_after_two_missed_runs_or_with_nothing_materialised():
    fresh = judge("card_activity", "@hourly", NOW - timedelta(minutes=90), NOW)
    assert not fresh.stale and fresh.age_seconds == 5400
    late = judge("card_activity", "@hourly", NOW - timedelta(hours=3), NOW)
    assert late.stale and late.text().endswith("stale, look at DAG feature_card_activity")
    assert judge("card_activity", "@hourly", None, NOW).stale


def test_freshness_is_read_from_the_store_and_a_stale_view_alerts(tmp_path, store):
    spec = spec_of(tmp_path, spec_raw())
    now = [f.to_dict() for f in view_freshness(store, store.defs, spec.features.stored_views, NOW)]
    assert [(f["view"], f["age_seconds"], f["stale"]) for f in now] == [
        ("card_activity", 1800.0, False),
        ("merchant_risk", 86400.0, False),
    ]
    later = skew.StoreCheck(
        0.01, [], view_freshness(store, store.defs, spec.features.stored_views, NOW + timedelta(hours=3))
    )
    assert later.over == ["stale:card_activity"]
    assert "look at DAG feature_card_activity" in later.lines()[0]
