"""Every Loopline knob, read from the environment, with defaults for the embedded mode.

This is the one config source. The embedded default keeps all state in one
git-ignored folder (``LOOPLINE_HOME``, default ``<project>/.loopline``); the
docker compose stack changes only these variables, never code.

Importing this module has no side effects: nothing is created, no library is
configured. ``get_settings()`` reads the environment; ``ensure_dirs()`` creates
folders when a command or task actually needs them; the pseudonym secret is read
(or, once, generated) only when something first asks for it.
"""

from __future__ import annotations

import math
import os
import secrets
from dataclasses import dataclass, field, fields
from functools import cached_property, lru_cache
from pathlib import Path

from loopline.core.alerts import WEBHOOK_KINDS
from loopline.core.errors import LooplineError

PROJECT_ROOT = Path(__file__).resolve().parents[3]
EXECUTORS = ("LocalExecutor", "CeleryExecutor")
PSEUDONYM_SECRET_FILE = "pseudonym-secret"  # in LOOPLINE_HOME, mode 0600
# The scheduler's own handling of tasks whose process is gone (Airflow 3 names): a running task
# instance without a heartbeat for this long is failed (and retried if it has retries left), checked
# this often; task instances of a scheduler that died are reset this often. Airflow's defaults
# (300 s, 10 s, 300 s) leave a killed task "running" for five minutes or more.
SCHEDULER_ENV = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "120",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "10",
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "60",
}
# A task run in a model's runtime image (loopline.core.runtime) gets these settings as environment, plus
# these variables of this process: the stack's credentials for MLflow and the S3 stores. Names with one
# of the words below are secrets: handed over apart (never templated, never shown in the UI).
CONTAINER_ENV_PREFIXES = ("LOOPLINE_", "MLFLOW_", "AWS_")
_SECRET_WORDS = ("SECRET", "PASSWORD", "TOKEN", "API_KEYS", "ACCESS_KEY")
# The Docker-API socket `make engine` serves (podman); LOOPLINE_DOCKER_URL or DOCKER_HOST override it.
PODMAN_SOCKET_URL = "unix:///run/loopline-podman/podman.sock"


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
    pseudonym_secret_env: str = field(repr=False)  # LOOPLINE_PSEUDONYM_SECRET ("" if unset): use .pseudonym_secret
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
    feature_repo: Path  # the feature definitions (feature_repo/*.yaml), read by loopline.features.definitions
    feast_root: Path  # the feature store's folder: registry.db, offline/<view>/part-*.parquet, online.db
    feast_online_redis: str  # "" (embedded: SQLite at <feast_root>/online.db) or the online store's redis:// URL
    feast_registry: str  # "" (embedded: <feast_root>/registry.db) or the registry's SQL URL (the stack: Postgres)
    # The prediction API's keys, (client, SHA-256 hex of the key) pairs (loopline.core.api_keys); none: open.
    api_keys: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    require_api_keys: bool = False  # refuse to start the service without keys (the full stack)
    docker_url: str = PODMAN_SOCKET_URL  # the container engine a model's runtime image runs on
    # The interpreter of .venv-drift (alibi-detect 0.13 pins numpy<2; the stack needs numpy>=2): the drift
    # check's detector runs there (loopline.monitoring.drift_worker). The image's is /opt/venv-drift/bin/python.
    drift_python: Path = PROJECT_ROOT / ".venv-drift" / "bin" / "python"

    def service_url_for(self, model: str) -> str:
        """Where ``model``'s prediction service answers (its ``/metrics`` are what the rollout gates read).

        Every model has a service of its own: ``LOOPLINE_SERVICE_URL__<MODEL>`` (the model name in
        upper case, e.g. ``LOOPLINE_SERVICE_URL__DELIVERY_TIME``) when set, else ``LOOPLINE_SERVICE_URL``.
        """
        url = os.environ.get(f"LOOPLINE_SERVICE_URL__{model.upper()}", "").strip().rstrip("/")
        if url and "://" not in url:
            raise SettingsError(f"LOOPLINE_SERVICE_URL__{model.upper()} must be a URL (http://host:port), got {url!r}")
        return url or self.service_url

    @cached_property
    def pseudonym_secret(self) -> str:
        """The key of entity-id pseudonyms (prediction log, outcomes, validation reports).

        ``LOOPLINE_PSEUDONYM_SECRET`` when set (the stack requires it: every container must agree,
        and they share no state folder). Otherwise the random secret in
        ``$LOOPLINE_HOME/pseudonym-secret`` that ``loopline init`` writes; when that file does not
        exist yet, it is generated here, once. Never a constant: a public default would let anyone
        recompute the pseudonym of a known id, i.e. the logs would not be pseudonymous at all.
        Generating on first use rather than refusing to run is the safer of the two: every embedded
        process (tasks, CLI, ``bentoml serve``) reads the same state folder, and the file is
        published atomically (written in full under a temporary name, then hard-linked, which like
        ``O_EXCL`` fails when the name exists), so concurrent first users all end up with the one
        secret that won; a process that refused would only push people to set a weak one by hand.
        """
        if self.pseudonym_secret_env:
            return self.pseudonym_secret_env
        return read_or_create_secret(self.home / PSEUDONYM_SECRET_FILE)

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
            # One store for runs and the registry: MLflow reads this variable first (mlflow.set_registry_uri
            # also writes it into the environment, so a child process could otherwise inherit a foreign one).
            "MLFLOW_REGISTRY_URI": self.mlflow_tracking_uri,
            "BENTOML_HOME": str(self.bentoml_home),
            "BENTOML_DO_NOT_TRACK": "True",
            "GX_ANALYTICS_ENABLED": "False",
            "GIT_PYTHON_REFRESH": "quiet",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "AIRFLOW__CORE__EXECUTOR": self.airflow_executor,
            "LOOPLINE_DRIFT_PYTHON": str(self.drift_python),
            **SCHEDULER_ENV,
            **self._celery_env(),
        }

    def container_env(self, environ: dict[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
        """(plain, secret) environment that gives a process in a runtime image exactly these settings.

        The image's own defaults differ (its project root is /opt/loopline), so the folders every
        default derives from are passed resolved, beside this process's LOOPLINE_*, MLFLOW_* and
        AWS_* variables and the library variables of ``loopline env`` (not Airflow's: the container
        runs a Loopline step, not Airflow). Paths stay valid because ``local_paths`` are mounted at
        the same place.
        """
        environ = dict(os.environ if environ is None else environ)
        env = {k: v for k, v in environ.items() if k.startswith(CONTAINER_ENV_PREFIXES)}
        env.update({k: v for k, v in self.as_env().items() if not k.startswith("AIRFLOW")})
        env.update(
            LOOPLINE_PROJECT_ROOT=str(self.project_root),
            LOOPLINE_HOME=str(self.home),
            LOOPLINE_MODELS_DIR=str(self.models_dir),
            LOOPLINE_EXPECTATIONS_DIR=str(self.expectations_dir),
        )
        env.pop("LOOPLINE_DRIFT_PYTHON", None)  # a host path; a runtime image runs training steps, not drift checks
        secret = {k: v for k, v in env.items() if any(word in k for word in _SECRET_WORDS)}
        return {k: v for k, v in env.items() if k not in secret}, secret

    def local_paths(self) -> list[tuple[Path, bool]]:
        """The host folders these settings read or write, (path, writable), outermost only.

        What a runtime image mounts at the same paths: the state folder and every store given as a
        local path or a SQLite file outside it (writable), the project, models and expectations
        (read only). Stores behind a URL (Postgres, S3, an MLflow server) need no mount.
        """
        writable: list[Path] = []
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in (
                "project_root",
                "models_dir",
                "expectations_dir",
                "drift_python",
                "feature_repo",
            ):
                continue
            if isinstance(value, Path):
                writable.append(value)
            elif isinstance(value, str) and value.startswith("sqlite:///"):
                writable.append(Path(value.removeprefix("sqlite:///")).parent)
            elif item.name in ("dvc_remote_url", "mlflow_artifact_root") and "://" not in value:
                writable.append(Path(value))
        read_only = [self.project_root, self.models_dir, self.expectations_dir, self.feature_repo]
        chosen: list[tuple[Path, bool]] = []
        candidates = sorted(((p.resolve(), True) for p in writable), key=lambda pair: len(pair[0].parts))
        for path, rw in [*candidates, *((p.resolve(), False) for p in read_only)]:
            if any(path.is_relative_to(done) and done_rw >= rw for done, done_rw in chosen):
                continue  # inside a folder already mounted (at least as writable)
            chosen.append((path, rw))
        return sorted(chosen, key=lambda pair: (len(pair[0].parts), str(pair[0])))

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


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _api_keys(name: str) -> tuple[tuple[str, str], ...]:
    from loopline.core.api_keys import ApiKeyError, parse_keys

    try:
        return parse_keys(os.environ.get(name, ""))
    except ApiKeyError as err:
        raise SettingsError(str(err)) from None


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
        # Keys the pseudonyms of entity ids; unset: a random secret in the state folder (see pseudonym_secret).
        pseudonym_secret_env=_text("LOOPLINE_PSEUDONYM_SECRET", ""),
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
        feature_repo=_path("LOOPLINE_FEATURE_REPO", root / "feature_repo"),
        feast_root=_path("LOOPLINE_FEAST_ROOT", home / "feast"),
        feast_online_redis=_text("LOOPLINE_FEAST_ONLINE_REDIS", ""),
        feast_registry=_text("LOOPLINE_FEAST_REGISTRY", ""),
        api_keys=_api_keys("LOOPLINE_API_KEYS"),
        require_api_keys=_flag("LOOPLINE_REQUIRE_API_KEYS", False),
        docker_url=_text("LOOPLINE_DOCKER_URL", _text("DOCKER_HOST", PODMAN_SOCKET_URL)),
        drift_python=_path("LOOPLINE_DRIFT_PYTHON", root / ".venv-drift" / "bin" / "python"),
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
    if settings.feast_online_redis and not settings.feast_online_redis.startswith(("redis://", "rediss://")):
        raise SettingsError(
            f"LOOPLINE_FEAST_ONLINE_REDIS must be a redis:// URL, got {settings.feast_online_redis.split('@')[-1]!r}"
        )
    if settings.feast_registry and "://" not in settings.feast_registry:
        raise SettingsError(
            f"LOOPLINE_FEAST_REGISTRY must be a SQL URL (postgresql+psycopg://...), got {settings.feast_registry!r};"
            " unset it for the embedded file registry"
        )
    for item in fields(settings):
        value = getattr(settings, item.name)
        if item.name.endswith("_uri") and "://" not in str(value):
            raise SettingsError(f"{item.name} must be a URI (scheme://...), got {value!r}")


def read_or_create_secret(path: Path) -> str:
    """The secret in ``path``; a new random one (mode 0600) if there is none. Safe under concurrency."""
    try:
        secret = path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, path)  # atomic, and fails if another process published first: theirs wins
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
        secret = path.read_text().strip()
    if len(secret) < 32:
        raise SettingsError(f"{path} holds no usable pseudonym secret (32+ characters); delete it to generate one")
    return secret


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
