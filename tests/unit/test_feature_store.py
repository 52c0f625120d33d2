"""The feature store (``loopline.features.store``) on real Feast 0.67, in a throw-away folder per test.

Point-in-time rule: a value with event time t is joined to a row at T iff t <= T and T - t <= ttl;
of two values for one key and time the later ``created`` wins; rows keep their order and count.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from loopline.features.definitions import load_definitions
from loopline.features.store import FeatureStore, FeatureStoreError, StoreConfig, redis_connection_string

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)  # label rows of the join tests live around here

REPO = {
    "entities": [
        {"name": "customer", "join_key": "customer_id", "value_type": "string"},
        {"name": "store", "join_key": "store_id", "value_type": "int64"},
    ],
    "feature_views": [
        {
            "name": "customer_activity",
            "owner": "growth",
            "entities": ["customer"],
            "ttl": "2d",
            "schedule": "@hourly",
            "source": {"dataset": "orders", "event_time": "ordered_at"},
            "features": [
                {"name": "spend_1h", "agg": "sum", "of": "amount", "window": "1h"},
                {"name": "orders_7d", "agg": "count", "window": "7d"},
                {"name": "last_channel", "agg": "last", "of": "channel", "dtype": "string"},
            ],
        },
        {
            "name": "store_load",
            "owner": "ops",
            "entities": ["store"],
            "ttl": "1h",
            "schedule": "*/15 * * * *",
            "source": {"dataset": "orders", "event_time": "at"},
            "compute": "store_load.py:compute",
            "features": [{"name": "queue_length", "dtype": "int64"}, {"name": "busy", "dtype": "bool"}],
        },
    ],
}


def make_repo(folder: Path, content: dict = REPO) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "shop.yaml").write_text(yaml.safe_dump(content))
    (folder / "store_load.py").write_text("def compute(events):\n    return events\n")
    return folder


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    defs = load_definitions(make_repo(tmp_path / "feature_repo"))
    assert not defs.errors, defs.errors
    opened = FeatureStore.open(defs, StoreConfig(root=tmp_path / "feast"))
    opened.apply()
    return opened


def activity(rows: list[tuple[str, datetime, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "ordered_at": pd.to_datetime([r[1] for r in rows], utc=True),
            "spend_1h": [r[2] for r in rows],
            "orders_7d": [int(r[2]) for r in rows],
            "last_channel": [f"ch{r[2]:g}" for r in rows],
        }
    )


def load(rows: list[tuple[int, datetime, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "store_id": [r[0] for r in rows],
            "at": pd.to_datetime([r[1] for r in rows], utc=True),
            "queue_length": [r[2] for r in rows],
            "busy": [r[2] > 5 for r in rows],
        }
    )


def labels(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": [r[0] for r in rows], "ts": pd.to_datetime([r[1] for r in rows], utc=True)})


# ---- the point-in-time join -------------------------------------------------------------------------


def test_a_value_written_one_second_after_the_rows_time_is_not_used(store):
    store.write_offline("customer_activity", activity([("a", T0 - timedelta(hours=1), 1.0)]), batch_id="b1")
    store.write_offline("customer_activity", activity([("a", T0 + timedelta(seconds=1), 2.0)]), batch_id="b2")
    got = store.training_set(labels([("a", T0)]), ["customer_activity:spend_1h"], event_time="ts").frame
    assert got["customer_activity__spend_1h"].tolist() == [1.0]  # the older value, never the one 1 s later
    # at the later time itself the new value is visible (t <= T, inclusive)
    got = store.training_set(
        labels([("a", T0 + timedelta(seconds=1))]), ["customer_activity:spend_1h"], event_time="ts"
    ).frame
    assert got["customer_activity__spend_1h"].tolist() == [2.0]


def test_a_value_older_than_the_views_ttl_is_missing(store):
    store.write_offline("customer_activity", activity([("a", T0, 1.0)]), batch_id="b1")
    rows = labels([("a", T0 + timedelta(days=2)), ("a", T0 + timedelta(days=2, seconds=1)), ("a", T0)])
    got = store.training_set(rows, ["customer_activity:spend_1h", "customer_activity:last_channel"], event_time="ts")
    assert got.frame["customer_activity__spend_1h"].tolist()[0] == 1.0  # exactly ttl old: still valid
    assert np.isnan(got.frame["customer_activity__spend_1h"].tolist()[1])  # ttl + 1 s: gone
    assert got.frame["customer_activity__last_channel"].tolist() == ["ch1", None, "ch1"]


def test_two_views_joined_rows_kept_in_order_and_count(store):
    store.write_offline(
        "customer_activity",
        activity([("a", T0 - timedelta(hours=3), 1.0), ("b", T0 - timedelta(hours=2), 2.0)]),
        batch_id="b1",
    )
    store.write_offline("store_load", load([(7, T0 - timedelta(minutes=30), 9), (8, T0, 1)]), batch_id="b1")
    rows = pd.DataFrame(
        {
            "customer_id": ["b", "a", "a", "zz", "a"],
            "store_id": [7, 8, 8, 7, 7],
            "ts": pd.to_datetime([T0, T0, T0, T0, T0 - timedelta(hours=4)], utc=True),
            "label": [1, 0, 0, 1, 0],
        },
        index=[50, 40, 40, 30, 20],  # a caller's own index, duplicated, unsorted: kept as it is
    )
    refs = ["customer_activity:spend_1h", "store_load:queue_length", "store_load:busy"]
    result = store.training_set(rows, refs, event_time="ts")
    got = result.frame
    assert list(got.index) == [50, 40, 40, 30, 20]
    assert got["label"].tolist() == [1, 0, 0, 1, 0]
    assert got["customer_activity__spend_1h"].fillna(-1).tolist() == [2.0, 1.0, 1.0, -1, -1]
    assert got["store_load__queue_length"].fillna(-1).tolist() == [9.0, 1.0, 1.0, 9.0, -1]
    assert got["store_load__busy"].tolist() == [True, False, False, True, None]
    assert set(result.lineage["views"]) == {"customer_activity", "store_load"}
    assert result.lineage["views"]["store_load"]["offline_version"] == store.offline_version("store_load")
    assert result.lineage["refs"] == refs
    assert list(rows.columns) == ["customer_id", "store_id", "ts", "label"]  # the input is not changed


def test_of_two_values_for_one_key_and_time_the_later_created_wins(store):
    n = 3000
    times = [T0 - timedelta(minutes=int(m)) for m in np.random.default_rng(1).integers(0, 600, n)]
    first = activity([(f"c{i}", times[i], 1.0) for i in range(n)])
    # "zz" is written first, "aa" last: the part names sort the other way round from created
    store.write_offline("customer_activity", first, batch_id="zz")
    time.sleep(0.002)
    store.write_offline("customer_activity", first.assign(spend_1h=2.0), batch_id="aa")
    rows = labels([(f"c{i}", times[i]) for i in range(n)])
    got = store.training_set(rows, ["customer_activity:spend_1h"], event_time="ts").frame
    assert got["customer_activity__spend_1h"].tolist() == [2.0] * n
    # two rows for one key and time in one batch: the later row wins
    twice = activity([("x", T0, 1.0), ("x", T0, 3.0)])
    store.write_offline("customer_activity", twice, batch_id="twice")
    got = store.training_set(labels([("x", T0)]), ["customer_activity:spend_1h"], event_time="ts").frame
    assert got["customer_activity__spend_1h"].tolist() == [3.0]


def test_the_same_answers_as_feasts_own_join_on_tie_free_data(store):
    rng = np.random.default_rng(7)
    n = 400
    values = activity(
        [(f"c{rng.integers(0, 40)}", T0 - timedelta(minutes=int(rng.integers(0, 5000))), float(i)) for i in range(n)]
    ).drop_duplicates(["customer_id", "ordered_at"])
    store.write_offline("customer_activity", values.iloc[:200], batch_id="b1")
    store.write_offline("customer_activity", values.iloc[200:], batch_id="b2")
    rows = labels(
        [(f"c{rng.integers(0, 45)}", T0 - timedelta(minutes=int(rng.integers(-60, 5000)))) for _ in range(300)]
    )
    rows = pd.concat([rows, rows.iloc[:5]], ignore_index=True)  # repeated label rows too
    refs = ["customer_activity:spend_1h", "customer_activity:last_channel"]
    ours = store.training_set(rows, refs, event_time="ts").frame
    feast = store._feast_historical(rows, refs, event_time="ts")
    assert len(ours) == len(feast) == len(rows)
    for column in ("customer_activity__spend_1h", "customer_activity__last_channel"):
        assert ours[column].fillna(-1).tolist() == pd.Series(feast[column]).fillna(-1).tolist(), column
    assert ours["customer_activity__spend_1h"].notna().sum() > 100  # the comparison compared something


def test_a_view_without_data_gives_missing_values(store):
    got = store.training_set(labels([("a", T0)]), ["customer_activity:orders_7d"], event_time="ts").frame
    assert len(got) == 1 and np.isnan(got["customer_activity__orders_7d"].iloc[0])
    assert store.offline_version("customer_activity") == store.offline_version("customer_activity")


# ---- offline writes ---------------------------------------------------------------------------------


def test_a_batch_is_one_part_and_writing_it_again_replaces_it(store, tmp_path):
    first = store.write_offline("customer_activity", activity([("a", T0, 1.0), ("b", T0, 2.0)]), batch_id="b1")
    assert first.path == tmp_path / "feast" / "offline" / "customer_activity" / "part-b1.parquet"
    assert first.rows == 2 and len(first.sha256) == 64
    version = store.offline_version("customer_activity")
    same = store.write_offline("customer_activity", activity([("a", T0, 1.0), ("b", T0, 2.0)]), batch_id="b1")
    assert same.sha256 == first.sha256 and store.offline_version("customer_activity") == version  # kept as it was
    assert first.changed and not same.changed
    again = store.write_offline("customer_activity", activity([("a", T0, 5.0)]), batch_id="b1")
    assert again.path == first.path and again.rows == 1
    assert sorted(p.name for p in first.path.parent.iterdir()) == ["part-b1.parquet"]  # no temporary left
    assert store.offline_version("customer_activity") != version
    got = store.training_set(labels([("a", T0), ("b", T0)]), ["customer_activity:spend_1h"], event_time="ts").frame
    assert got["customer_activity__spend_1h"].fillna(-1).tolist() == [5.0, -1]
    written = pd.read_parquet(again.path)
    assert list(written.columns) == ["customer_id", "ordered_at", "spend_1h", "orders_7d", "last_channel", "created"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns=["customer_id"]), "view customer_activity: the rows lack column(s) ['customer_id']"),
        (lambda f: f.drop(columns=["ordered_at"]), "lack column(s) ['ordered_at']"),
        (lambda f: f.assign(spend_1h="1.5"), "column 'spend_1h' must be float64, not object"),
        (lambda f: f.assign(orders_7d=1.5), "column 'orders_7d' must be int64, not float64"),
        (lambda f: f.assign(last_channel=3), "column 'last_channel' must be strings (string), found int"),
        (lambda f: f.assign(ordered_at="2026-11-02"), "column 'ordered_at' (the event time) must be datetimes"),
        (lambda f: f.assign(customer_id=[None, "b"]), "column 'customer_id': row 0 has no join key"),
    ],
)
def test_bad_rows_are_refused_with_one_line_naming_view_and_column(store, change, message):
    rows = change(activity([("a", T0, 1.0), ("b", T0, 2.0)]))
    with pytest.raises(FeatureStoreError) as err:
        store.write_offline("customer_activity", rows, batch_id="b1")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (store.config.offline_dir("customer_activity") / "part-b1.parquet").exists()


def test_unknown_views_refs_and_bad_frames_are_refused(store):
    with pytest.raises(FeatureStoreError, match="unknown feature view 'nope'; known:"):
        store.write_offline("nope", activity([("a", T0, 1.0)]), batch_id="b1")
    with pytest.raises(FeatureStoreError, match="batch_id '../x'"):
        store.write_offline("customer_activity", activity([("a", T0, 1.0)]), batch_id="../x")
    with pytest.raises(FeatureStoreError, match="view customer_activity has no feature 'nope'"):
        store.training_set(labels([("a", T0)]), ["customer_activity:nope"], event_time="ts")
    with pytest.raises(FeatureStoreError, match="not a feature reference"):
        store.training_set(labels([("a", T0)]), ["customer_activity.spend_1h"], event_time="ts")
    with pytest.raises(FeatureStoreError, match="keyed on 'store_id', which the rows do not carry"):
        store.training_set(labels([("a", T0)]), ["store_load:busy"], event_time="ts")
    with pytest.raises(FeatureStoreError, match="lack the event time column 'when'"):
        store.training_set(labels([("a", T0)]), ["customer_activity:spend_1h"], event_time="when")
    with pytest.raises(FeatureStoreError, match="keys\\[0\\] lacks \\['customer_id'\\]"):
        store.online(["customer_activity:spend_1h"], [{"store_id": 1}])


def test_an_empty_feature_repo_applies_nothing(tmp_path):
    empty = FeatureStore.open(load_definitions(tmp_path / "no_repo"), StoreConfig(root=tmp_path / "feast"))
    empty.apply()
    assert not (tmp_path / "feast" / "registry.db").exists()


def test_config_from_settings_and_redis_urls(monkeypatch, tmp_path):
    from loopline.core.settings import get_settings

    monkeypatch.setenv("LOOPLINE_HOME", str(tmp_path))
    get_settings.cache_clear()
    try:
        config = StoreConfig.from_settings()
        assert config.root == tmp_path / "feast" and config.online == "sqlite"
        assert config.registry == str(tmp_path / "feast" / "registry.db")
        monkeypatch.setenv("LOOPLINE_FEAST_ONLINE_REDIS", "redis://:s3cret@redis:6379/2")
        monkeypatch.setenv("LOOPLINE_FEAST_REGISTRY", "postgresql+psycopg://feast@postgres/feast")
        get_settings.cache_clear()
        config = StoreConfig.from_settings()
        assert config.online == "redis://:s3cret@redis:6379/2"
        assert config.registry == "postgresql+psycopg://feast@postgres/feast"
    finally:
        get_settings.cache_clear()
    assert redis_connection_string("redis://:s3cret@redis:6379/2") == "redis:6379,db=2,password=s3cret"
    assert redis_connection_string("rediss://cache") == "cache:6379,ssl=true"


# ---- materialisation and online reads ---------------------------------------------------------------


def test_materialize_then_online_present_not_found_stale_and_freshness(store):
    store.write_offline(
        "customer_activity",
        activity([("a", NOW - timedelta(hours=3), 1.0), ("a", NOW - timedelta(hours=1), 2.0), ("b", NOW, 3.0)]),
        batch_id="b1",
    )
    assert store.freshness("customer_activity") is None
    done = store.materialize("customer_activity", end=NOW - timedelta(minutes=30))
    assert done.rows == 1 and done.end == NOW - timedelta(minutes=30)
    assert done.start == done.end - timedelta(days=2)  # the first run: one ttl back
    assert store.freshness("customer_activity") == NOW - timedelta(hours=1)
    read = store.online(
        ["customer_activity:spend_1h", "customer_activity:last_channel"],
        [{"customer_id": "b"}, {"customer_id": "a"}, {"customer_id": "nobody"}],
    )
    assert read.columns["customer_activity__spend_1h"] == [None, 2.0, None]
    assert read.status["customer_activity__spend_1h"] == ["not_found", "present", "not_found"]
    assert read.columns["customer_activity__last_channel"] == [None, "ch2", None]
    again = store.materialize("customer_activity", end=NOW + timedelta(seconds=1))  # incremental: from the last end
    assert again.start == done.end and again.rows == 1
    assert store.freshness("customer_activity") == NOW
    assert store.online(["customer_activity:spend_1h"], [{"customer_id": "b"}]).columns == {
        "customer_activity__spend_1h": [3.0]
    }
    assert store.materialize("customer_activity", end=NOW).rows == 0  # nothing after the last end

    # store_load's ttl is 1h: a value 2 h old is materialised (end - ttl < its time) but served as stale
    store.write_offline("store_load", load([(7, NOW - timedelta(hours=2), 9)]), batch_id="b1")
    store.materialize("store_load", end=NOW - timedelta(hours=1, minutes=30))
    read = store.online(
        ["store_load:queue_length", "customer_activity:spend_1h"], [{"store_id": 7, "customer_id": "a"}]
    )
    assert read.status == {"store_load__queue_length": ["stale"], "customer_activity__spend_1h": ["present"]}
    assert read.columns["store_load__queue_length"] == [None]


def _online_rows(db: Path, view: str) -> dict[str, float]:
    from feast.protos.feast.types.Value_pb2 import Value

    with sqlite3.connect(db) as conn:
        found = conn.execute(
            f"SELECT entity_key, value FROM loopline_{view} WHERE feature_name = 'spend_1h'"  # noqa: S608
        ).fetchall()
    out = {}
    for key, value in found:
        proto = Value()
        proto.ParseFromString(value)
        out[key] = proto.double_val
    return out


CHILD = textwrap.dedent(
    """
    import sys
    from datetime import datetime
    from pathlib import Path
    import loopline.features.store as store_module
    from loopline.features.definitions import load_definitions
    store_module.MATERIALIZE_CHUNK = int(sys.argv[3])
    defs = load_definitions(Path(sys.argv[1]))
    store = store_module.FeatureStore.open(defs, store_module.StoreConfig(root=Path(sys.argv[2])))
    print("materialising", flush=True)
    store.materialize("customer_activity", end=datetime.fromisoformat(sys.argv[4]))
    print("done", flush=True)
    """
)


@pytest.mark.slow  # about 60 s on 2 loaded cores: 60k keys, materialised in chunks of 1000, killed, re-run
def test_materialize_killed_half_way_then_rerun_holds_exactly_the_latest_value_per_key(store, tmp_path):
    n = 60_000
    keys = [f"c{i:05d}" for i in range(n)]
    older = activity([(k, NOW - timedelta(hours=2), 1.0) for k in keys])
    newer = activity([(k, NOW - timedelta(hours=1), float(i)) for i, k in enumerate(keys)])
    store.write_offline("customer_activity", older, batch_id="b1")
    store.write_offline("customer_activity", newer, batch_id="b2")
    db = store.config.root / "online.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(store.defs.repo), str(store.config.root), "1000", NOW.isoformat()],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        written = 0
        while time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
            try:
                with sqlite3.connect(db, timeout=0.2) as conn:
                    written = conn.execute("SELECT COUNT(*) FROM loopline_customer_activity").fetchone()[0]
            except sqlite3.OperationalError:
                continue  # no table yet, or the writer holds the lock
            if written > 0:
                break
        assert child.poll() is None, "the child finished before it could be killed"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    assert 0 < written < n * 3  # killed with part of the keys written
    store._fs.refresh_registry()
    assert store._fs.get_feature_view("customer_activity").most_recent_end_time is None  # no interval recorded

    done = store.materialize("customer_activity", end=NOW)
    assert done.rows == n and done.start == NOW - timedelta(days=2)
    online = _online_rows(db, "customer_activity")
    assert len(online) == n  # every key once, nothing missing
    read = store.online(["customer_activity:spend_1h"], [{"customer_id": k} for k in keys])
    assert read.columns["customer_activity__spend_1h"] == [float(i) for i in range(n)]
    assert set(read.status["customer_activity__spend_1h"]) == {"present"}


def test_a_crash_after_the_first_chunk_is_repaired_by_the_next_run(store):
    n = 2500
    store.write_offline(
        "customer_activity", activity([(f"k{i}", NOW - timedelta(hours=1), float(i)) for i in range(n)]), batch_id="b"
    )
    env = {**os.environ, "LOOPLINE_CRASH_AT": "store.materialize.chunk_written"}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(store.defs.repo), str(store.config.root), "1000", NOW.isoformat()],
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 86, result.stderr.decode()[-2000:]
    assert len(_online_rows(store.config.root / "online.db", "customer_activity")) == 1000  # one chunk only
    assert store.materialize("customer_activity", end=NOW).rows == n
    read = store.online(["customer_activity:spend_1h"], [{"customer_id": f"k{i}"} for i in range(n)])
    assert read.columns["customer_activity__spend_1h"] == [float(i) for i in range(n)]


# ---- the full stack's stores: a SQL registry in Postgres, the online store in Redis ------------------


@pytest.fixture
def postgres_url():
    from tests.conftest import throwaway_postgres

    for url in throwaway_postgres("loopline_feast"):
        yield url.replace("postgresql+psycopg2://", "postgresql+psycopg://")  # psycopg 3: Feast's [postgres]


def test_full_stack_postgres_registry_and_redis_online(tmp_path, postgres_url):
    import uuid

    import redis

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2).ping()
    except redis.exceptions.ConnectionError as err:
        pytest.skip(f"Redis is unreachable on 127.0.0.1:6379: {err}")
    defs = load_definitions(make_repo(tmp_path / "feature_repo"))
    config = StoreConfig(root=tmp_path / "feast", online="redis://127.0.0.1:6379/0", registry=postgres_url)
    stack = FeatureStore.open(defs, config)
    stack.apply()
    stack.apply()
    key = f"k-{uuid.uuid4().hex}"  # the Redis database is shared: keys of this test only
    stack.write_offline("customer_activity", activity([(key, NOW - timedelta(minutes=5), 4.0)]), batch_id="b1")
    assert stack.materialize("customer_activity", end=NOW).rows == 1
    again = FeatureStore.open(defs, config)  # another process's view: the interval is in Postgres
    assert again.materialize("customer_activity", end=NOW).rows == 0
    assert again.freshness("customer_activity") == NOW - timedelta(minutes=5)
    read = again.online(["customer_activity:spend_1h"], [{"customer_id": key}, {"customer_id": key + "x"}])
    assert read.columns == {"customer_activity__spend_1h": [4.0, None]}
    assert read.status == {"customer_activity__spend_1h": ["present", "not_found"]}
    assert not (tmp_path / "feast" / "registry.db").exists() and not (tmp_path / "feast" / "online.db").exists()


def test_a_newer_missing_value_replaces_the_served_one(store):
    store.write_offline("customer_activity", activity([("a", NOW - timedelta(hours=2), 1.0)]), batch_id="b1")
    store.materialize("customer_activity", end=NOW - timedelta(hours=1))
    assert store.online(["customer_activity:spend_1h"], [{"customer_id": "a"}]).columns == {
        "customer_activity__spend_1h": [1.0]
    }
    newer = activity([("a", NOW - timedelta(minutes=30), 2.0)]).assign(spend_1h=np.nan, last_channel=None)
    store.write_offline("customer_activity", newer, batch_id="b2")
    store.materialize("customer_activity", end=NOW)
    read = store.online(["customer_activity:spend_1h", "customer_activity:orders_7d"], [{"customer_id": "a"}])
    assert read.columns == {"customer_activity__spend_1h": [None], "customer_activity__orders_7d": [2]}
