"""Make a tiny Feast repo in a folder: one entity, one feature view over a local parquet file, SQLite online store.

Run with a Python that has Feast (``.venv-feast`` or a numpy-2 stack with Feast in it)::

    python bench/spikes/feast_repo.py /tmp/feastrepo --entities 10000

Writes ``data/customer_stats.parquet`` (two rows per entity: an old value and a newer one), the
``feature_store.yaml`` and ``definitions.py``, then ``FeatureStore.apply`` and
``materialize_incremental`` up to the newest row. Prints the timings as JSON. Nothing from the network.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

FEATURES = ["txn_count_7d", "txn_amount_7d", "avg_ticket_30d", "days_since_last", "chargebacks_90d"]

YAML = """\
project: spike
registry: data/registry.db
provider: local
online_store:
  type: sqlite
  path: data/online_store.db
offline_store:
  type: file
entity_key_serialization_version: 3
"""

DEFINITIONS = """\
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64, Int64

customer = Entity(name="customer", join_keys=["customer_id"])

source = FileSource(
    path="data/customer_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

customer_stats = FeatureView(
    name="customer_stats",
    entities=[customer],
    ttl=timedelta(days=30),
    schema=[
        Field(name="txn_count_7d", dtype=Int64),
        Field(name="txn_amount_7d", dtype=Float64),
        Field(name="avg_ticket_30d", dtype=Float64),
        Field(name="days_since_last", dtype=Int64),
        Field(name="chargebacks_90d", dtype=Int64),
    ],
    online=True,
    source=source,
)
"""


def source_frame(entities: int, now: datetime, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = np.arange(1, entities + 1, dtype="int64")
    frames = []
    for age in (timedelta(days=2), timedelta(hours=1)):  # an older and a newer value per entity
        ts = pd.Timestamp(now - age)
        frames.append(
            pd.DataFrame(
                {
                    "customer_id": ids,
                    "event_timestamp": ts,
                    "created": ts,
                    "txn_count_7d": rng.integers(0, 60, entities),
                    "txn_amount_7d": rng.gamma(2.0, 150.0, entities).round(2),
                    "avg_ticket_30d": rng.gamma(2.0, 40.0, entities).round(2),
                    "days_since_last": rng.integers(0, 30, entities),
                    "chargebacks_90d": rng.poisson(0.05, entities),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("repo", type=Path)
    parser.add_argument("--entities", type=int, default=10_000)
    args = parser.parse_args()
    repo: Path = args.repo
    (repo / "data").mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).replace(microsecond=0)
    source_frame(args.entities, now).to_parquet(repo / "data" / "customer_stats.parquet", index=False)
    (repo / "feature_store.yaml").write_text(YAML)
    (repo / "definitions.py").write_text(textwrap.dedent(DEFINITIONS))

    t = time.perf_counter()
    from feast import FeatureStore

    import_s = time.perf_counter() - t
    sys.path.insert(0, str(repo))
    import definitions  # noqa: E402  (the repo's own module)

    store = FeatureStore(repo_path=str(repo))
    t = time.perf_counter()
    store.apply([definitions.customer, definitions.customer_stats])
    apply_s = time.perf_counter() - t
    t = time.perf_counter()
    store.materialize_incremental(end_date=now + timedelta(seconds=1))
    materialize_s = time.perf_counter() - t
    print(
        json.dumps(
            {
                "entities": args.entities,
                "source_rows": 2 * args.entities,
                "import_feast_s": round(import_s, 3),
                "apply_s": round(apply_s, 3),
                "materialize_s": round(materialize_s, 3),
                "materialize_rows_per_s": round(2 * args.entities / materialize_s),
            }
        )
    )


if __name__ == "__main__":
    main()
