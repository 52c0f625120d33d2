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

from loopline.settings import get_settings  # noqa: E402

get_settings.cache_clear()
for _key, _value in get_settings().as_env().items():
    os.environ[_key] = _value


@pytest.fixture(scope="session")
def settings():
    from loopline.settings import ensure_dirs

    return ensure_dirs(get_settings())
