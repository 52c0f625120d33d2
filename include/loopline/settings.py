"""Every Loopline knob, read from the environment, with defaults for the embedded mode.

This is the one config source. The embedded default keeps all state in one
git-ignored folder (``LOOPLINE_HOME``, default ``<project>/.loopline``); the
docker compose stack changes only these variables, never code.

Importing this module has no side effects: nothing is created, no library is
configured. ``get_settings()`` reads the environment; ``ensure_dirs()`` creates
folders when a command or task actually needs them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

from loopline.alerts import WEBHOOK_KINDS
from loopline.errors import LooplineError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EXECUTORS = ("LocalExecutor", "CeleryExecutor")


class SettingsError(LooplineError, ValueError):
    """A setting has a value Loopline cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    project_root: Path
    home: Path
    landing_dir: Path
    processing_dir: Path
    quarantine_dir: Path
    archive_dir: Path
    work_dir: Path
    scores_dir: Path
    data_registry: Path
    dvc_remote_url: str
    mlflow_tracking_uri: str
    mlflow_artifact_root: str
    bentoml_home: Path
    state_db_uri: str
    prediction_log_dir: Path
    route_poll_seconds: float
    landing_settle_seconds: float
    max_request_bytes: int
    pseudonym_secret: str
    models_dir: Path
    expectations_dir: Path
    airflow_home: Path
    airflow_db_uri: str
    notify_webhook_url: str
    notify_webhook_kind: str
    notify_email_to: str
    smtp_conn_id: str
    service_url: str
    mlflow_ui_url: str
    monitoring_dir: Path
    airflow_executor: str
    celery_broker_url: str
    celery_result_backend: str

    def as_env(self) -> dict[str, str]:
        """Variables the libraries themselves read (Airflow, MLflow, BentoML, GE).

        Exported by ``loopline env`` so ``airflow``, ``mlflow ui`` and ``bentoml serve``
        run by hand see the same state as the DAGs.
        """
        return {
            "LOOPLINE_HOME": str(self.home),
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.project_root / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.project_root / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.airflow_db_uri,
            "MLFLOW_TRACKING_URI": self.mlflow_tracking_uri,
            "BENTOML_HOME": str(self.bentoml_home),
            "BENTOML_DO_NOT_TRACK": "True",
            "GX_ANALYTICS_ENABLED": "False",
            "GIT_PYTHON_REFRESH": "quiet",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "AIRFLOW__CORE__EXECUTOR": self.airflow_executor,
            **self._celery_env(),
        }

    def _celery_env(self) -> dict[str, str]:
        if self.airflow_executor != "CeleryExecutor":
            return {}
        return {
            "AIRFLOW__CELERY__BROKER_URL": self.celery_broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": self.celery_result_backend,
        }

    def state_dirs(self) -> list[Path]:
        return [
            self.home,
            self.landing_dir,
            self.processing_dir,
            self.quarantine_dir,
            self.archive_dir,
            self.work_dir,
            self.bentoml_home,
            self.airflow_home,
        ]


def _path(name: str, default: Path) -> Path:
    raw = os.environ.get(name, "").strip()
    return Path(raw).expanduser().resolve() if raw else default


def _text(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


def _integer(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings for this process. Cached: call ``get_settings.cache_clear()`` after changing env."""
    root = _path("LOOPLINE_PROJECT_ROOT", PROJECT_ROOT)
    home = _path("LOOPLINE_HOME", root / ".loopline")
    mlflow_dir = home / "mlflow"
    settings = Settings(
        project_root=root,
        home=home,
        landing_dir=_path("LOOPLINE_LANDING_DIR", home / "landing"),
        processing_dir=_path("LOOPLINE_PROCESSING_DIR", home / "processing"),
        quarantine_dir=_path("LOOPLINE_QUARANTINE_DIR", home / "quarantine"),
        archive_dir=_path("LOOPLINE_ARCHIVE_DIR", home / "archive"),
        work_dir=_path("LOOPLINE_WORK_DIR", home / "work"),
        scores_dir=_path("LOOPLINE_SCORES_DIR", home / "scores"),
        data_registry=_path("LOOPLINE_DATA_REGISTRY", home / "data-registry"),
        dvc_remote_url=_text("LOOPLINE_DVC_REMOTE", str(home / "dvc-remote")),
        mlflow_tracking_uri=_text("LOOPLINE_MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_dir / 'mlflow.db'}"),
        mlflow_artifact_root=_text("LOOPLINE_MLFLOW_ARTIFACT_ROOT", str(mlflow_dir / "artifacts")),
        bentoml_home=_path("LOOPLINE_BENTOML_HOME", home / "bentoml"),
        state_db_uri=_text("LOOPLINE_STATE_DB_URI", f"sqlite:///{home / 'state.db'}"),
        prediction_log_dir=_path("LOOPLINE_PREDICTION_LOG_DIR", home / "predictions"),
        route_poll_seconds=_number("LOOPLINE_ROUTE_POLL_SECONDS", 2.0),
        # A landed file is taken once its size and mtime were still this long (or it has a .done marker).
        landing_settle_seconds=_number("LOOPLINE_LANDING_SETTLE_SECONDS", 30.0),
        # The largest request body the service reads (answered 413 beyond it, before parsing): 1 MiB
        # holds a full batch of applications (about 430 KB for 1000) with room to spare.
        max_request_bytes=_integer("LOOPLINE_MAX_REQUEST_BYTES", 1 << 20),
        # Keys the pseudonyms of applicant ids in prediction logs; set a real secret outside the demo.
        pseudonym_secret=_text("LOOPLINE_PSEUDONYM_SECRET", "loopline-embedded-demo"),
        models_dir=_path("LOOPLINE_MODELS_DIR", root / "models"),
        expectations_dir=_path("LOOPLINE_EXPECTATIONS_DIR", root / "expectations"),
        airflow_home=_path("LOOPLINE_AIRFLOW_HOME", home / "airflow"),
        airflow_db_uri=_text("LOOPLINE_AIRFLOW_DB_URI", f"sqlite:///{home / 'airflow' / 'airflow.db'}"),
        notify_webhook_url=_text("LOOPLINE_NOTIFY_WEBHOOK_URL", ""),
        notify_webhook_kind=_text("LOOPLINE_NOTIFY_WEBHOOK_KIND", "slack"),
        notify_email_to=_text("LOOPLINE_NOTIFY_EMAIL_TO", ""),
        smtp_conn_id=_text("LOOPLINE_SMTP_CONN_ID", "smtp_default"),
        # Where the rollout DAG reads the service's /metrics (error counts per model version).
        service_url=_text("LOOPLINE_SERVICE_URL", "http://127.0.0.1:3000").rstrip("/"),
        mlflow_ui_url=_text("LOOPLINE_MLFLOW_UI_URL", "http://127.0.0.1:5000").rstrip("/"),  # task extra links
        monitoring_dir=_path("LOOPLINE_MONITORING_DIR", home / "monitoring"),  # drift detectors and reports
        airflow_executor=_text("LOOPLINE_AIRFLOW_EXECUTOR", "LocalExecutor"),
        celery_broker_url=_text("LOOPLINE_CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"),
        celery_result_backend=_text(
            "LOOPLINE_CELERY_RESULT_BACKEND", "db+postgresql+psycopg2://postgres@127.0.0.1:5432/airflow"
        ),
    )
    _check(settings)
    return settings


def _check(settings: Settings) -> None:
    # models_dir / expectations_dir are checked where they are read (load_spec, load_suite_dict),
    # so a Bento, which carries neither folder, can still read its settings.
    if not math.isfinite(settings.route_poll_seconds) or settings.route_poll_seconds <= 0:
        raise SettingsError("LOOPLINE_ROUTE_POLL_SECONDS must be a finite number above 0")
    if not math.isfinite(settings.landing_settle_seconds) or settings.landing_settle_seconds < 0:
        raise SettingsError("LOOPLINE_LANDING_SETTLE_SECONDS must be a finite number of seconds, 0 or more")
    if settings.max_request_bytes <= 0:
        raise SettingsError(f"LOOPLINE_MAX_REQUEST_BYTES must be above 0, got {settings.max_request_bytes}")
    if settings.airflow_executor not in EXECUTORS:
        raise SettingsError(f"LOOPLINE_AIRFLOW_EXECUTOR must be one of {EXECUTORS}, got {settings.airflow_executor!r}")
    if "://" not in settings.service_url:
        raise SettingsError(f"LOOPLINE_SERVICE_URL must be a URL (http://host:port), got {settings.service_url!r}")
    if settings.notify_webhook_kind not in WEBHOOK_KINDS:
        raise SettingsError(f"LOOPLINE_NOTIFY_WEBHOOK_KIND must be one of {WEBHOOK_KINDS}")
    for field in fields(settings):
        value = getattr(settings, field.name)
        if field.name.endswith("_uri") and "://" not in str(value):
            raise SettingsError(f"{field.name} must be a URI (scheme://...), got {value!r}")


def ensure_dirs(settings: Settings | None = None) -> Settings:
    """Create the state folders; called by commands and tasks, never at import."""
    settings = settings or get_settings()
    for folder in settings.state_dirs():
        folder.mkdir(parents=True, exist_ok=True)
    if "://" not in settings.mlflow_artifact_root:
        Path(settings.mlflow_artifact_root).mkdir(parents=True, exist_ok=True)
    if settings.mlflow_tracking_uri.startswith("sqlite:///"):
        Path(settings.mlflow_tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return settings


def apply_library_env(settings: Settings | None = None) -> Settings:
    """Point MLflow, BentoML and GE at Loopline's state for this process (tasks, CLI)."""
    settings = settings or get_settings()
    for key, value in settings.as_env().items():
        if not key.startswith("AIRFLOW"):
            os.environ[key] = value
    return settings
