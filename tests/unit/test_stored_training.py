"""The training path of a model with stored features: its rows joined through a real Feast store (issue 23).

The views are computed from generated card_fraud batches by the feature pipeline's own code
(``compute_view``) and written to a store in a temporary folder; nothing of ours is mocked.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from loopline.core.lineage import TrainingInputs
from loopline.core.settings import get_settings
from loopline.core.spec import load_spec
from loopline.features.compute import compute_view
from loopline.features.definitions import load_definitions
from loopline.features.store import CREATED
from loopline.ingestion.ingest import normalise
from loopline.ops.feature_lift import request_only
from loopline.training import trainer as training
from loopline.training.stored import (
    StoredFeaturesError,
    check_same_set,
    open_store,
    stored_versions,
    with_stored_features,
)
from tests.generators import card_fraud as datagen

SETTINGS = get_settings()
SPEC = load_spec("card_fraud", SETTINGS.models_dir)
VIEWS = ("card_activity", "merchant_activity")


def _settings(root: Path):
    return dataclasses.replace(SETTINGS, feast_root=root, feast_online_redis="", feast_registry="")


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Six weeks of transactions as the data registry stores them."""
    return pd.concat([normalise(datagen.make_batch(w, 1500, seed=4), SPEC) for w in range(6)], ignore_index=True)


@pytest.fixture(scope="module")
def store_settings(tmp_path_factory, frame):
    """A feature store whose views were computed from ``frame`` by the pipeline's code."""
    settings = _settings(tmp_path_factory.mktemp("feast"))
    store = open_store(settings)
    store.apply()
    for view in VIEWS:
        store.write_offline(view, compute_view(store.defs.views[view], frame, store.defs), batch_id="weeks-0-5")
    return settings


def test_a_model_without_stored_features_never_opens_the_store(tmp_path):
    spec = load_spec("credit_risk", SETTINGS.models_dir)
    frame = datagen.make_batch(0, 50)  # any frame: it comes back as it is
    settings = _settings(tmp_path / "feast")
    out, lineage = with_stored_features(frame, spec, settings)
    assert out is frame and lineage is None and stored_versions(spec, settings) == {}
    assert not (tmp_path / "feast").exists()


def test_rows_get_each_value_the_store_held_just_before_them(store_settings, frame):
    joined, lineage = with_stored_features(training.labelled(frame, SPEC), SPEC, store_settings)
    assert list(joined["transaction_id"]) == list(training.labelled(frame, SPEC)["transaction_id"])
    assert set(SPEC.features.stored_columns) <= set(joined.columns) and "loopline_as_of" not in joined.columns
    # The oracle: the card's view row at its latest event strictly before the transaction (no later, not its own).
    defs = load_definitions(SETTINGS.feature_repo)
    view = compute_view(defs.views["card_activity"], frame, defs)
    view = view.assign(
        ts=view["transacted_at"].dt.tz_localize(None).astype("datetime64[ns]"), card_id=view["card_id"].astype(str)
    )
    left = joined.assign(ts=joined["transacted_at"].astype("datetime64[ns]"), card_id=joined["card_id"].astype(str))
    left = left.sort_values("ts", kind="stable")
    expected = pd.merge_asof(
        left[["transaction_id", "card_id", "ts"]],
        view.drop(columns="transacted_at").drop_duplicates(["card_id", "ts"]).sort_values("ts"),
        on="ts",
        by="card_id",
        allow_exact_matches=False,
        tolerance=pd.Timedelta(days=30),
    ).set_index("transaction_id")
    got = joined.set_index("transaction_id")
    for feature in ("count_1h", "spend_1h", "mean_amount_30d"):
        pd.testing.assert_series_equal(
            got[f"card_activity__{feature}"].astype(float),
            expected.loc[got.index, feature].astype(float),
            check_names=False,
        )
    first = ~joined.duplicated("card_id")  # a card's first transaction has no history
    assert joined.loc[first, "card_activity__count_1h"].isna().all()
    assert lineage["as_of"] == "transacted_at - 1 ms" and lineage["refs"] == SPEC.features.stored
    assert set(lineage["views"]) == set(VIEWS) and lineage["rows"] == len(joined)
    versions = stored_versions(SPEC, store_settings)
    assert {v: lineage["views"][v] for v in VIEWS} == versions


def test_the_stored_features_lift_the_holdout_auc(store_settings, frame):
    joined, _ = with_stored_features(training.labelled(frame, SPEC), SPEC, store_settings)
    params = {**SPEC.training.params, "seed": SPEC.training.seed}
    with_stored = training.fit_and_evaluate(joined, SPEC, params)[1]
    without = training.fit_and_evaluate(training.labelled(frame, SPEC), request_only(SPEC), params)[1]
    assert with_stored["auc"] > without["auc"] + 0.05, (with_stored["auc"], without["auc"])


def test_a_rebuilt_set_is_the_recorded_one_until_a_past_value_changes(store_settings, frame, tmp_path):
    rows = training.labelled(frame, SPEC)
    _, recorded = with_stored_features(rows, SPEC, store_settings)
    _, again = with_stored_features(rows, SPEC, store_settings)
    assert again == recorded
    check_same_set(recorded, again, "card_fraud")
    # New events later than every row: a new offline version, the same set (as of each old row nothing moved).
    store = open_store(store_settings)
    defs = store.defs
    later = frame.assign(transacted_at=frame["transacted_at"] + pd.Timedelta(weeks=10))
    store.write_offline("card_activity", compute_view(defs.views["card_activity"], later, defs), batch_id="later")
    _, moved_on = with_stored_features(rows, SPEC, store_settings)
    assert moved_on["views"]["card_activity"] != recorded["views"]["card_activity"]
    check_same_set(recorded, moved_on, "card_fraud")
    # A correction of a past value (a later `created` wins): the set is another one, refused naming the view.
    view = compute_view(defs.views["card_activity"], frame, defs)
    fixed = view.head(50).assign(spend_1h=1e6, **{CREATED: pd.Timestamp("2030-01-01", tz="UTC")})
    store.write_offline("card_activity", fixed, batch_id="correction")
    _, corrected = with_stored_features(rows, SPEC, store_settings)
    with pytest.raises(StoredFeaturesError, match=r"not the recorded one .* views changed since: \['card_activity"):
        check_same_set(recorded, corrected, "card_fraud")


def test_views_without_offline_rows_are_refused_naming_the_pipeline(tmp_path, frame):
    settings = _settings(tmp_path / "feast")
    open_store(settings).apply()
    with pytest.raises(
        StoredFeaturesError,
        match=r"\['card_activity', 'merchant_activity'\] have no offline rows.*"
        r"feature pipeline",
    ):
        with_stored_features(frame.head(10), SPEC, settings)


def test_a_model_naming_what_the_repo_cannot_give_is_refused_naming_its_spec(tmp_path, frame):
    settings = replace(_settings(tmp_path / "feast"), feature_repo=tmp_path / "empty_repo")
    with pytest.raises(StoredFeaturesError, match=r"card_fraud/spec.yaml: features.stored\[0\]: unknown feature view"):
        with_stored_features(frame.head(10), SPEC, settings)


def test_the_fingerprint_counts_the_feature_data_only_for_models_that_read_it():
    base = TrainingInputs("m", "v1", "r", "md5", "1", "c", False, {"seed": 1})
    assert replace(base, stored={}).fingerprint() == base.fingerprint()
    assert "loopline.stored_features" not in base.tags()
    a = replace(base, stored={"card_activity": {"definition_sha": "d", "offline_version": "a" * 64}})
    b = replace(base, stored={"card_activity": {"definition_sha": "d", "offline_version": "b" * 64}})
    assert len({base.fingerprint(), a.fingerprint(), b.fingerprint()}) == 3
    assert a.tags()["loopline.stored_features"] == "card_activity@aaaaaaaaaaaa"
