"""The feature store in docker-compose.yaml, without Docker: where its registry, online and offline stores live.

Feast's SQL registry is the database ``feast`` on the stack's Postgres, the online store is database 1 of
the stack's Redis (Celery's broker keeps database 0), and the offline Parquet parts sit on the named volume
``feature-store``, written by the Airflow containers and read (read-only) by the card-fraud service. Every
container that runs Loopline code gets the same three settings, so a worker's materialisation and the
service's lookup meet in the same Redis keys and the same registry. The real stack is started by
tests/containers/test_compose_stack.py.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import yaml

from loopline.core.settings import get_settings
from tests.deploy.stack import DEPLOY, ROOT, environment, example_env, interpolate, services

FEAST_SETTINGS = ("LOOPLINE_FEAST_ROOT", "LOOPLINE_FEAST_REGISTRY", "LOOPLINE_FEAST_ONLINE_REDIS")
STORE_USERS = ("airflow-scheduler", "airflow-worker", "airflow-dag-processor", "airflow-triggerer", "card-fraud")


def _env(service: str) -> dict[str, str]:
    return environment(interpolate(services()[service], example_env()))


def _mounts(service: str) -> dict[str, str]:
    """Container path -> 'volume[:ro]' of a service's short-syntax volumes."""
    out = {}
    for volume in services()[service].get("volumes", []):
        source, target, *mode = volume.split(":")
        out[target] = ":".join([source, *mode])
    return out


def test_every_store_user_gets_the_same_registry_online_store_and_root():
    seen = {service: tuple(_env(service).get(k) for k in FEAST_SETTINGS) for service in STORE_USERS}
    assert len(set(seen.values())) == 1, f"the feature store settings differ between containers: {seen}"
    assert all(all(values) for values in seen.values()), seen


def test_the_registry_is_feasts_sql_registry_in_its_own_postgres_database():
    env = _env("airflow-worker")
    registry = urlsplit(env["LOOPLINE_FEAST_REGISTRY"])
    assert registry.scheme == "postgresql+psycopg2" and registry.hostname == "postgres"
    assert (registry.username, registry.path) == ("feast", "/feast")
    assert registry.password == example_env()["FEAST_DB_PASSWORD"]
    assert "FEAST_DB_PASSWORD" in environment(services()["postgres"]), "the init script creates role feast with it"
    for other in ("LOOPLINE_STATE_DB_URI", "LOOPLINE_AIRFLOW_DB_URI"):
        assert urlsplit(env[other]).path != registry.path, f"the registry shares a database with {other}"


def test_the_online_store_is_redis_beside_the_broker_in_its_own_database():
    from loopline.features.store import redis_connection_string

    env = _env("airflow-worker")
    online, broker = urlsplit(env["LOOPLINE_FEAST_ONLINE_REDIS"]), urlsplit(env["LOOPLINE_CELERY_BROKER_URL"])
    assert (online.scheme, online.hostname, online.port) == ("redis", "redis", broker.port)
    assert online.path == "/1" and broker.path == "/0", "Celery's broker keeps database 0, Feast uses 1"
    assert online.password == example_env()["REDIS_PASSWORD"]
    text = redis_connection_string(env["LOOPLINE_FEAST_ONLINE_REDIS"])  # what Feast's redis store is given
    assert text == f"redis:6379,db=1,password={example_env()['REDIS_PASSWORD']}"


def test_the_offline_parts_are_on_one_shared_volume_the_service_only_reads():
    root = _env("airflow-worker")["LOOPLINE_FEAST_ROOT"]
    home = _env("airflow-worker")["LOOPLINE_HOME"]
    assert not root.startswith(home + "/"), "the store's volume is its own, not the Airflow state volume"
    volumes = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["volumes"]
    for service in STORE_USERS:
        mount = _mounts(service).get(root)
        assert mount is not None, f"{service} does not mount the feature store at {root}"
        assert mount.split(":")[0] == "feature-store" and "feature-store" in volumes, service
        assert mount.endswith(":ro") == (service == "card-fraud"), f"{service}: only the service mounts it read-only"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"mkdir -p [^\n]*{re.escape(root)}\b", dockerfile), "the image creates the mount point"
    assert re.search(rf"chown -R [^\n]*{re.escape(root)}\b", dockerfile), "owned by the image's user (fresh volume)"


@pytest.fixture
def worker_settings(monkeypatch):
    import os

    for key in [k for k in os.environ if k.startswith("LOOPLINE_")]:
        monkeypatch.delenv(key)
    for key, value in _env("airflow-worker").items():
        if key.startswith("LOOPLINE_"):
            monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_the_store_a_worker_opens_is_redis_and_postgres(worker_settings):
    from loopline.features.store import StoreConfig

    config = StoreConfig.from_settings()
    assert (urlsplit(config.online).scheme, urlsplit(config.online).hostname) == ("redis", "redis")
    assert "://" in config.registry_path and config.registry_path.startswith("postgresql+psycopg2://feast:")
    assert str(config.root) == "/opt/loopline/feast"
    assert worker_settings.feature_repo == worker_settings.project_root / "feature_repo"


def test_the_card_fraud_service_waits_for_redis_and_is_scraped():
    depends_on = services()["card-fraud"]["depends_on"]
    assert depends_on["redis"]["condition"] == depends_on["postgres"]["condition"] == "service_healthy"
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert "card-fraud:3002" in targets


def test_the_podman_overlay_puts_the_card_fraud_service_on_the_host_network():
    overlay = yaml.safe_load((DEPLOY / "podman" / "compose.host.yaml").read_text())
    assert overlay["services"]["card-fraud"]["network_mode"] == "host"
    assert "card-fraud:127.0.0.1" in overlay["services"]["card-fraud"]["extra_hosts"]
    stack = (ROOT / "scripts" / "podman-stack.sh").read_text()
    assert "card-fraud" in stack, "podman-stack.sh up must not wait for the card_fraud champion either"
