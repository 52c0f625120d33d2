"""Settings: defaults under LOOPLINE_HOME, environment overrides, validation, no import side effects."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loopline.core.errors import LooplineError
from loopline.core.settings import PROJECT_ROOT, SettingsError, apply_library_env, ensure_dirs, get_settings


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean settings cache and a throw-away LOOPLINE_HOME; the session's settings are restored after."""
    home = tmp_path.resolve() / "home"  # settings resolve paths; compare like with like
    monkeypatch.setenv("LOOPLINE_HOME", str(home))
    for key in [
        k for k in os.environ if k.startswith("LOOPLINE_") and k not in ("LOOPLINE_HOME", "LOOPLINE_TEST_HOME")
    ]:
        monkeypatch.delenv(key)  # e.g. the e2e tests' webhook receiver
    get_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


def home_of() -> Path:
    return Path(os.environ["LOOPLINE_HOME"])


# --- defaults -----------------------------------------------------------------------------------


def test_all_state_lives_under_home_by_default(env):
    home = home_of()
    s = get_settings()
    assert s.home == home
    for path in (*s.state_dirs(), s.scores_dir, s.data_registry, s.prediction_log_dir):
        assert path == home or home in path.parents, path
    for text in (s.dvc_remote_url, s.mlflow_artifact_root, s.state_db_uri, s.airflow_db_uri, s.mlflow_tracking_uri):
        assert str(home) in text, text


def test_default_values(env):
    home = home_of()
    s = get_settings()
    assert s.landing_dir == home / "landing" and s.quarantine_dir == home / "quarantine"
    assert s.airflow_home == home / "airflow" and s.bentoml_home == home / "bentoml"
    assert s.mlflow_tracking_uri == f"sqlite:///{home}/mlflow/mlflow.db"
    assert s.state_db_uri == f"sqlite:///{home}/state.db"
    assert s.airflow_db_uri == f"sqlite:///{home}/airflow/airflow.db"
    assert s.route_poll_seconds == 2.0 and s.notify_webhook_kind == "slack" and s.notify_webhook_url == ""
    assert s.max_request_bytes == 1 << 20  # 1 MiB
    assert s.smtp_conn_id == "smtp_default"


def test_code_folders_come_from_the_project_not_home(env):
    s = get_settings()
    assert s.project_root == PROJECT_ROOT and (PROJECT_ROOT / "include" / "loopline" / "core" / "settings.py").is_file()
    assert s.models_dir == PROJECT_ROOT / "models" and (s.models_dir / "credit_risk" / "spec.yaml").is_file()
    assert s.expectations_dir == PROJECT_ROOT / "expectations"


def test_without_loopline_home_state_goes_to_the_project_dot_loopline(env):
    env.delenv("LOOPLINE_HOME")
    get_settings.cache_clear()
    assert get_settings().home == PROJECT_ROOT / ".loopline"


def test_settings_are_cached_until_cleared(env):
    first = get_settings()
    env.setenv("LOOPLINE_NOTIFY_WEBHOOK_KIND", "feishu")
    assert get_settings() is first and first.notify_webhook_kind == "slack"
    get_settings.cache_clear()
    assert get_settings().notify_webhook_kind == "feishu"


def test_the_session_settings_use_the_test_home():
    # conftest points LOOPLINE_HOME at a temp dir: tests never touch a developer's .loopline
    assert get_settings().home == Path(os.environ["LOOPLINE_TEST_HOME"]).resolve()


# --- overrides ----------------------------------------------------------------------------------


def test_environment_overrides(env, tmp_path):
    env.setenv("LOOPLINE_DVC_REMOTE", "s3://bucket/dvc")
    env.setenv("LOOPLINE_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    env.setenv("LOOPLINE_STATE_DB_URI", "postgresql+psycopg2://u:p@db/loopline")
    env.setenv("LOOPLINE_LANDING_DIR", str(tmp_path / "drop"))
    env.setenv("LOOPLINE_NOTIFY_WEBHOOK_KIND", "dingtalk")
    env.setenv("LOOPLINE_NOTIFY_WEBHOOK_URL", "https://oapi.example/robot")
    env.setenv("LOOPLINE_ROUTE_POLL_SECONDS", "0.25")
    env.setenv("LOOPLINE_PSEUDONYM_SECRET", "s3cret")
    env.setenv("LOOPLINE_MAX_REQUEST_BYTES", "65536")
    s = get_settings()
    assert s.dvc_remote_url == "s3://bucket/dvc" and s.mlflow_tracking_uri == "http://mlflow:5000"
    assert s.state_db_uri == "postgresql+psycopg2://u:p@db/loopline"
    assert s.landing_dir == (tmp_path / "drop").resolve() and s.quarantine_dir == home_of() / "quarantine"
    assert s.notify_webhook_kind == "dingtalk" and s.notify_webhook_url == "https://oapi.example/robot"
    assert s.route_poll_seconds == 0.25 and s.pseudonym_secret == "s3cret"
    assert s.max_request_bytes == 65536


def test_path_overrides_are_absolute_and_expanded(env, tmp_path):
    env.chdir(tmp_path)
    env.setenv("HOME", str(tmp_path / "user"))
    env.setenv("LOOPLINE_WORK_DIR", "relative/work")
    env.setenv("LOOPLINE_SCORES_DIR", "~/scores")
    s = get_settings()
    assert s.work_dir == tmp_path.resolve() / "relative" / "work"
    assert s.scores_dir == (tmp_path / "user" / "scores").resolve()


def test_blank_or_padded_values(env):
    env.setenv("LOOPLINE_LANDING_DIR", "   ")
    env.setenv("LOOPLINE_NOTIFY_WEBHOOK_KIND", "  feishu  ")
    env.setenv("LOOPLINE_MLFLOW_TRACKING_URI", "")
    s = get_settings()
    assert s.landing_dir == home_of() / "landing"
    assert s.notify_webhook_kind == "feishu"
    assert s.mlflow_tracking_uri.startswith("sqlite:///")


def test_home_moves_every_default_with_it(env, tmp_path):
    elsewhere = tmp_path.resolve() / "elsewhere"
    env.setenv("LOOPLINE_HOME", str(elsewhere))
    s = get_settings()
    assert s.airflow_home == elsewhere / "airflow"
    assert s.as_env()["LOOPLINE_HOME"] == str(elsewhere)


def test_project_root_override_moves_code_folders(env, tmp_path):
    checkout = tmp_path.resolve() / "checkout"
    env.setenv("LOOPLINE_PROJECT_ROOT", str(checkout))
    s = get_settings()
    assert s.models_dir == checkout / "models"
    assert s.as_env()["AIRFLOW__CORE__DAGS_FOLDER"] == str(checkout / "dags")


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key,value,named",
    [
        ("LOOPLINE_NOTIFY_WEBHOOK_KIND", "telegraph", "LOOPLINE_NOTIFY_WEBHOOK_KIND"),
        ("LOOPLINE_NOTIFY_WEBHOOK_KIND", "Slack", "LOOPLINE_NOTIFY_WEBHOOK_KIND"),
        ("LOOPLINE_MLFLOW_TRACKING_URI", "mlflow.db", "mlflow_tracking_uri"),
        ("LOOPLINE_MLFLOW_TRACKING_URI", "/abs/path/mlflow.db", "mlflow_tracking_uri"),
        ("LOOPLINE_STATE_DB_URI", "state.db", "state_db_uri"),
        ("LOOPLINE_AIRFLOW_DB_URI", "localhost:5432/airflow", "airflow_db_uri"),
        ("LOOPLINE_ROUTE_POLL_SECONDS", "soon", "LOOPLINE_ROUTE_POLL_SECONDS"),
        ("LOOPLINE_ROUTE_POLL_SECONDS", "0", "LOOPLINE_ROUTE_POLL_SECONDS"),
        ("LOOPLINE_ROUTE_POLL_SECONDS", "-1", "LOOPLINE_ROUTE_POLL_SECONDS"),
        ("LOOPLINE_MAX_REQUEST_BYTES", "1MB", "LOOPLINE_MAX_REQUEST_BYTES"),
        ("LOOPLINE_MAX_REQUEST_BYTES", "1.5", "LOOPLINE_MAX_REQUEST_BYTES"),
        ("LOOPLINE_MAX_REQUEST_BYTES", "0", "LOOPLINE_MAX_REQUEST_BYTES"),
    ],
)
def test_bad_settings_raise_naming_the_setting(env, key, value, named):
    env.setenv(key, value)
    with pytest.raises(SettingsError, match=named):
        get_settings()


def test_a_bad_webhook_kind_lists_the_kinds(env):
    env.setenv("LOOPLINE_NOTIFY_WEBHOOK_KIND", "telegraph")
    with pytest.raises(SettingsError, match=r"one of \('slack', 'feishu', 'dingtalk', 'generic'\)"):
        get_settings()


def test_a_non_uri_tracking_uri_is_quoted_in_the_error(env):
    env.setenv("LOOPLINE_MLFLOW_TRACKING_URI", "mlflow.db")
    with pytest.raises(SettingsError, match=r"must be a URI \(scheme://\.\.\.\), got 'mlflow\.db'"):
        get_settings()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_poll_interval_is_refused(env, value):
    env.setenv("LOOPLINE_ROUTE_POLL_SECONDS", value)
    with pytest.raises(SettingsError, match="LOOPLINE_ROUTE_POLL_SECONDS"):
        get_settings()


def test_a_failed_read_is_not_cached(env):
    env.setenv("LOOPLINE_NOTIFY_WEBHOOK_KIND", "telegraph")
    with pytest.raises(SettingsError):
        get_settings()
    env.setenv("LOOPLINE_NOTIFY_WEBHOOK_KIND", "generic")
    assert get_settings().notify_webhook_kind == "generic"


def test_settings_errors_are_loopline_value_errors():
    assert issubclass(SettingsError, LooplineError) and issubclass(SettingsError, ValueError)


# --- side effects -------------------------------------------------------------------------------


def test_importing_and_reading_settings_creates_nothing(tmp_path):
    home = tmp_path / "state"
    code = "import loopline.core.settings as s; print(s.get_settings().landing_dir)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"LOOPLINE_HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin")},
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert done.stdout.strip() == str(home / "landing")
    assert not home.exists() and list(tmp_path.iterdir()) == []


def test_reading_settings_in_process_creates_nothing(env):
    get_settings()
    assert not home_of().exists()


def test_ensure_dirs_creates_the_state_folders(env):
    s = ensure_dirs(get_settings())
    assert all(p.is_dir() for p in s.state_dirs())
    assert Path(s.mlflow_artifact_root).is_dir()
    assert Path(s.mlflow_tracking_uri.removeprefix("sqlite:///")).parent.is_dir()
    assert ensure_dirs(s) is s  # idempotent


# --- exported environment -----------------------------------------------------------------------


def test_as_env_points_the_libraries_at_loopline_state(env):
    s = get_settings()
    exported = s.as_env()
    assert exported["LOOPLINE_HOME"] == str(s.home)
    assert exported["AIRFLOW_HOME"] == str(s.airflow_home)
    assert exported["AIRFLOW__CORE__DAGS_FOLDER"] == str(PROJECT_ROOT / "dags")
    assert exported["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(PROJECT_ROOT / "plugins")
    assert exported["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert exported["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == s.airflow_db_uri
    assert exported["MLFLOW_TRACKING_URI"] == s.mlflow_tracking_uri
    assert exported["BENTOML_HOME"] == str(s.bentoml_home)
    assert all(isinstance(v, str) for v in exported.values())


def test_apply_library_env_sets_library_variables_but_not_airflow(env):
    s = get_settings()
    for key in s.as_env():
        env.setenv(key, "untouched")  # registered with monkeypatch, so restored after the test
    apply_library_env(s)
    for key, value in s.as_env().items():
        assert os.environ[key] == ("untouched" if key.startswith("AIRFLOW") else value)


# --- the pseudonym secret -------------------------------------------------------------------------


def test_pseudonym_secret_is_random_kept_private_and_stable(env):
    from loopline.core.settings import PSEUDONYM_SECRET_FILE

    path = home_of() / PSEUDONYM_SECRET_FILE
    s = get_settings()
    assert not path.exists()  # nothing is created until something needs the secret
    secret = s.pseudonym_secret
    assert len(secret) == 64 and int(secret, 16) >= 0 and secret != "loopline-embedded-demo"
    assert path.read_text().strip() == secret and path.stat().st_mode & 0o777 == 0o600
    assert secret not in repr(s)
    get_settings.cache_clear()
    assert get_settings().pseudonym_secret == secret  # read back, not regenerated
    assert [p.name for p in path.parent.iterdir()] == [PSEUDONYM_SECRET_FILE]  # no temporary left behind


def test_pseudonym_secret_other_homes_differ_and_the_environment_wins(env, tmp_path):
    first = get_settings().pseudonym_secret
    env.setenv("LOOPLINE_HOME", str(tmp_path / "other"))
    get_settings.cache_clear()
    assert get_settings().pseudonym_secret != first
    env.setenv("LOOPLINE_PSEUDONYM_SECRET", "from-the-stack")
    get_settings.cache_clear()
    assert get_settings().pseudonym_secret == "from-the-stack"


def test_concurrent_first_users_agree_on_one_secret(env):
    code = "from loopline.core.settings import get_settings; print(get_settings().pseudonym_secret)"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(6)]
    secrets = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(secrets) == 1 and len(secrets.pop()) == 64


def test_a_truncated_secret_file_is_an_error_not_a_weak_key(env):
    from loopline.core.settings import PSEUDONYM_SECRET_FILE

    home_of().mkdir(parents=True)
    (home_of() / PSEUDONYM_SECRET_FILE).write_text("short\n")
    with pytest.raises(SettingsError, match="pseudonym secret"):
        get_settings().pseudonym_secret  # noqa: B018


def test_loopline_init_generates_the_secret(env):
    from typer.testing import CliRunner

    from loopline.core.settings import PSEUDONYM_SECRET_FILE
    from loopline.ops.cli import app

    result = CliRunner().invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    path = home_of() / PSEUDONYM_SECRET_FILE
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_text().strip() not in result.output


def test_each_model_may_have_a_service_url_of_its_own(env, monkeypatch):
    monkeypatch.setenv("LOOPLINE_SERVICE_URL", "http://127.0.0.1:3000")
    monkeypatch.setenv("LOOPLINE_SERVICE_URL__DELIVERY_TIME", "http://127.0.0.1:3001/")
    s = get_settings()
    assert s.service_url_for("delivery_time") == "http://127.0.0.1:3001"
    assert s.service_url_for("credit_risk") == "http://127.0.0.1:3000"  # the default
    monkeypatch.setenv("LOOPLINE_SERVICE_URL__CREDIT_RISK", "localhost:3000")
    with pytest.raises(SettingsError, match="LOOPLINE_SERVICE_URL__CREDIT_RISK must be a URL"):
        s.service_url_for("credit_risk")
