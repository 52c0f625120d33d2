"""Benchmark: the feature store against its floors, four ratios measured side by side in one run.

Not a test: it measures and prints, it asserts nothing about time (issue 23, item 8). Each part is
self-contained in a temporary ``LOOPLINE_HOME`` (never a developer's state):

- **(a) serving**: two real ``bentoml serve`` processes of Bentos built by
  ``loopline.serving.packaging``, one booster: ``card_fraud`` (its seven ``features.stored`` read
  per request from the SQLite online store by ``card_id`` / ``merchant_id``) and ``card_fraud_inline``
  (the same spec with the seven ``<view>__<feature>`` columns as request-time numeric inputs: the
  request carries the features itself). One keep-alive connection, one application per request, the
  two servers in alternating rounds; p50 and p99 of each and the difference (goal: the lookup adds
  <= 1 ms at p50 and <= 3 ms at p99; reported, never asserted). Both answers are checked equal.
- **(b) online read**: ``FeatureStore.online`` (Feast's ``get_online_features``, statuses, ttl) for
  one key of one view, against the floor: the same row read from the same SQLite file by primary key
  (``SELECT ... WHERE entity_key = ?`` with the key already serialised, values parsed from their
  protobufs). Both in this process, alternating.
- **(c) training set**: ``bench.feature_store_bench`` (h-store's bench, run as it is, in a
  subprocess): ``FeatureStore.training_set`` of N label rows x 3 views against a plain
  ``pandas.merge_asof`` doing the same join in memory (goal <= 2x).
- **(d) materialisation**: ``FeatureStore.materialize`` of 3 views (the latest value of each key of
  an interval written to the online store), in keys written per second, and offline rows read per
  second.

    python -m bench.features_bench [--quick] [--labels 1000000] [--keys 100000] [--requests 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODEL = "card_fraud"
INLINE = "card_fraud_inline"


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _load() -> float:
    return os.getloadavg()[0]


# ----------------------------------------------------------------------------- (b) and (d): the store alone


def store_part(work: Path, keys: int, rows_per_view: int, reads: int) -> dict:
    """Materialise 3 views of ``rows_per_view`` rows over ``keys`` keys, then time online reads vs SQLite."""
    import pandas as pd

    from bench.feature_store_bench import VIEWS, write_repo
    from loopline.features.definitions import load_definitions
    from loopline.features.store import FeatureStore, StoreConfig

    write_repo(work / "repo")
    store = FeatureStore.open(load_definitions(work / "repo"), StoreConfig(root=work / "store"))
    store.apply()
    rng = np.random.default_rng(8)
    now = datetime.now(UTC).replace(microsecond=0)
    for view in VIEWS:  # event times within the last day: fresh for the views' 7-day ttl
        frame = pd.DataFrame(
            {
                "customer_id": rng.integers(0, keys, rows_per_view),
                "at": pd.to_datetime(now.timestamp() - rng.integers(0, 86_400, rows_per_view), unit="s", utc=True),
                "a": rng.normal(size=rows_per_view),
                "b": rng.normal(size=rows_per_view),
            }
        )
        store.write_offline(view, frame, batch_id="b000")
    written, seconds = 0, 0.0
    for view in VIEWS:
        began = time.perf_counter()
        done = store.materialize(view, end=now + timedelta(seconds=1))
        seconds += time.perf_counter() - began
        written += done.rows
    out: dict = {
        "materialize_keys": written,
        "materialize_offline_rows": rows_per_view * len(VIEWS),
        "materialize_seconds": seconds,
    }

    # (b): one key of one view, the store's read vs the same SQLite row by primary key.
    import sqlite3

    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    present = np.unique(rng.integers(0, keys, reads * 4))
    conn = sqlite3.connect(str(work / "store" / "online.db"), check_same_thread=False)
    table = next(
        name
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if name.endswith(f"_{VIEWS[0]}")
    )
    query = f'SELECT feature_name, value FROM "{table}" WHERE entity_key = ?'

    def key_bytes(k: int) -> bytes:
        return serialize_entity_key(EntityKey(join_keys=["customer_id"], entity_values=[Value(int64_val=k)]), 3)

    def floor(blob: bytes) -> dict:
        values = {}
        for name, raw in conn.execute(query, (blob,)).fetchall():
            value = Value()
            value.ParseFromString(raw)
            values[name] = value.double_val
        return values

    refs = [f"{VIEWS[0]}:a", f"{VIEWS[0]}:b"]
    sample = [int(k) for k in present[:reads]]
    blobs = [key_bytes(k) for k in sample]
    for k, blob in zip(sample[:50], blobs[:50], strict=True):  # warm-up, and the same values on both paths
        read = store.online(refs, [{"customer_id": k}])
        direct = floor(blob)
        if read.columns[f"{VIEWS[0]}__a"][0] is not None and direct:
            assert abs(read.columns[f"{VIEWS[0]}__a"][0] - direct["a"]) < 1e-12, (k, read, direct)
    store_times: list[float] = []
    floor_times: list[float] = []
    for i, (k, blob) in enumerate(zip(sample, blobs, strict=True)):
        pair = [
            ("store", lambda k=k: store.online(refs, [{"customer_id": k}])),
            ("floor", lambda blob=blob: floor(blob)),
        ]
        for name, call in pair if i % 2 == 0 else pair[::-1]:
            began = time.perf_counter()
            call()
            (store_times if name == "store" else floor_times).append(time.perf_counter() - began)
    conn.close()
    out.update({"online_store": store_times, "online_floor": floor_times})
    return out


# ----------------------------------------------------------------------------- (c): h-store's bench as it is


def training_set_part(labels: int, keys: int, feature_rows: int, parts: int, repeat: int) -> dict:
    cmd = [sys.executable, "-m", "bench.feature_store_bench", "--labels", str(labels), "--keys", str(keys)]
    cmd += ["--feature-rows", str(feature_rows), "--parts", str(parts), "--repeat", str(repeat)]
    done = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench.feature_store_bench failed:\n{done.stderr[-3000:]}")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    found = {line["what"].split(":")[0]: line for line in lines if "what" in line}
    same = next((line["store equals floor"] for line in lines if "store equals floor" in line), None)
    return {"floor": found["floor"], "store": found["store"], "same": same}


# ----------------------------------------------------------------------------- (a): the service


def _inline_spec(text: str) -> str:
    """card_fraud's spec with its stored features as request-time numeric inputs (same columns, same order)."""
    import yaml

    raw = yaml.safe_load(text)
    raw["name"] = INLINE
    stored = raw["features"].pop("stored")
    raw["features"].pop("stored_missing", None)
    numeric = raw["features"]["numeric"]
    for ref in stored:
        numeric[ref.replace(":", "__")] = {"min": -1e9, "max": 1e9}
    return yaml.safe_dump(raw, sort_keys=False)


def serve_part(home: Path, cards: int, merchants: int, requests: int, rounds: int) -> dict:
    """Two Bentos of one booster, served for real; per-request latency with the lookup vs features in the request."""
    import http.client

    import lightgbm as lgb
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    from bench.serve_bench import _isolate, start
    from loopline.core import tracking
    from loopline.core.features import build_features
    from loopline.core.serving_state import Route, ServingState
    from loopline.core.spec import load_spec
    from loopline.features.definitions import load_definitions
    from loopline.features.store import FeatureStore, StoreConfig
    from loopline.serving.packaging import build_bento

    models = home / "models"
    shutil.copytree(PROJECT_ROOT / "models" / MODEL, models / MODEL)
    shutil.copytree(PROJECT_ROOT / "models" / MODEL, models / INLINE)
    spec_file = models / INLINE / "spec.yaml"
    spec_file.write_text(_inline_spec(spec_file.read_text()))
    _isolate(home)  # clears every LOOPLINE_* variable; then this run's models folder and the project's repo
    os.environ["LOOPLINE_MODELS_DIR"] = str(models)
    os.environ["LOOPLINE_FEATURE_REPO"] = str(PROJECT_ROOT / "feature_repo")
    from loopline.core.settings import apply_library_env, ensure_dirs, get_settings

    get_settings.cache_clear()
    settings = ensure_dirs(apply_library_env(get_settings()))
    spec, inline = load_spec(MODEL, models), load_spec(INLINE, models)

    # The online store: every card and merchant has a value from the last hour (fresh for both views' ttl).
    store = FeatureStore.open(load_definitions(settings.feature_repo), StoreConfig.from_settings())
    store.apply()
    rng = np.random.default_rng(23)
    now = datetime.now(UTC).replace(microsecond=0)
    stored_values: dict[str, pd.DataFrame] = {}
    for view, key, n in (("card_activity", "card_id", cards), ("merchant_activity", "merchant_id", merchants)):
        features = store.defs.views[view].feature_names
        frame = pd.DataFrame({key: [f"{key[0]}{i}" for i in range(n)]})
        frame["transacted_at"] = pd.to_datetime(now.timestamp() - rng.integers(60, 3600, n), unit="s", utc=True)
        for feature in features:
            frame[feature] = (
                rng.integers(0, 20, n) if store._columns(view)[feature] == "int64" else rng.gamma(2.0, 40.0, n)
            )
        store.write_offline(view, frame, batch_id="bench")
        store.materialize(view, end=now + timedelta(seconds=1))
        stored_values[view] = frame.set_index(key)

    # One booster for both models: same columns in the same order (numeric, stored, derived, categorical).
    n = 20_000
    raw = pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 40.0, n),
            "hour": rng.integers(0, 24, n).astype(float),
            "merchant_category": rng.choice(spec.features.categorical["merchant_category"], n),
            "channel": rng.choice(spec.features.categorical["channel"], n),
        }
    )
    for column in spec.features.stored_columns:
        raw[column] = rng.gamma(2.0, 40.0, n) if "amount" in column or "spend" in column else rng.integers(0, 20, n)
    x = build_features(raw, spec)
    assert list(build_features(raw, inline).columns) == list(x.columns)
    score = x["amount_vs_card_mean"].fillna(0) + 0.05 * x["merchant_activity__count_1d"] + rng.normal(0, 1, n)
    y = (score > np.quantile(score, 0.97)).astype(int)
    params = {"objective": "binary", "num_leaves": 31, "learning_rate": 0.05, "verbose": -1, "seed": 1}
    booster = lgb.train(params, lgb.Dataset(x, y), num_boost_round=200)
    client = tracking.client_for(settings)
    state = ServingState(settings.state_db_uri)
    tags = {}
    for name in (MODEL, INLINE):
        with mlflow.start_run(experiment_id=tracking.experiment_id(client, name, settings)) as run:
            info = mlflow.lightgbm.log_model(
                booster, name=tracking.MODEL_ARTIFACT, signature=infer_signature(x, booster.predict(x))
            )
            mlflow.set_tags({"loopline.model_uri": info.model_uri, "loopline.model_id": info.model_id or ""})
        version, _ = tracking.register(client, name, run.info.run_id)
        client.set_registered_model_alias(name, tracking.CHAMPION_ALIAS, version)
        route = Route(name, champion_version=version, revision=state.route(name).revision)
        state.change(route, "first_champion", "features_bench", "benchmark setup")
        tags[name] = build_bento(name, version, settings)

    bentoml_cli = str(Path(sys.executable).with_name("bentoml"))
    env = dict(os.environ)
    servers = {
        name: start(name, [bentoml_cli, "serve", tags[name], "--host", "127.0.0.1", "--port"], env, home, home)
        for name in (MODEL, INLINE)
    }
    try:
        for server in servers.values():
            server.wait_ready("/readyz")
        cards_idx = rng.integers(0, cards, requests)
        merchants_idx = rng.integers(0, merchants, requests)
        bodies: dict[str, list[bytes]] = {MODEL: [], INLINE: []}
        for i in range(requests):
            card, merchant = f"c{cards_idx[i]}", f"m{merchants_idx[i]}"
            app = {
                "transaction_id": f"t{i}",
                "card_id": card,
                "merchant_id": merchant,
                "amount": round(float(rng.gamma(2.0, 40.0)), 2),
                "hour": int(rng.integers(0, 24)),
                "merchant_category": str(rng.choice(spec.features.categorical["merchant_category"])),
                "channel": str(rng.choice(spec.features.categorical["channel"])),
            }
            bodies[MODEL].append(json.dumps({"instances": [app]}).encode())
            carried = dict(app)
            for ref in spec.features.stored:
                view, feature = ref.split(":")
                value = stored_values[view].loc[card if view == "card_activity" else merchant, feature]
                carried[f"{view}__{feature}"] = float(value)
            bodies[INLINE].append(json.dumps({"instances": [carried]}).encode())

        connections: dict[str, http.client.HTTPConnection] = {}

        def connect(name: str) -> None:
            """A fresh keep-alive connection: a server closes one left idle while the other is measured."""
            if name in connections:
                connections[name].close()
            host, port = servers[name].url.removeprefix("http://").split(":")
            connections[name] = http.client.HTTPConnection(host, int(port), timeout=30)

        def post(name: str, body: bytes) -> tuple[float, dict]:
            for attempt in range(2):
                conn = connections[name]
                began = time.perf_counter()
                try:
                    conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                    response = conn.getresponse()
                    data = response.read()
                except (ConnectionError, http.client.HTTPException):
                    if attempt:
                        raise
                    connect(name)  # closed by the server meanwhile: reconnect, and this attempt is not timed
                    continue
                break
            took = time.perf_counter() - began
            if response.status != 200:
                raise RuntimeError(f"{name}: {response.status} {data[:500]!r}")
            return took, json.loads(data)

        for name in servers:
            connect(name)
        differ = 0.0
        for i in range(min(200, requests)):  # warm-up; the two answers agree
            _, a = post(MODEL, bodies[MODEL][i])
            _, b = post(INLINE, bodies[INLINE][i])
            differ = max(differ, abs(a[0]["score"] - b[0]["score"]))
        latencies: dict[str, list[float]] = {MODEL: [], INLINE: []}
        per = max(1, requests // rounds)
        for r in range(rounds):
            order = [MODEL, INLINE] if r % 2 == 0 else [INLINE, MODEL]
            for name in order:
                connect(name)
                for i in range(5):  # the new connection's first requests are not timed
                    post(name, bodies[name][i])
                for i in range(r * per, min(requests, (r + 1) * per)):
                    latencies[name].append(post(name, bodies[name][i])[0])
        for conn in connections.values():
            conn.close()
        return {"latencies": latencies, "max_score_difference": differ}
    finally:
        for server in servers.values():
            server.stop()


# ----------------------------------------------------------------------------- report


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms" if seconds < 0.01 else f"{seconds * 1000:.1f} ms"


def report(results: dict, args: argparse.Namespace) -> list[str]:
    lines = []
    if "serve" in results:
        lookup, carried = results["serve"]["latencies"][MODEL], results["serve"]["latencies"][INLINE]
        p50 = (_pct(lookup, 50), _pct(carried, 50))
        p99 = (_pct(lookup, 99), _pct(carried, 99))
        lines.append(
            f"(a) service, 1 request at a time, {len(lookup)} requests each: with the online lookup / features in"
            f" the request: p50 {_ms(p50[0])} / {_ms(p50[1])} = {p50[0] / p50[1]:.2f}x (+{_ms(p50[0] - p50[1])},"
            f" goal <= +1 ms: {'met' if p50[0] - p50[1] <= 0.001 else 'MISSED'}); p99 {_ms(p99[0])} / {_ms(p99[1])}"
            f" = {p99[0] / p99[1]:.2f}x (+{_ms(p99[0] - p99[1])}, goal <= +3 ms:"
            f" {'met' if p99[0] - p99[1] <= 0.003 else 'MISSED'}); max |score difference|"
            f" {results['serve']['max_score_difference']:.1e}"
        )
    s = results.get("store")
    if s:
        online, floor = s["online_store"], s["online_floor"]
        lines.append(
            f"(b) online read, 1 key x 2 features of 1 view, {len(online)} reads each: FeatureStore.online / SQLite by"
            f" primary key: p50 {_ms(_pct(online, 50))} / {_ms(_pct(floor, 50))} ="
            f" {_pct(online, 50) / _pct(floor, 50):.1f}x; p99 {_ms(_pct(online, 99))} / {_ms(_pct(floor, 99))} ="
            f" {_pct(online, 99) / _pct(floor, 99):.1f}x"
        )
    t = results.get("training_set")
    if t:
        store_s, floor_s = t["store"]["seconds_median"], t["floor"]["seconds_median"]
        lines.append(
            f"(c) training set, {t['store']['label_rows']:,} label rows x {t['store']['views']} views"
            f" ({t['store']['feature_rows_per_view']:,} rows a view): FeatureStore.training_set / pandas.merge_asof:"
            f" {store_s:.2f} s / {floor_s:.2f} s = {store_s / floor_s:.2f}x (goal <= 2x:"
            f" {'met' if store_s / floor_s <= 2 else 'MISSED'}); same values: {t['same']}"
        )
    if s:
        keys, rows, secs = s["materialize_keys"], s["materialize_offline_rows"], s["materialize_seconds"]
        lines.append(
            f"(d) materialisation, 3 views: {keys:,} keys written from {rows:,} offline rows in {secs:.2f} s ="
            f" {keys / secs:,.0f} keys/s written ({rows / secs:,.0f} offline rows/s read)"
        )
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run (about a minute)")
    parser.add_argument("--labels", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--feature-rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--no-serve", action="store_true", help="skip (a), the two Bento services")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if args.quick:
        args.labels, args.keys, args.feature_rows, args.repeat = 20_000, 2_000, 20_000, 1
        args.reads, args.requests, args.rounds = 200, 200, 2
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    began = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="loopline-features-bench-"))
    results: dict = {}
    loads = {"start": _load()}
    try:
        print(f"(d, b) materialise 3 views, then online reads ... ({home})", flush=True)
        results["store"] = store_part(home / "store-part", args.keys, args.feature_rows, args.reads)
        loads["store"] = _load()
        print("\n".join(report(results, args)), f"(load {loads['store']:.1f})", flush=True)
        print("(c) training set: bench.feature_store_bench ...", flush=True)
        parts = 10 if args.feature_rows >= 100_000 else 2
        results["training_set"] = training_set_part(args.labels, args.keys, args.feature_rows, parts, args.repeat)
        loads["training_set"] = _load()
        print(next(line for line in report(results, args) if line.startswith("(c)")), flush=True)
        if not args.no_serve:
            print("(a) two Bentos of one booster: lookup vs features in the request ...", flush=True)
            results["serve"] = serve_part(home / "serve-part", 5000, 500, args.requests, args.rounds)
            loads["serve"] = _load()
        print()
        for line in report(results, args):
            print(line)
        print(
            f"load average (1 min) at start / after each part: {loads['start']:.1f} / "
            + ", ".join(f"{k} {v:.1f}" for k, v in loads.items() if k != "start")
            + f"; {os.cpu_count()} CPUs; total {time.monotonic() - began:.0f} s"
        )
    finally:
        if args.keep:
            print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
