"""Per-lookup latency of one entity's features, three ways, over the repo feast_repo.py made.

    python bench/spikes/feast_lookup.py inproc /tmp/feastrepo   # FeatureStore.get_online_features (needs Feast)
    python bench/spikes/feast_lookup.py http   http://127.0.0.1:6566   # a running `feast serve` (needs requests)
    python bench/spikes/feast_lookup.py sqlite /tmp/feastrepo   # the floor: a direct read of the SQLite online store

One entity per lookup (what a scoring request needs), keys drawn at random from 10k, a warm-up first.
Prints one JSON line: n, p50/p90/p99/mean in ms, and a checksum of the values read (same keys -> same sum).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import struct
import time
from collections.abc import Callable

FEATURES = ["txn_count_7d", "txn_amount_7d", "avg_ticket_30d", "days_since_last", "chargebacks_90d"]
REFS = [f"customer_stats:{f}" for f in FEATURES]
TABLE = "spike_customer_stats"


def inproc(repo: str) -> Callable[[int], float]:
    from feast import FeatureStore

    store = FeatureStore(repo_path=repo)

    def lookup(key: int) -> float:
        out = store.get_online_features(features=REFS, entity_rows=[{"customer_id": key}]).to_dict()
        return float(out["txn_amount_7d"][0])

    return lookup


def http(url: str) -> Callable[[int], float]:
    import requests

    session = requests.Session()  # keep-alive, as a service's client would
    endpoint = url.rstrip("/") + "/get-online-features"

    def lookup(key: int) -> float:
        r = session.post(endpoint, json={"features": REFS, "entities": {"customer_id": [key]}}, timeout=5)
        r.raise_for_status()
        body = r.json()
        names = body["metadata"]["feature_names"]
        return float(body["results"][names.index("txn_amount_7d")]["values"][0])

    return lookup


def sqlite(repo: str) -> Callable[[int], float]:
    import sqlite3

    conn = sqlite3.connect(f"{repo}/data/online_store.db", check_same_thread=False)
    # Feast's entity key serialisation v3 for one INT64 join key: the bytes before the value, then the value.
    name = b"customer_id"
    prefix = struct.pack("<II", 1, 2) + struct.pack("<I", len(name)) + name + struct.pack("<II", 4, 8)
    sql = f'SELECT feature_name, value_text FROM "{TABLE}" WHERE entity_key = ?'

    def lookup(key: int) -> float:
        rows = dict(conn.execute(sql, (prefix + struct.pack("<q", key),)).fetchall())
        return float(rows["txn_amount_7d"])

    return lookup


def measure(lookup: Callable[[int], float], n: int, warmup: int, entities: int, seed: int) -> dict:
    rng = random.Random(seed)
    for _ in range(warmup):
        lookup(rng.randint(1, entities))
    keys = [rng.randint(1, entities) for _ in range(n)]
    times, checksum = [], 0.0
    for key in keys:
        t = time.perf_counter()
        checksum += lookup(key)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {
        "n": n,
        "p50_ms": round(statistics.median(times), 3),
        "p90_ms": round(times[int(0.90 * n) - 1], 3),
        "p99_ms": round(times[int(0.99 * n) - 1], 3),
        "mean_ms": round(statistics.fmean(times), 3),
        "max_ms": round(times[-1], 3),
        "checksum": round(checksum, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["inproc", "http", "sqlite"])
    parser.add_argument("target", help="the repo folder (inproc, sqlite) or the feature server URL (http)")
    parser.add_argument("-n", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    t = time.perf_counter()
    lookup = {"inproc": inproc, "http": http, "sqlite": sqlite}[args.mode](args.target)
    t_first = time.perf_counter()
    lookup(1)
    first_ms = (time.perf_counter() - t_first) * 1000
    setup_s = time.perf_counter() - t
    result = measure(lookup, args.n, args.warmup, args.entities, args.seed)
    print(
        json.dumps({"mode": args.mode, "setup_s": round(setup_s, 3), "first_lookup_ms": round(first_ms, 1), **result})
    )


if __name__ == "__main__":
    main()
