from __future__ import annotations

import subprocess
import sys

import pytest

from loopline.settings import SettingsError, get_settings


@pytest.fixture
def fresh(monkeypatch):
    get_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


def test_everything_lives_under_home_by_default(fresh, tmp_path):
    fresh.setenv("LOOPLINE_HOME", str(tmp_path))
    s = get_settings()
    for path in (s.landing_dir, s.quarantine_dir, s.data_registry, s.bentoml_home, s.airflow_home):
        assert tmp_path in path.parents
    assert s.mlflow_tracking_uri == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    env = s.as_env()
    assert env["AIRFLOW_HOME"] == str(tmp_path / "airflow") and env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["MLFLOW_TRACKING_URI"] == s.mlflow_tracking_uri


def test_environment_overrides(fresh, tmp_path):
    fresh.setenv("LOOPLINE_DVC_REMOTE", "s3://bucket/dvc")
    fresh.setenv("LOOPLINE_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    s = get_settings()
    assert s.dvc_remote_url == "s3://bucket/dvc" and s.mlflow_tracking_uri == "http://mlflow:5000"


@pytest.mark.parametrize(
    "key,value,named",
    [
        ("LOOPLINE_NOTIFY_WEBHOOK_KIND", "telegraph", "LOOPLINE_NOTIFY_WEBHOOK_KIND"),
        ("LOOPLINE_MLFLOW_TRACKING_URI", "mlflow.db", "mlflow_tracking_uri"),
        ("LOOPLINE_ROUTE_POLL_SECONDS", "soon", "LOOPLINE_ROUTE_POLL_SECONDS"),
        ("LOOPLINE_ROUTE_POLL_SECONDS", "0", "LOOPLINE_ROUTE_POLL_SECONDS"),
    ],
)
def test_bad_settings_are_named(fresh, key, value, named):
    fresh.setenv(key, value)
    with pytest.raises(SettingsError, match=named):
        get_settings()


def test_importing_settings_creates_nothing(tmp_path):
    home = tmp_path / "state"
    code = "import loopline.settings as s; s.get_settings()"
    subprocess.run([sys.executable, "-c", code], check=True, env={"LOOPLINE_HOME": str(home), "PATH": "/usr/bin"})
    assert not home.exists()
