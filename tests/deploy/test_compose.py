"""docker-compose.yaml, without Docker: valid Compose, healthy start order, one .env, no secrets.

The file is validated against the official Compose Specification JSON schema (vendored beside this
test, see README.md) after interpolation, and checked for what the schema cannot see: every
long-running service has a health check and every dependency a condition, every variable is
documented in .env.example, secrets only come from .env, Airflow runs on Celery as separate
services, Loopline code runs on the image built from the repo's Dockerfile, and the library
variables set in the file agree with what the Loopline settings derive (`loopline env`).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from jsonschema import Draft7Validator

from loopline.core.settings import get_settings
from tests.deploy.stack import (
    DEPLOY,
    ENV_EXAMPLE,
    ROOT,
    SCHEMA_FILE,
    MissingVariable,
    command_text,
    compose,
    documented_variables,
    environment,
    example_env,
    healthcheck_test,
    interpolate,
    parse_dotenv,
    services,
    variables_used,
)

# jobs that run and exit; everything else stays up
ONE_SHOT = {"minio-init", "mlflow-init", "airflow-init", "airflow-cli"}
AIRFLOW_COMPONENTS = ["api-server", "scheduler", "dag-processor", "triggerer", "celery worker"]
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|JWT|TOKEN|ACCESS_KEY(?!_ID)|PRIVATE_KEY|CREDENTIAL", re.IGNORECASE)
REQUIRED_VAR = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]*\}")
URI_PASSWORD = re.compile(r"://[^/\s:@]*:([^@\s]*)@")


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [node] if isinstance(node, str) else []


def _variables() -> dict[str, list[tuple[str | None, str | None]]]:
    found: dict[str, list[tuple[str | None, str | None]]] = {}
    for text in _strings(compose()):
        for name, uses in variables_used(text).items():
            found.setdefault(name, []).extend(uses)
    return found


def _interpolated() -> dict[str, Any]:
    return interpolate(compose(), example_env())


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (named volume or ./path) of a service's short-syntax volumes."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        mounts[target] = source
    return mounts


def _runs_loopline_code(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).startswith("loopline:")


def _airflow_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in services().items() if "AIRFLOW__CORE__EXECUTOR" in environment(svc)}


# --- the file is valid Compose ----------------------------------------------------------------


def test_schema_is_the_official_compose_specification():
    schema = json.loads(SCHEMA_FILE.read_text())
    assert (schema["id"], schema["title"]) == ("compose_spec.json", "Compose Specification")
    Draft7Validator.check_schema(schema)


@pytest.mark.parametrize("interpolated", [True, False], ids=["interpolated", "as-written"])
def test_compose_file_is_valid_against_the_compose_specification(interpolated):
    validator = Draft7Validator(json.loads(SCHEMA_FILE.read_text()))
    doc = _interpolated() if interpolated else compose()
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(doc)]
    assert not errors, "\n".join(errors)


def test_compose_refuses_to_start_without_the_secrets_from_env():
    with pytest.raises(MissingVariable):
        interpolate(compose(), {})


def test_the_stack_has_every_station():
    expected = {"postgres", "redis", "minio", "minio-init", "mlflow", "mlflow-init", "credit-risk", "card-fraud",
                "statsd-exporter",
                "prometheus", "grafana", "airflow-init", "airflow-apiserver", "airflow-scheduler",
                "airflow-dag-processor", "airflow-triggerer", "airflow-worker"}  # fmt: skip
    assert expected <= set(services())
    assert "COMPOSE_PROJECT_NAME=loopline" in ENV_EXAMPLE.read_text()


# --- start order and health -------------------------------------------------------------------


def test_every_service_stays_up_with_a_healthcheck_or_is_a_declared_one_shot_job():
    for name, svc in services().items():
        if name in ONE_SHOT:
            assert svc.get("restart") == "no", f"{name} is a one-shot job: restart must be 'no'"
            continue
        assert svc.get("restart") in ("always", "unless-stopped"), f"{name} is long-running: give it a restart policy"
        test = healthcheck_test(svc)
        assert test, f"{name} is long-running but has no healthcheck"
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck test must be CMD form"
        for key in ("interval", "timeout", "retries", "start_period"):
            assert key in svc["healthcheck"], f"{name}: healthcheck without {key}"


def test_every_dependency_waits_for_a_condition_it_can_reach():
    svcs = services()
    for name, svc in svcs.items():
        depends_on = svc.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on must be a mapping with conditions"
        for dep, spec in depends_on.items():
            assert dep in svcs, f"{name} depends on unknown service {dep}"
            assert "profiles" not in svcs[dep], f"{name} depends on {dep}, which only starts with a profile"
            condition = spec.get("condition")
            if dep in ONE_SHOT:
                assert condition == "service_completed_successfully", f"{name} -> {dep}: wait for the job to finish"
            else:
                assert condition == "service_healthy", f"{name} -> {dep}: wait for it to be healthy"
                assert healthcheck_test(svcs[dep]), f"{name} waits for {dep} to be healthy, which has no healthcheck"


def test_dependencies_have_no_cycle():
    svcs = services()
    visiting, done = set(), set()

    def visit(name: str, path: list[str]) -> None:
        assert name not in visiting, f"dependency cycle: {' -> '.join([*path, name])}"
        if name in done:
            return
        visiting.add(name)
        for dep in svcs[name].get("depends_on", {}):
            visit(dep, [*path, name])
        visiting.discard(name)
        done.add(name)

    for name in svcs:
        visit(name, [])


def test_healthcheck_programs_exist_in_the_images_they_run_in():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for name, svc in services().items():
        test = healthcheck_test(svc)
        if not test or not _runs_loopline_code(svc):
            continue
        program = test[1].split()[0] if test[0] == "CMD-SHELL" else test[1]
        if program == "curl":
            assert re.search(r"apt-get install[^\n]*\bcurl\b", dockerfile), f"{name}: the image needs curl"
        else:
            assert program in ("airflow", "celery"), f"{name}: unexpected healthcheck program {program}"


# --- one .env, no secret in the file ------------------------------------------------------------


def test_every_variable_is_documented_in_env_example():
    missing = sorted(set(_variables()) - documented_variables())
    assert not missing, f"document these in .env.example: {missing}"


def test_secrets_have_no_default_and_stop_compose_when_missing():
    for name, uses in _variables().items():
        if SECRET_NAME.search(name):
            assert all(op == ":?" for op, _ in uses), f"${{{name}}} must be written ${{{name}:?...}}: no default"


def test_env_example_commits_no_secret_value():
    for name, value in parse_dotenv(ENV_EXAMPLE.read_text()).items():
        if SECRET_NAME.search(name):
            assert value == "", f".env.example must leave {name} empty (deploy/init-env.sh fills it)"


def test_env_example_has_no_inline_comment_after_an_empty_value():
    """`NAME=   # note`: some Compose versions read the note as the value, a secret nobody chose."""
    ambiguous = re.findall(r"^([A-Z][A-Z0-9_]*)=[ \t]*#", ENV_EXAMPLE.read_text(), flags=re.MULTILINE)
    assert not ambiguous, f"put the comment on its own line: {ambiguous}"


def test_no_secret_literal_in_the_compose_file():
    problems = []
    for name, svc in services().items():
        for key, value in environment(svc).items():
            if SECRET_NAME.search(key) and not key.endswith("_FILE") and not REQUIRED_VAR.fullmatch(value):
                problems.append(f"{name}: {key} must be exactly ${{VAR:?...}} from .env, got {value!r}")
    for text in _strings(compose()):
        for match in URI_PASSWORD.finditer(text):
            if not REQUIRED_VAR.fullmatch(match.group(1)):
                problems.append(f"password literal in URI {text!r}")
        for flag in re.finditer(r"--(?:requirepass|password|secret)\S*\s+(\S+)", text):
            if "$" not in flag.group(1):
                problems.append(f"secret literal on a command line: {text!r}")
    assert not problems, "\n".join(problems)


def test_compose_never_interpolates_what_loopline_env_exports():
    """A shell prepared with `eval "$(loopline env)"` (embedded mode) must not leak into the stack."""
    exported = set(get_settings().as_env()) | {"AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND"}
    leaked = sorted(exported & set(_variables()))
    assert not leaked, f"these come from `loopline env` in a developer's shell: {leaked}"


def test_published_ports_bind_to_the_configured_address_and_do_not_clash():
    host_ports = []
    for name, svc in _interpolated()["services"].items():
        for port in svc.get("ports", []):
            address, host, _container = str(port).rsplit(":", 2)
            assert address == "127.0.0.1", f"{name}: publish on ${{LOOPLINE_BIND_ADDRESS:-127.0.0.1}}"
            host_ports.append(host)
    assert len(host_ports) == len(set(host_ports)), f"host port published twice: {sorted(host_ports)}"


# --- Airflow on Celery ------------------------------------------------------------------------------


def test_airflow_runs_each_component_as_its_own_service():
    commands = [command_text(svc).removeprefix("airflow ") for svc in _airflow_services().values()]
    for component in AIRFLOW_COMPONENTS:
        assert commands.count(component) == 1, f"one service must run `airflow {component}`"
    assert "x-airflow-common" in compose(), "Airflow services share the x-airflow-common anchor"


def test_airflow_uses_the_celery_executor_with_redis_and_postgres():
    interpolated = _interpolated()["services"]
    apiserver = next(n for n, s in services().items() if command_text(s) == "airflow api-server")
    shared = None
    for name in _airflow_services():
        env = environment(interpolated[name])
        assert env["LOOPLINE_AIRFLOW_EXECUTOR"] == env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        broker, backend = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"]), env["AIRFLOW__CELERY__RESULT_BACKEND"]
        assert (broker.scheme, broker.hostname) == ("redis", "redis"), name
        assert backend.startswith("db+postgresql+psycopg2://") and "@postgres:5432/" in backend, name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://{apiserver}:8080/execution/", name
        assert env["AIRFLOW__METRICS__STATSD_ON"] == "True", name
        # every component must sign and read the same tokens and encrypted values
        keys = {k: env[k] for k in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET")}
        assert all(keys.values()), name
        shared = shared or keys
        assert keys == shared, f"{name} has other Airflow secrets than the rest"


def test_airflow_init_migrates_the_database_and_initialises_loopline():
    init = services()["airflow-init"]
    script = command_text(init).split()[-1]
    text = (DEPLOY / Path(script).relative_to("/opt/loopline/deploy")).read_text()
    assert "airflow db migrate" in text and "loopline init" in text
    for name, svc in services().items():
        if name in _airflow_services() and name not in ONE_SHOT:
            assert svc["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully", name


def test_scripts_the_services_run_are_in_the_repo_and_parse():
    for name, svc in services().items():
        for path in re.findall(r"/opt/loopline/deploy/(\S+)", command_text(svc)):
            assert (DEPLOY / path).is_file(), f"{name} runs {path}, which is not under deploy/"
    for script in sorted(DEPLOY.rglob("*.sh")):
        shell = "sh" if script.read_text().startswith("#!/bin/sh") else "bash"
        done = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, f"{script}: {done.stderr}"


# --- images and settings ------------------------------------------------------------------------------


def test_loopline_code_runs_on_the_image_built_from_the_repo_dockerfile():
    svcs = services()
    loopline = {name for name, svc in svcs.items() if _runs_loopline_code(svc)}
    assert set(_airflow_services()) | {"mlflow", "credit-risk", "card-fraud"} <= loopline
    images = set()
    for name in loopline:
        build = svcs[name]["build"]
        assert (build["context"], build.get("dockerfile", "Dockerfile")) == (".", "Dockerfile"), name
        images.add(svcs[name]["image"])
    assert len(images) == 1, f"one image for all Loopline code, got {images}"
    assert (ROOT / "Dockerfile").is_file()
    for name, svc in svcs.items():
        if name not in loopline:
            image = svc["image"]
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag ({image})"


@pytest.fixture
def stack_settings(monkeypatch):
    """The Loopline settings a container gets from its compose environment."""

    def load(service: str) -> tuple[dict[str, str], dict[str, str]]:
        env = environment(_interpolated()["services"][service])
        for key in [k for k in os.environ if k.startswith("LOOPLINE_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            if key.startswith("LOOPLINE_"):
                monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        return env, get_settings().as_env()

    yield load
    get_settings.cache_clear()


@pytest.mark.parametrize(
    "service", ["airflow-scheduler", "airflow-worker", "airflow-init", "mlflow", "credit-risk", "card-fraud"]
)
def test_library_variables_agree_with_what_loopline_env_derives(service, stack_settings):
    if service == "mlflow":  # the tracking server runs no Loopline code: it only needs its own variables
        env = environment(_interpolated()["services"]["mlflow"])
        assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://mlflow:")
        return
    env, derived = stack_settings(service)
    if service in ("credit-risk", "card-fraud"):  # the services set only the non-Airflow ones (apply_library_env)
        derived = {k: v for k, v in derived.items() if not k.startswith("AIRFLOW")}
    mismatched = {key: (env.get(key), value) for key, value in derived.items() if env.get(key) != value}
    assert not mismatched, f"{service}: compose value vs `loopline env`: {mismatched}"


def test_settings_point_at_the_stack_services():
    env = environment(_interpolated()["services"]["airflow-worker"])
    svcs = services()
    for key in ("LOOPLINE_STATE_DB_URI", "LOOPLINE_AIRFLOW_DB_URI", "LOOPLINE_MLFLOW_TRACKING_URI",
                "LOOPLINE_SERVICE_URL", "LOOPLINE_CELERY_BROKER_URL", "AWS_ENDPOINT_URL"):  # fmt: skip
        host = urlsplit(env[key]).hostname
        assert host in svcs, f"{key} points at {host}, not a service of the stack"
    assert env["LOOPLINE_DVC_REMOTE"].startswith("s3://")
    assert env["LOOPLINE_STATE_DB_URI"].startswith("postgresql+psycopg2://")
    assert env["LOOPLINE_AIRFLOW_EXECUTOR"] == "CeleryExecutor"


def test_mlflow_artifacts_are_proxied_by_the_tracking_server():
    """Clients reach artifacts over HTTP through the server (mlflow-artifacts://), only it talks to MinIO."""
    env = environment(_interpolated()["services"]["airflow-worker"])
    mlflow = services()["mlflow"]
    assert "--serve-artifacts" in mlflow["command"]
    assert environment(mlflow)["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    root, tracking = urlsplit(env["LOOPLINE_MLFLOW_ARTIFACT_ROOT"]), urlsplit(env["LOOPLINE_MLFLOW_TRACKING_URI"])
    # loopline.core.tracking.experiment_id takes a root with "://" as a URI (else a local folder); MLflow
    # resolves mlflow-artifacts://host:port/path to http://host:port/api/2.0/mlflow-artifacts/artifacts/path
    assert "://" in env["LOOPLINE_MLFLOW_ARTIFACT_ROOT"]
    assert (root.scheme, root.netloc) == ("mlflow-artifacts", tracking.netloc)
    assert tracking.scheme == "http" and tracking.port == 5000 and "5000" in mlflow["command"]
    # Loopline leaves proxied experiments at the server's default location (tracking.experiment_id),
    # which must be the same root
    server_root = mlflow["command"][mlflow["command"].index("--default-artifact-root") + 1]
    assert server_root == env["LOOPLINE_MLFLOW_ARTIFACT_ROOT"]


# --- volumes ---------------------------------------------------------------------------------------------


def test_volumes_are_declared_and_bind_mounts_exist():
    doc = compose()
    used = set()
    for name, svc in doc["services"].items():
        for source in _mounts(svc).values():
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repo"
            else:
                assert source in doc["volumes"], f"{name} mounts undeclared volume {source}"
                used.add(source)
    assert used == set(doc["volumes"]), f"declared but unused volumes: {set(doc['volumes']) - used}"


def test_service_and_workers_share_the_prediction_log_and_model_store():
    svcs = services()
    worker, service = svcs["airflow-worker"], svcs["credit-risk"]
    for setting in ("LOOPLINE_PREDICTION_LOG_DIR", "LOOPLINE_BENTOML_HOME"):
        path = environment(service)[setting]
        assert environment(worker)[setting] == path, setting
        assert _mounts(worker)[path] == _mounts(service)[path] in compose()["volumes"], setting
    homes = {_mounts(svcs[name])[environment(svcs[name])["LOOPLINE_HOME"]] for name in _airflow_services()}
    assert len(homes) == 1, "every Airflow service must see the same LOOPLINE_HOME volume"


def test_postgres_init_creates_every_database_and_role_the_stack_connects_with():
    script = (DEPLOY / "postgres" / "init-databases.sh").read_text()
    postgres = services()["postgres"]
    assert (
        _mounts(postgres)["/docker-entrypoint-initdb.d/10-init-databases.sh"] == "./deploy/postgres/init-databases.sh"
    )
    connections = set()
    for text in _strings(compose()):
        for user, password, db in re.findall(
            r"postgresql\+psycopg2://(\w+):(\$\{[^}]+\})@postgres:\$\{POSTGRES_PORT:-5432\}/(\w+)", text
        ):
            connections.add((user, variables_used(password).popitem()[0], db))
    assert {db for _, _, db in connections} == {"airflow", "mlflow", "mlflow_auth", "loopline", "feast"}
    for user, variable, db in connections:
        assert re.search(rf"-v {user}_password=\"\${variable}\"", script), f"{user}'s password must be ${variable}"
        assert f"CREATE ROLE {user} LOGIN PASSWORD :'{user}_password';" in script, user
        assert f"CREATE DATABASE {db} OWNER {user};" in script, db
        assert re.search(rf"REVOKE ALL ON DATABASE [^;]*\b{db}\b[^;]*FROM PUBLIC;", script), db
        assert variable in environment(postgres), f"the postgres service must pass {variable} to the init script"


def test_minio_init_creates_the_buckets_the_stack_uses():
    script = (DEPLOY / "minio" / "create-buckets.sh").read_text()
    policy = json.loads((DEPLOY / "minio" / "loopline-buckets-policy.json").read_text())
    resources = {r for statement in policy["Statement"] for r in statement["Resource"]}
    buckets = {
        urlsplit(environment(services()["airflow-worker"])["LOOPLINE_DVC_REMOTE"]).hostname,
        urlsplit(environment(services()["mlflow"])["MLFLOW_ARTIFACTS_DESTINATION"]).hostname,
    }
    for bucket in buckets:
        assert f"mc mb --ignore-existing local/{bucket}" in script, bucket
        assert {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"} <= resources, bucket


# --- deploy/init-env.sh ------------------------------------------------------------------------------


def test_init_env_writes_a_complete_env_with_fresh_secrets(tmp_path):
    dest = tmp_path / ".env"
    run = subprocess.run(["bash", str(DEPLOY / "init-env.sh"), str(ENV_EXAMPLE), str(dest)], capture_output=True)
    assert run.returncode == 0, run.stderr
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    env = parse_dotenv(dest.read_text())
    example = parse_dotenv(ENV_EXAMPLE.read_text())
    for name, value in example.items():
        if name == "LOOPLINE_API_KEYS":  # the hash of a new key for client "default"; the key is printed once
            from loopline.core.api_keys import parse_keys
            from loopline.serving.auth import ApiKeys

            key = re.search(r"client 'default' .*: ([0-9a-f]{32,})$", run.stdout.decode(), re.MULTILINE).group(1)
            assert ApiKeys(parse_keys(env[name])).client_of(key) == "default" and key not in dest.read_text()
            continue
        assert env[name] == value if value else re.fullmatch(r"[A-Za-z0-9_=-]{32,}", env[name]), name
    import base64

    assert len(base64.urlsafe_b64decode(env["AIRFLOW_FERNET_KEY"])) == 32
    doc = interpolate(compose(), env)  # nothing missing
    assert doc["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == env["POSTGRES_PASSWORD"]
    again = subprocess.run(["bash", str(DEPLOY / "init-env.sh"), str(ENV_EXAMPLE), str(dest)], capture_output=True)
    assert again.returncode != 0 and parse_dotenv(dest.read_text()) == env, "an existing .env must be kept"


# --- MLflow's own authentication -------------------------------------------------------------------


def test_mlflow_server_runs_with_basic_auth_and_read_as_the_default_permission():
    mlflow = services()["mlflow"]
    script = command_text(mlflow).split()[1]
    assert script == "/opt/loopline/deploy/mlflow/serve.sh"
    text = (DEPLOY / "mlflow" / "serve.sh").read_text()
    assert 'exec mlflow server --app-name basic-auth "$@"' in text
    assert "python -m loopline.ops.mlflow_auth config" in text and "MLFLOW_AUTH_CONFIG_PATH" in text
    env = environment(_interpolated()["services"]["mlflow"])
    assert env["MLFLOW_AUTH_DEFAULT_PERMISSION"] == "READ"
    auth_db = urlsplit(env["MLFLOW_AUTH_DATABASE_URI"])
    assert (auth_db.hostname, auth_db.path) == ("postgres", "/mlflow_auth")
    for key in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[key], key
    # the health check is the one route basic auth leaves open
    assert healthcheck_test(mlflow)[-1].endswith("/health")


def test_every_mlflow_client_logs_in_as_the_service_account_the_init_job_creates():
    interpolated = _interpolated()["services"]
    init = environment(interpolated["mlflow-init"])
    assert command_text(services()["mlflow-init"]) == "python -m loopline.ops.mlflow_auth service-account"
    assert services()["mlflow-init"]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    account = (init["MLFLOW_TRACKING_USERNAME"], init["MLFLOW_TRACKING_PASSWORD"])
    assert account[0] != init["MLFLOW_AUTH_ADMIN_USERNAME"], "the service account is not the admin"
    assert init["MLFLOW_AUTH_ADMIN_PASSWORD"] == environment(interpolated["mlflow"])["MLFLOW_AUTH_ADMIN_PASSWORD"]
    clients = [name for name, svc in services().items() if "LOOPLINE_MLFLOW_TRACKING_URI" in environment(svc)]
    assert set(_airflow_services()) | {"credit-risk", "card-fraud"} <= set(clients)
    for name in clients:
        env = environment(interpolated[name])
        assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == account, name
        if name not in ONE_SHOT:
            depends_on = services()[name]["depends_on"]
            assert depends_on["mlflow-init"]["condition"] == "service_completed_successfully", name
    assert "MLFLOW_TRACKING_PASSWORD" not in environment(services()["mlflow"]), "the server needs no client login"


def test_mlflow_auth_config_is_what_the_server_reads(tmp_path):
    import configparser

    from mlflow.server.auth.config import read_auth_config

    from loopline.ops.mlflow_auth import write_auth_config

    path = write_auth_config(
        tmp_path / "auth" / "basic_auth.ini", "postgresql+psycopg2://mlflow:p%40ss@postgres:5432/mlflow_auth"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    parsed = configparser.ConfigParser()
    parsed.read(path)
    assert "admin_password" not in parsed["mlflow"], "the admin's password stays in the environment"
    os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(path)
    try:
        config = read_auth_config()
    finally:
        del os.environ["MLFLOW_AUTH_CONFIG_PATH"]
    assert config.default_permission == "READ"
    assert config.database_uri == "postgresql+psycopg2://mlflow:p%40ss@postgres:5432/mlflow_auth"
