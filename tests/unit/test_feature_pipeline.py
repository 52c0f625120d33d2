"""The feature pipeline's steps without Airflow: registry dataset -> rows -> GE check -> offline -> online.

Real DVC registry, real Great Expectations, real Feast (the store of ``loopline.features.store``)
in a temporary LOOPLINE_HOME; a failed check quarantines the batch and writes nothing.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from loopline.features import pipeline

REPO = """
entities:
  - {name: customer, join_key: customer_id, value_type: string}
feature_views:
  - name: customer_activity
    owner: growth
    entities: [customer]
    ttl: 30d
    schedule: "@hourly"
    source: {dataset: orders, event_time: ordered_at}
    features:
      - {name: spend_1h, agg: sum, of: amount, window: 1h}
      - {name: orders_1d, agg: count, window: 1d}
      - {name: last_channel, agg: last, of: channel, dtype: string}
"""


def orders(start: str, rows: list[tuple]) -> pd.DataFrame:
    base = pd.Timestamp(start, tz="UTC")
    return pd.DataFrame(
        [(c, (base + pd.Timedelta(minutes=m)).strftime("%Y-%m-%d %H:%M:%S"), a, ch) for c, m, a, ch in rows],
        columns=["customer_id", "ordered_at", "amount", "channel"],
    )


@pytest.fixture
def line(tmp_path: Path, settings):
    from loopline.ingestion.data_registry import DataRegistry

    repo = tmp_path / "feature_repo"
    repo.mkdir()
    (repo / "growth.yaml").write_text(REPO)
    mine = replace(
        settings,
        feature_repo=repo,
        feast_root=tmp_path / "feast",
        data_registry=tmp_path / "registry",
        dvc_remote_url=str(tmp_path / "remote"),
        work_dir=tmp_path / "work",
        processing_dir=tmp_path / "processing",
        quarantine_dir=tmp_path / "quarantine",
    )
    registry = DataRegistry(mine.data_registry, mine.dvc_remote_url)
    registry.init()
    return mine, registry


def _commit(registry, batch_id: str, frame: pd.DataFrame):
    from loopline.ingestion.data_registry import BatchRecord

    record = BatchRecord(batch_id, batch_id.ljust(64, "0"), f"{batch_id}.csv", len(frame), "test")
    return registry.commit_batches("orders", [(record, frame)], batch_id)


def test_a_view_from_the_registry_to_the_online_store_and_a_rerun_replaces(line):
    from loopline.features.definitions import load_definitions
    from loopline.features.store import FeatureStore, StoreConfig

    settings, registry = line
    _commit(registry, "b1", orders("2026-12-01 10:00", [("a", 0, 10.0, "web"), ("b", 5, 3.0, "app")]))

    source = pipeline.read_source("customer_activity", settings)
    assert source["version"] == "orders-v0001"
    batch = pipeline.validate(pipeline.compute("customer_activity", source, settings), settings)
    assert batch["rows"] == 2 and batch["parts"] == ["orders-v0001"]
    written = pipeline.write_offline(batch, settings)
    assert written["written"] == {"orders-v0001": 2}
    assert Path(batch["folder"]).exists()  # kept until materialised: a retried write finds it
    done = pipeline.materialize(written, settings)
    assert done["rows"] == 2
    assert not Path(batch["folder"]).exists()  # the staging is gone once both stores hold the rows

    # A second version: a's history spans both; the first part is rewritten, nothing duplicated.
    _commit(registry, "b2", orders("2026-12-01 10:30", [("a", 0, 5.0, None), ("a", 40, 1.0, "shop")]))
    source = pipeline.read_source("customer_activity", settings)
    assert source["version"] == "orders-v0002"
    batch = pipeline.validate(pipeline.compute("customer_activity", source, settings), settings)
    written = pipeline.write_offline(batch, settings)
    assert written["written"] == {"orders-v0001": 2, "orders-v0002": 2}
    again = pipeline.write_offline(
        pipeline.validate(pipeline.compute("customer_activity", source, settings), settings), settings
    )
    assert again["written"] == written["written"]  # the same version again: the same parts, replaced
    # ... by themselves: the events did not change, so neither did the view's version (no retrain follows)
    assert written["changed"] is True and again["changed"] is False
    assert again["offline_version"] == written["offline_version"]
    parts = sorted(p.name for p in (settings.feast_root / "offline" / "customer_activity").glob("part-*.parquet"))
    assert parts == ["part-orders-v0001.parquet", "part-orders-v0002.parquet"]
    offline = pd.concat(pd.read_parquet(settings.feast_root / "offline" / "customer_activity" / p) for p in parts)
    assert len(offline) == 4  # each event once
    pipeline.materialize(written, settings)

    store = FeatureStore.open(load_definitions(settings.feature_repo), StoreConfig.from_settings(settings))
    read = store.online(
        ["customer_activity:spend_1h", "customer_activity:orders_1d", "customer_activity:last_channel"],
        [{"customer_id": "a"}, {"customer_id": "b"}],
    )
    # a at 11:10: 10:00 is out of 1h, 10:30 (5.0) and 11:10 (1.0) in; three orders today; last channel shop.
    assert read.columns["customer_activity__spend_1h"] == [6.0, 3.0]
    assert read.columns["customer_activity__orders_1d"] == [3, 1]
    assert read.columns["customer_activity__last_channel"] == ["shop", "app"]


def test_a_batch_that_fails_its_check_is_quarantined_and_not_written(line):
    settings, registry = line
    _commit(registry, "b1", orders("2026-12-01 10:00", [("a", 0, 10.0, "web")]))
    source = pipeline.read_source("customer_activity", settings)
    batch = pipeline.compute("customer_activity", source, settings)
    rows_file = Path(batch["folder"]) / pipeline.ROWS_FILE
    rows = pd.read_parquet(rows_file)
    rows["orders_1d"] = -1  # what a broken computation would produce
    rows.to_parquet(rows_file, index=False)

    with pytest.raises(pipeline.FeatureBatchRejected, match="orders_1d") as err:
        pipeline.validate(batch, settings)
    assert "quarantined in" in str(err.value)
    target = settings.quarantine_dir / "features" / "customer_activity" / "orders-v0001"
    kept = ["batch.json", "rows.parquet", "validation.json", "validation.txt"]
    assert sorted(p.name for p in target.iterdir()) == kept
    assert "FAILED" in (target / "validation.txt").read_text().splitlines()[0]
    assert "'a'" not in (target / "validation.json").read_text()  # key values pseudonymised in the report
    assert not Path(batch["folder"]).exists()
    assert not (settings.feast_root / "offline" / "customer_activity").exists()  # nothing reached the store


def test_an_unknown_view_and_a_missing_column_are_one_line_errors(line):
    from loopline.features.definitions import DefinitionError

    settings, registry = line
    with pytest.raises(DefinitionError, match="unknown feature view 'nope'; known: \\['customer_activity'\\]"):
        pipeline.read_source("nope", settings)
    _commit(registry, "b1", orders("2026-12-01 10:00", [("a", 0, 10.0, "web")]).drop(columns=["channel"]))
    source = pipeline.read_source("customer_activity", settings)
    missing = r"feature view customer_activity: source has no column\(s\) \['channel'\]"
    with pytest.raises(DefinitionError, match=missing):
        pipeline.compute("customer_activity", source, settings)


SQL_REPO = """
entities:
  - {name: customer, join_key: customer_id, value_type: string}
feature_views:
  - name: customer_sql
    owner: growth
    entities: [customer]
    ttl: 30d
    schedule: "@hourly"
    source: {sql: {url_env: PIPES_SHOP_DB, table: orders, max_rows: 2}, event_time: ordered_at}
    features:
      - {name: spend_1h, agg: sum, of: amount, window: 1h}
"""


def test_a_sql_source_is_read_in_watermark_slices_and_each_slice_is_a_part(line, tmp_path, monkeypatch):
    import sqlalchemy as sa

    settings, _ = line
    (settings.feature_repo / "growth.yaml").write_text(SQL_REPO)
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    monkeypatch.setenv("PIPES_SHOP_DB", url)
    engine = sa.create_engine(url)
    first = orders("2026-12-01 10:00", [("a", 0, 1.0, "w"), ("a", 10, 2.0, "w"), ("b", 20, 4.0, "w")])
    first.to_sql("orders", engine, index=False)

    source = pipeline.read_source("customer_sql", settings)
    assert source["kind"] == "sql" and len(source["pulled"]) == 2  # max_rows 2: two slices
    batch = pipeline.compute("customer_sql", source, settings)
    rows = pd.read_parquet(Path(batch["folder"]) / pipeline.ROWS_FILE)
    assert rows["spend_1h"].tolist() == [1.0, 3.0, 4.0]
    assert batch["parts"] == ["feature_customer_sql-slice-000001", "feature_customer_sql-slice-000002"]
    assert batch["batch_id"] == source["version"]

    again = pipeline.read_source("customer_sql", settings)
    assert again["pulled"] == [] and again["version"] == source["version"]  # nothing new: the same batch
    orders("2026-12-01 10:00", [("a", 30, 8.0, "w")]).to_sql("orders", engine, index=False, if_exists="append")
    more = pipeline.read_source("customer_sql", settings)
    assert len(more["pulled"]) == 1 and more["version"] != source["version"]
    batch = pipeline.compute("customer_sql", more, settings)
    rows = pd.read_parquet(Path(batch["folder"]) / pipeline.ROWS_FILE)
    assert rows.loc[rows["customer_id"] == "a", "spend_1h"].tolist() == [1.0, 3.0, 11.0]
    engine.dispose()


FUNCTION_REPO = """
entities:
  - {name: customer, join_key: customer_id, value_type: string}
feature_views:
  - name: customer_big
    owner: growth
    entities: [customer]
    ttl: 30d
    schedule: "@hourly"
    source: {dataset: orders, event_time: ordered_at}
    compute: big.py:compute
    features:
      - {name: big, dtype: bool}
"""
BIG = """
def compute(events):
    out = events[["customer_id", "ordered_at"]].copy()
    out["big"] = events["amount"] > 5
    return out
"""


def test_a_compute_function_view_writes_each_row_to_its_events_part(line):
    settings, registry = line
    (settings.feature_repo / "growth.yaml").write_text(FUNCTION_REPO)
    (settings.feature_repo / "big.py").write_text(BIG)
    _commit(registry, "b1", orders("2026-12-01 10:00", [("a", 0, 10.0, "w"), ("b", 1, 1.0, "w")]))
    _commit(registry, "b2", orders("2026-12-01 11:00", [("a", 0, 1.0, "w")]))
    source = pipeline.read_source("customer_big", settings)
    batch = pipeline.validate(pipeline.compute("customer_big", source, settings), settings)
    rows = pd.read_parquet(Path(batch["folder"]) / pipeline.ROWS_FILE)
    assert rows[["customer_id", "big", pipeline.PART]].values.tolist() == [
        ["a", True, "orders-v0001"], ["b", False, "orders-v0001"], ["a", False, "orders-v0002"]
    ]  # fmt: skip
