"""A point-in-time training set of N label rows x 3 views: the store vs a plain ``pandas.merge_asof``.

A benchmark, not a test: it prints one JSON line per measurement and asserts nothing. Issue 23
sets the bar: ``FeatureStore.training_set`` on 1M label rows x 3 views within 2x a plain
``merge_asof`` doing the same join (the same ttl, the latest value per key and time).

Setup (seeded): ``--keys`` customers; each of 3 views (keyed on the customer, 2 float features
each, ttl 7d) has ``--feature-rows`` rows written as ``--parts`` part files; ``--labels`` label
rows at random times over 30 days. Measured, each in this process after a warm-up:

- **floor**: ``merge_asof`` of the label rows (sorted by time) against each view's frame already in
  memory, sorted, deduplicated, with ``tolerance=ttl``, then put back in the label rows' order: the
  join alone, nothing read;
- **store**: ``FeatureStore.training_set`` (reads the Parquet parts, keeps the latest ``created``
  per key and time, joins, restores order, computes the lineage hashes);
- **feast** (``--feast``): Feast 0.67's own ``get_historical_features`` on the file (dask) offline
  store, the same rows, through ``FeatureStore._feast_historical``; ``--feast-labels`` caps its
  label rows (its left merge of every label row with every value of its key grows with history).

    python -m bench.feature_store_bench [--labels 1000000] [--feast] [--feast-labels 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

VIEWS = ("v1", "v2", "v3")


def write_repo(repo: Path) -> None:
    repo.mkdir(parents=True, exist_ok=True)
    views = [
        {
            "name": view,
            "owner": "bench",
            "entities": ["customer"],
            "ttl": "7d",
            "schedule": "@hourly",
            "source": {"dataset": "events", "event_time": "at"},
            "compute": "f.py:compute",
            "features": [{"name": "a", "dtype": "float64"}, {"name": "b", "dtype": "float64"}],
        }
        for view in VIEWS
    ]
    entity = [{"name": "customer", "join_key": "customer_id", "value_type": "int64"}]
    (repo / "bench.yaml").write_text(yaml.safe_dump({"entities": entity, "feature_views": views}))
    (repo / "f.py").write_text("def compute(events):\n    return events\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--labels", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--feature-rows", type=int, default=1_000_000)
    parser.add_argument("--parts", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--feast", action="store_true")
    parser.add_argument("--feast-labels", type=int, default=100_000)
    args = parser.parse_args()

    from loopline.features.definitions import load_definitions
    from loopline.features.store import FeatureStore, StoreConfig

    work = Path(tempfile.mkdtemp(prefix="loopline-store-bench-"))
    try:
        write_repo(work / "repo")
        store = FeatureStore.open(load_definitions(work / "repo"), StoreConfig(root=work / "store"))
        store.apply()
        rng = np.random.default_rng(23)
        end = datetime(2026, 12, 1, tzinfo=UTC)
        span = int(timedelta(days=30).total_seconds())
        frames = {}
        for view in VIEWS:
            at = pd.to_datetime(end.timestamp() - rng.integers(0, span, args.feature_rows), unit="s", utc=True)
            frame = pd.DataFrame(
                {
                    "customer_id": rng.integers(0, args.keys, args.feature_rows),
                    "at": at,
                    "a": rng.normal(size=args.feature_rows),
                    "b": rng.normal(size=args.feature_rows),
                }
            )
            for i, chunk in enumerate(np.array_split(np.arange(args.feature_rows), args.parts)):
                store.write_offline(view, frame.iloc[chunk], batch_id=f"b{i:03d}")
            frames[view] = frame
        labels = pd.DataFrame(
            {
                "customer_id": rng.integers(0, args.keys, args.labels),
                "ts": pd.to_datetime(end.timestamp() - rng.integers(0, span, args.labels), unit="s", utc=True),
                "label": rng.integers(0, 2, args.labels),
            }
        )
        refs = [f"{v}:{f}" for v in VIEWS for f in ("a", "b")]
        ttl = pd.Timedelta(days=7)

        def floor() -> pd.DataFrame:
            order = np.argsort(labels["ts"].to_numpy(), kind="stable")
            left = labels.iloc[order]
            out = labels.copy()
            for view, frame in frames.items():
                right = frame.sort_values("at", kind="stable").drop_duplicates(["customer_id", "at"], keep="last")
                joined = pd.merge_asof(
                    left[["customer_id", "ts"]], right, left_on="ts", right_on="at", by="customer_id", tolerance=ttl
                )
                for feature in ("a", "b"):
                    values = np.empty(len(joined))
                    values[order] = joined[feature].to_numpy()
                    out[f"{view}__{feature}"] = values
            return out

        def timed(name: str, fn, rows: int) -> pd.DataFrame:
            fn()  # warm-up
            seconds = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                result = fn()
                seconds.append(time.perf_counter() - started)
            print(
                json.dumps(
                    {
                        "what": name,
                        "label_rows": rows,
                        "views": len(VIEWS),
                        "feature_rows_per_view": args.feature_rows,
                        "seconds_median": round(float(np.median(seconds)), 3),
                        "seconds": [round(s, 3) for s in seconds],
                        "load": os.getloadavg()[0],
                    }
                ),
                flush=True,
            )
            return result

        base = timed("floor: pandas.merge_asof x3, in memory", floor, args.labels)
        got = timed(
            "store: FeatureStore.training_set",
            lambda: store.training_set(labels, refs, event_time="ts").frame,
            args.labels,
        )
        columns = [f"{v}__{f}" for v in VIEWS for f in ("a", "b")]
        same = np.allclose(base[columns].to_numpy(), got[columns].to_numpy(), equal_nan=True)
        print(json.dumps({"store equals floor": bool(same)}), flush=True)
        if args.feast:
            few = labels.iloc[: args.feast_labels]
            timed(
                "feast: get_historical_features (file/dask store)",
                lambda: store._feast_historical(few, refs, event_time="ts"),
                len(few),
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
