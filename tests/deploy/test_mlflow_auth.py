"""MLflow's authentication as the full stack runs it, against a real ``mlflow server --app-name basic-auth``.

The server runs on 127.0.0.1 with a throw-away SQLite backend and auth store, configured the way
deploy/mlflow/serve.sh configures the stack's (the same ``loopline.ops.mlflow_auth config``); the
service account is made by the same code as the compose job mlflow-init. Then: nobody writes to the
registry without credentials, a logged-in user without a grant only reads, and Loopline's own tracking
code, logged in as the service account through MLFLOW_TRACKING_USERNAME/_PASSWORD, logs a model,
registers a version and sets ``champion``.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from loopline.ops.mlflow_auth import ensure_service_account, main, wait_until_up
from loopline.serving.bento_server import free_port

pytestmark = pytest.mark.slow  # the server's start (migrations of two stores) takes 20-60 s on a shared machine

ADMIN = ("admin", secrets.token_hex(12))
SERVICE = ("loopline", secrets.token_hex(12))
MODEL = "credit_risk_auth_check"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-auth")
    config = root / "basic_auth.ini"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{root / 'auth.db'}"}
    written = subprocess.run(
        [sys.executable, "-m", "loopline.ops.mlflow_auth", "config", str(config)], env=env, capture_output=True
    )
    assert written.returncode == 0, written.stderr
    port = free_port()
    env |= {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
    }
    log = root / "server.log"
    command = [str(Path(sys.executable).with_name("mlflow")), "server", "--app-name", "basic-auth",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
               "--default-artifact-root", f"mlflow-artifacts://127.0.0.1:{port}/"]  # as the stack does  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while process.poll() is None and time.monotonic() < deadline:
            try:
                wait_until_up(url, timeout=2)
                break
            except TimeoutError:
                pass
        assert process.poll() is None, f"mlflow server exited:\n{log.read_text()[-3000:]}"
        wait_until_up(url, timeout=1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def service_account(server):
    """As the compose job does it: `python -m loopline.ops.mlflow_auth service-account` with its variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"MLFLOW_TRACKING_URI": server, "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1], "MLFLOW_TRACKING_USERNAME": SERVICE[0],
            "MLFLOW_TRACKING_PASSWORD": SERVICE[1]}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "loopline.ops.mlflow_auth", "service-account"], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"MLflow service account {SERVICE[0]}: created" in done.stdout
    return SERVICE


def _api(server: str, method: str, path: str, auth=None, **body):
    kwargs = {"params": body} if method == "GET" else {"json": body}
    return requests.request(method, f"{server}/api/2.0/mlflow/{path}", auth=auth, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def registered(server, service_account, tmp_path_factory):
    """Loopline's tracking code as the service account: experiment, run with a model, version, champion."""
    import lightgbm as lgb
    import mlflow
    import mlflow.lightgbm
    import numpy as np

    from loopline.core import tracking
    from loopline.core.settings import get_settings

    settings = dataclasses.replace(
        get_settings(), mlflow_tracking_uri=server, mlflow_artifact_root=f"mlflow-artifacts://{server.split('//')[1]}/"
    )
    saved = {k: os.environ.get(k) for k in [*settings.as_env(), "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"]}
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = service_account
    try:
        client = tracking.client_for(settings)
        exp = tracking.experiment_id(client, MODEL, settings)
        run = client.create_run(exp, tags={"mlflow.runName": "auth-check"})
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(200, 3)), rng.integers(0, 2, 200)
        booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 4}, lgb.Dataset(x, y), 3)
        with mlflow.start_run(run_id=run.info.run_id):
            info = mlflow.lightgbm.log_model(booster, name=tracking.MODEL_ARTIFACT)
            mlflow.set_tags({"loopline.model_uri": info.model_uri, "loopline.model_id": info.model_id or ""})
        version, created = tracking.register(client, MODEL, run.info.run_id)
        client.set_registered_model_alias(MODEL, tracking.CHAMPION_ALIAS, version)
        loaded = mlflow.lightgbm.load_model(f"models:/{MODEL}@{tracking.CHAMPION_ALIAS}")  # what the service does
        yield {"version": version, "created": created, "client": client, "booster": booster, "loaded": loaded, "x": x}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_the_service_account_registers_a_version_and_sets_champion_through_loopline_tracking(registered):
    from loopline.core import tracking

    assert registered["created"] and registered["version"] == "1"
    assert tracking.alias_version(registered["client"], MODEL, tracking.CHAMPION_ALIAS) == "1"
    assert (registered["loaded"].predict(registered["x"]) == registered["booster"].predict(registered["x"])).all()


def test_the_registry_refuses_writes_without_credentials(server, registered):
    for method, path, body in [
        ("POST", "registered-models/create", {"name": "intruder"}),
        ("POST", "registered-models/alias", {"name": MODEL, "alias": "champion", "version": "1"}),
        ("POST", "model-versions/create", {"name": MODEL, "source": "s3://elsewhere/model"}),
        ("DELETE", "registered-models/alias", {"name": MODEL, "alias": "champion"}),
        ("POST", "experiments/create", {"name": "intruder"}),
    ]:
        answer = _api(server, method, path, **body)
        assert answer.status_code == 401, (path, answer.status_code, answer.text[:200])
        assert answer.headers.get("WWW-Authenticate", "").startswith("Basic")
    wrong = _api(server, "POST", "registered-models/alias", auth=(SERVICE[0], "not-the-password"), name=MODEL,
                 alias="champion", version="1")  # fmt: skip
    assert wrong.status_code == 401


def test_reads_need_a_login_and_a_user_without_grants_only_reads(server, registered):
    # basic auth has no anonymous reads: every route but /health asks for a login
    assert _api(server, "GET", "registered-models/get", name=MODEL).status_code == 401
    assert requests.get(f"{server}/health", timeout=10).status_code == 200
    viewer = ("viewer", secrets.token_hex(12))
    made = requests.post(f"{server}/api/2.0/mlflow/users/create", auth=ADMIN, timeout=30,
                         json={"username": viewer[0], "password": viewer[1]})  # fmt: skip
    assert made.status_code == 200, made.text
    got = _api(server, "GET", "registered-models/get", auth=viewer, name=MODEL)
    assert got.status_code == 200 and got.json()["registered_model"]["name"] == MODEL  # default_permission READ
    for method, path, body in [
        ("POST", "registered-models/alias", {"name": MODEL, "alias": "champion", "version": "1"}),
        ("POST", "model-versions/create", {"name": MODEL, "source": "s3://elsewhere/model"}),
        ("PATCH", "registered-models/update", {"name": MODEL, "description": "changed"}),
        ("DELETE", "registered-models/delete", {"name": MODEL}),
    ]:
        answer = _api(server, method, path, auth=viewer, **body)
        assert answer.status_code == 403, (path, answer.status_code, answer.text[:200])
    # nor can the service account administer users
    refused = requests.post(f"{server}/api/2.0/mlflow/users/create", auth=SERVICE, timeout=30,
                            json={"username": "another", "password": secrets.token_hex(12)})  # fmt: skip
    assert refused.status_code == 403
    from loopline.core import tracking

    assert tracking.alias_version(registered["client"], MODEL, tracking.CHAMPION_ALIAS) == "1"


def test_the_service_account_job_is_idempotent_and_takes_the_password_from_env(server, service_account, monkeypatch):
    again = ensure_service_account(server, *ADMIN, *service_account)
    assert (again.created, again.password_changed) == (False, False)
    rotated = ensure_service_account(server, *ADMIN, service_account[0], "a-new-password-1")
    assert rotated.password_changed
    assert _api(server, "GET", "registered-models/search", auth=(service_account[0], "a-new-password-1")).ok
    assert ensure_service_account(server, *ADMIN, *service_account).password_changed  # back, for the other tests
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        monkeypatch.delenv(key)
    with pytest.raises(SystemExit, match="MLFLOW_TRACKING_URI"):
        main(["service-account"])
