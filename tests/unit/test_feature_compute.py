"""compute_view: window aggregates by hand, boundaries, ties, unsorted input, keys, a compute function."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline.features.compute import SET_ASIDE, compute_view
from loopline.features.definitions import DefinitionError, load_definitions

REPO = """
entities:
  - {name: customer, join_key: customer_id, value_type: string}
  - {name: shop, join_key: shop_id, value_type: int64}
feature_views:
  - name: activity
    owner: growth
    entities: [customer]
    ttl: 2d
    schedule: "@hourly"
    source: {dataset: orders, event_time: at}
    features:
      - {name: spend_1h, agg: sum, of: amount, window: 1h}
      - {name: mean_1h, agg: mean, of: amount, window: 1h}
      - {name: min_1h, agg: min, of: amount, window: 1h}
      - {name: max_1h, agg: max, of: amount, window: 1h}
      - {name: orders_1h, agg: count, window: 1h}
      - {name: orders_1d, agg: count, window: 1d}
      - {name: last_channel, agg: last, of: channel, dtype: string}
  - name: pair
    owner: growth
    entities: [customer, shop]
    ttl: 2d
    schedule: "@daily"
    source: {dataset: orders, event_time: at, created_time: recorded}
    features:
      - {name: n_1h, agg: count, window: 1h}
      - {name: last_amount, agg: last, of: amount, dtype: float64}
  - name: load
    owner: ops
    entities: [shop]
    ttl: 1d
    schedule: "@hourly"
    source: {dataset: orders, event_time: at}
    compute: load.py:compute
    features:
      - {name: busy, dtype: bool}
      - {name: queue, dtype: int64}
"""

LOAD = """
import pandas as pd

def compute(events):
    out = events[["shop_id", "at"]].copy()
    out["busy"] = events["amount"] > 10
    out["queue"] = events.groupby("shop_id").cumcount().astype("int64")
    return out
"""


@pytest.fixture
def defs(tmp_path: Path):
    repo = tmp_path / "feature_repo"
    repo.mkdir()
    (repo / "shop.yaml").write_text(REPO)
    (repo / "load.py").write_text(LOAD)
    loaded = load_definitions(repo)
    assert loaded.errors == []
    return loaded


def at(minute: float) -> pd.Timestamp:
    return pd.Timestamp("2026-03-01 12:00", tz="UTC") + pd.Timedelta(minutes=minute)


def events(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "shop_id", "at", "amount", "channel"])


def test_window_is_open_at_its_start_and_closed_at_t(defs):
    """(t - 1h, t]: an event exactly 60 min earlier is out, one 59 min earlier is in."""
    frame = events(
        [
            ("a", 1, at(0), 10.0, "web"),
            ("a", 1, at(1), 5.0, "app"),
            ("a", 1, at(60), 1.0, None),  # 60 min after the first: the first is out, the second in
            ("a", 1, at(61), 2.0, "web"),  # the second is out now too
        ]
    )
    out = compute_view(defs.views["activity"], frame, defs)
    assert out["spend_1h"].tolist() == [10.0, 15.0, 6.0, 3.0]
    assert out["orders_1h"].tolist() == [1, 2, 2, 2]
    assert out["orders_1d"].tolist() == [1, 2, 3, 4]
    assert out["min_1h"].tolist() == [10.0, 5.0, 1.0, 1.0]
    assert out["max_1h"].tolist() == [10.0, 10.0, 5.0, 2.0]
    assert out["mean_1h"].tolist() == [10.0, 7.5, 3.0, 1.5]
    assert out["last_channel"].tolist() == ["web", "app", "app", "web"]  # a null is no value: the last one stays
    assert out.columns.tolist() == ["customer_id", "at", *defs.views["activity"].feature_names]
    assert str(out["at"].dtype) == "datetime64[ns, UTC]"
    assert out["orders_1h"].dtype == "int64" and out["spend_1h"].dtype == "float64"
    assert out.attrs[SET_ASIDE] == {"null_key": 0, "null_event_time": 0}


def test_ties_at_the_same_instant_see_each_other(defs):
    frame = events(
        [
            ("a", 1, at(0), 1.0, "web"),
            ("a", 1, at(10), 2.0, "app"),
            ("a", 1, at(10), 4.0, "shop"),  # same instant: both rows at 10 count both
            ("a", 1, at(70), 8.0, "web"),  # 10 + 60: both rows at 10 leave together
        ]
    )
    out = compute_view(defs.views["activity"], frame, defs)
    assert out["spend_1h"].tolist() == [1.0, 7.0, 7.0, 8.0]
    assert out["orders_1h"].tolist() == [1, 3, 3, 1]
    # Among events at one instant the latest is the one further down the source: both rows see it.
    assert out["last_channel"].tolist() == ["web", "shop", "shop", "web"]


def test_created_time_breaks_ties_for_last(defs):
    frame = events([("a", 1, at(0), 1.0, "x"), ("a", 1, at(0), 2.0, "y")])
    frame["recorded"] = [at(5), at(3)]  # the first row was recorded later: it is the correction
    out = compute_view(defs.views["pair"], frame, defs)
    assert out["last_amount"].tolist() == [1.0, 1.0]
    assert out["n_1h"].tolist() == [2, 2]


def test_unsorted_input_gives_each_event_its_own_row_in_input_order(defs):
    rows = [
        ("a", 1, at(0), 10.0, "web"),
        ("b", 1, at(5), 100.0, "app"),
        ("a", 1, at(30), 20.0, "app"),
        ("b", 1, at(50), 200.0, "web"),
        ("a", 1, at(80), 40.0, "web"),
    ]
    expected = {  # by (key, minute): spend_1h, orders_1d
        ("a", 0): (10.0, 1), ("b", 5): (100.0, 1), ("a", 30): (30.0, 2), ("b", 50): (300.0, 2), ("a", 80): (60.0, 3),
    }  # fmt: skip
    shuffled = events(rows).sample(frac=1.0, random_state=3)
    out = compute_view(defs.views["activity"], shuffled, defs)
    assert out.index.tolist() == shuffled.index.tolist()  # each row is its event's, in the input's order
    for index, row in out.iterrows():
        minute = int((row["at"] - at(0)) / pd.Timedelta(minutes=1))
        assert (row["spend_1h"], row["orders_1d"]) == expected[(row["customer_id"], minute)], index


def test_several_entity_keys_are_kept_apart(defs):
    rows = [("a", 1, at(0), 1.0, ""), ("a", 2, at(1), 2.0, ""), ("a", 1, at(2), 3.0, ""), ("b", 1, at(3), 4.0, "")]
    frame = events(rows)
    frame["recorded"] = at(10)
    out = compute_view(defs.views["pair"], frame, defs)
    assert out[["customer_id", "shop_id"]].values.tolist() == [["a", 1], ["a", 2], ["a", 1], ["b", 1]]
    assert out["n_1h"].tolist() == [1, 1, 2, 1]
    assert out["last_amount"].tolist() == [1.0, 2.0, 3.0, 4.0]
    one = compute_view(defs.views["activity"], frame, defs)  # keyed on the customer only: a's shops together
    assert one["orders_1h"].tolist() == [1, 2, 3, 1]


def test_null_keys_and_times_are_set_aside_and_counted(defs):
    rows = [("a", 1, at(0), 1.0, "web"), (None, 1, at(1), 2.0, "web"), ("a", 1, None, 3.0, "web")]
    frame = events([*rows, ("a", 1, at(2), 4.0, "x")])
    out = compute_view(defs.views["activity"], frame, defs)
    assert out.index.tolist() == [0, 3]
    assert out["spend_1h"].tolist() == [1.0, 5.0]  # the set-aside rows count in no window
    assert out.attrs[SET_ASIDE] == {"null_key": 1, "null_event_time": 1}


def test_text_times_are_read_as_utc_instants(defs):
    frame = events([("a", 1, "2026-03-01 12:00:00", 1.0, "w"), ("a", 1, "2026-03-01T13:30:00+01:00", 2.0, "w")])
    out = compute_view(defs.views["activity"], frame, defs)
    assert out["at"].tolist() == [at(0), at(30)]
    assert out["spend_1h"].tolist() == [1.0, 3.0]


def test_a_missing_source_column_names_the_view_and_column(defs):
    frame = events([("a", 1, at(0), 1.0, "w")]).drop(columns=["amount"])
    with pytest.raises(DefinitionError, match=r"feature view activity: source has no column\(s\) \['amount'\]"):
        compute_view(defs.views["activity"], frame, defs)


def test_a_compute_function_is_loaded_from_the_repo_and_checked(defs, tmp_path):
    frame = events([("a", 1, at(0), 5.0, "w"), ("b", 1, at(1), 50.0, "w"), ("a", 2, at(2), 1.0, "w")])
    out = compute_view(defs.views["load"], frame, defs)
    assert out.columns.tolist() == ["shop_id", "at", "busy", "queue"]
    assert out["busy"].tolist() == [False, True, False]
    assert out["queue"].tolist() == [0, 1, 0]

    (tmp_path / "feature_repo" / "load.py").write_text(LOAD.replace('.astype("int64")', ".astype(float)"))
    with pytest.raises(DefinitionError, match="feature view load: load.py:compute: column 'queue' is float64"):
        compute_view(defs.views["load"], frame, defs)
    (tmp_path / "feature_repo" / "load.py").write_text(LOAD.replace('out["busy"]', 'out["other"]'))
    with pytest.raises(DefinitionError, match=r"returned no column\(s\) \['busy'\]"):
        compute_view(defs.views["load"], frame, defs)


def test_a_million_events_in_seconds(defs):
    rng = np.random.default_rng(0)
    n = 1_000_000
    frame = pd.DataFrame(
        {
            "customer_id": rng.integers(0, 50_000, n).astype(str),
            "at": at(0) + pd.to_timedelta(rng.integers(0, 30 * 86400, n), unit="s"),
            "amount": rng.random(n) * 100,
            "channel": rng.choice(["web", "app"], n),
        }
    )
    began = time.perf_counter()
    out = compute_view(defs.views["activity"], frame, defs)
    took = time.perf_counter() - began
    assert len(out) == n
    assert took < 30, f"{took:.1f} s"  # ~3 s on a quiet 2-core machine; the bound leaves room for a loaded one
    # Spot check one key against a direct computation.
    key = out["customer_id"].iloc[0]
    mine = frame[frame["customer_id"] == key].sort_values("at")
    last = mine["at"].iloc[-1]
    inside = mine[(mine["at"] > last - pd.Timedelta(hours=1)) & (mine["at"] <= last)]
    row = out.loc[mine.index[-1]]
    assert row["spend_1h"] == pytest.approx(inside["amount"].sum())
    assert row["orders_1h"] == len(inside)
