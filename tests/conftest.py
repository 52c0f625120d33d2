"""Test-wide setup: every test session gets its own, throw-away embedded state.

The environment must be set before Airflow is imported anywhere (it reads its
config at import), which is why this happens at conftest import time.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

if "LOOPLINE_TEST_HOME" not in os.environ:
    os.environ["LOOPLINE_TEST_HOME"] = tempfile.mkdtemp(prefix="loopline-test-")
TEST_HOME = Path(os.environ["LOOPLINE_TEST_HOME"])
os.environ["LOOPLINE_HOME"] = str(TEST_HOME)
for _key in [
    k
    for k in os.environ
    if k.startswith(("LOOPLINE_", "AIRFLOW__")) and k not in ("LOOPLINE_HOME", "LOOPLINE_TEST_HOME")
]:
    del os.environ[_key]  # a developer's own settings must not leak into tests

from loopline.core.settings import get_settings  # noqa: E402

get_settings.cache_clear()
for _key, _value in get_settings().as_env().items():
    os.environ[_key] = _value


@pytest.fixture(scope="session")
def settings():
    from loopline.core.settings import ensure_dirs

    return ensure_dirs(get_settings())


def throwaway_postgres(prefix: str):
    """A fresh database on the machine's Postgres (127.0.0.1:5432, user postgres), dropped afterwards.

    A generator for fixtures: yields the SQLAlchemy URL; skips the test when Postgres is unreachable.
    """
    import uuid

    import psycopg2

    def admin(sql: str) -> None:
        conn = psycopg2.connect(dbname="postgres", host="127.0.0.1", port=5432, user="postgres", connect_timeout=3)
        conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    try:
        admin("SELECT 1")
    except psycopg2.OperationalError as err:
        pytest.skip(f"Postgres is unreachable on 127.0.0.1:5432 as user postgres: {err}")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin(f"CREATE DATABASE {name}")
    yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
