"""The feature store as the full stack runs it, against real services: Feast's SQL registry in Postgres, the
online store in a password-protected Redis (database 1, as docker-compose.yaml sets it), the offline Parquet in
a folder two processes share.

A Redis of its own is started for the test (``redis-server`` on a free 127.0.0.1 port); the registry is a
throw-away database on the machine's Postgres (skipped when there is none). A second ``FeatureStore``, opened
as the BentoML service opens its own (another process's view: nothing shared in memory), reads what the first
materialised. tests/containers/test_compose_stack.py does the same in the containers of the stack.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from loopline.features.definitions import load_definitions
from loopline.features.store import FeatureStore, StoreConfig
from tests.conftest import throwaway_postgres
from tests.unit.test_feature_store import activity, make_repo

PASSWORD = "s3cret-with-a-slash/and+plus"


@pytest.fixture
def registry_url():
    yield from throwaway_postgres("feast_registry")


@pytest.fixture
def redis_url(tmp_path: Path):
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("no redis-server on this machine")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [server, "--bind", "127.0.0.1", "--port", str(port), "--requirepass", PASSWORD, "--save", "",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, db=1)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    from urllib.parse import quote

    yield f"redis://:{quote(PASSWORD, safe='')}@127.0.0.1:{port}/1", client
    proc.terminate()
    proc.wait(timeout=10)


def test_a_view_materialised_into_redis_is_read_by_another_store_with_the_registry_in_postgres(
    tmp_path, registry_url, redis_url
):
    url, client = redis_url
    defs = load_definitions(make_repo(tmp_path / "feature_repo"))
    config = StoreConfig(root=tmp_path / "feast", online=url, registry=registry_url)
    worker = FeatureStore.open(defs, config)
    worker.apply()
    now = datetime.now(UTC).replace(microsecond=0)
    worker.write_offline(
        "customer_activity", activity([("a", now - timedelta(hours=2), 3.0), ("a", now - timedelta(hours=1), 5.0),
                                       ("b", now - timedelta(minutes=30), 7.0)]), batch_id="b1",
    )  # fmt: skip
    done = worker.materialize("customer_activity", end=now)
    assert done.rows == 2

    # Redis holds the values (database 1 only), Postgres the registry with the materialised interval
    assert client.dbsize() > 0
    import redis

    assert redis.Redis(host="127.0.0.1", port=client.connection_pool.connection_kwargs["port"], password=PASSWORD,
                       db=0).dbsize() == 0  # fmt: skip
    engine = sa.create_engine(registry_url)
    with engine.connect() as conn:
        names = {row[0] for row in conn.execute(sa.text("SELECT feature_view_name FROM feature_views"))}
    engine.dispose()
    assert {"customer_activity", "store_load"} <= names

    service = FeatureStore.open(load_definitions(tmp_path / "feature_repo"), config)  # as the service opens it
    read = service.online(
        ["customer_activity:spend_1h", "customer_activity:last_channel"],
        [{"customer_id": "a"}, {"customer_id": "b"}, {"customer_id": "nobody"}],
    )
    assert read.columns["customer_activity__spend_1h"] == [5.0, 7.0, None]
    assert read.columns["customer_activity__last_channel"] == ["ch5", "ch7", None]
    assert read.status["customer_activity__spend_1h"] == ["present", "present", "not_found"]
    assert service.freshness("customer_activity") == pd.Timestamp(now - timedelta(minutes=30)).to_pydatetime()

    # incremental: the next run starts where the registry (in Postgres) says the last one ended
    worker.write_offline("customer_activity", activity([("a", now + timedelta(minutes=5), 9.0)]), batch_id="b2")
    again = worker.materialize("customer_activity", end=now + timedelta(minutes=10))
    assert (again.start, again.rows) == (now, 1)
    assert service.online(["customer_activity:spend_1h"], [{"customer_id": "a"}]).columns == {
        "customer_activity__spend_1h": [9.0]
    }
