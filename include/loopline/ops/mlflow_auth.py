"""MLflow's own authentication for the full stack: the server's config and the platform's service account.

The compose stack runs ``mlflow server --app-name basic-auth`` (deploy/mlflow/serve.sh). Every request
but ``/health`` needs a login; a logged-in user without a grant of its own gets ``default_permission``
(READ), so only the admin and the platform's service account can write. The service account is what
Airflow and the BentoML service log in as (``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``,
which the MLflow client reads); :func:`ensure_service_account` creates it, idempotently, through the
auth REST API as the admin (the one-shot compose service ``mlflow-init``, and the tests).

The embedded default (``make demo``, ``make up``) keeps MLflow open on 127.0.0.1: nothing here runs there.

    python -m loopline.ops.mlflow_auth config PATH      # write the auth config from MLFLOW_AUTH_* variables
    python -m loopline.ops.mlflow_auth service-account  # create/update the service account (MLFLOW_* variables)
"""

from __future__ import annotations

import argparse
import configparser
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PERMISSION = "READ"
# What the service account needs: it creates the experiments and registered models (the creator gets
# MANAGE on each anyway) and must also write to the ones that existed before auth was switched on.
SERVICE_ACCOUNT_GRANTS = (("experiment", "*", "MANAGE"), ("registered_model", "*", "MANAGE"))


def write_auth_config(path: Path, database_uri: str, default_permission: str = DEFAULT_PERMISSION) -> Path:
    """The basic-auth app's config file (MLFLOW_AUTH_CONFIG_PATH), mode 0600: it holds the auth DB's URI.

    The admin's name and password are not written: the server reads them from MLFLOW_AUTH_ADMIN_USERNAME
    and MLFLOW_AUTH_ADMIN_PASSWORD, and only to create the admin on an empty user store.
    """
    config = configparser.ConfigParser(interpolation=None)
    config["mlflow"] = {
        "default_permission": default_permission,
        # MLflow reads the file with configparser's %-interpolation: a URL-encoded password's % doubles
        "database_uri": database_uri.replace("%", "%%"),
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "grant_default_workspace_access": "false",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        config.write(out)
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class ServiceAccount:
    username: str
    created: bool  # False: it existed (its password is set to the given one if it differed)
    password_changed: bool


class AuthError(RuntimeError):
    """The MLflow auth API refused or failed a call."""


def _session(admin_username: str, admin_password: str):
    import requests

    session = requests.Session()
    session.auth = (admin_username, admin_password)
    return session


def _check(response, what: str):
    if response.status_code >= 400:
        raise AuthError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
    return response.json() if response.content else {}


def wait_until_up(tracking_uri: str, timeout: float = 120) -> None:
    """Until the server answers /health (the one route without a login)."""
    import requests

    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=3).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"MLflow at {tracking_uri} not up within {timeout:.0f} s")
        time.sleep(1)


def ensure_service_account(
    tracking_uri: str, admin_username: str, admin_password: str, username: str, password: str
) -> ServiceAccount:
    """Create the platform's service account, or bring an existing one to this password; never an admin.

    Grants it MANAGE on all experiments and registered models (SERVICE_ACCOUNT_GRANTS). Safe to run
    on every start: a second run with the same password changes nothing.
    """
    from mlflow.server.auth.routes import (
        CREATE_USER,
        GET_USER,
        GET_USER_PERMISSION,
        GRANT_USER_PERMISSION,
        REVOKE_USER_PERMISSION,
        UPDATE_USER_ADMIN,
        UPDATE_USER_PASSWORD,
    )

    if username == admin_username:
        raise AuthError("the service account must not be the MLflow admin")
    base = tracking_uri.rstrip("/")
    admin = _session(admin_username, admin_password)
    found = admin.get(base + GET_USER, params={"username": username}, timeout=30)
    created = password_changed = False
    if found.status_code == 404:
        body = {"username": username, "password": password}
        _check(admin.post(base + CREATE_USER, json=body, timeout=30), "create user")
        created = True
    else:
        user = _check(found, f"get user {username}")["user"]
        if user.get("is_admin"):
            _check(admin.patch(base + UPDATE_USER_ADMIN, json={"username": username, "is_admin": False}, timeout=30),
                   "drop admin")  # fmt: skip
        import requests

        probe = requests.get(base + GET_USER, params={"username": username}, auth=(username, password), timeout=30)
        if probe.status_code == 401:  # another password than .env's: .env wins
            _check(admin.patch(base + UPDATE_USER_PASSWORD, json={"username": username, "password": password},
                               timeout=30), "update password")  # fmt: skip
            password_changed = True
    for resource_type, resource_id, permission in SERVICE_ACCOUNT_GRANTS:
        target = {"username": username, "resource_type": resource_type, "resource_id": resource_id}
        held = _check(admin.get(base + GET_USER_PERMISSION, params=target, timeout=30), f"read {resource_type}")
        if held.get("permission") == permission:
            continue
        granted = admin.post(base + GRANT_USER_PERMISSION, json={**target, "permission": permission}, timeout=30)
        if granted.status_code == 400 and "RESOURCE_ALREADY_EXISTS" in granted.text:  # another level: replace it
            _check(admin.post(base + REVOKE_USER_PERMISSION, json=target, timeout=30), f"revoke {resource_type}")
            granted = admin.post(base + GRANT_USER_PERMISSION, json={**target, "permission": permission}, timeout=30)
        _check(granted, f"grant {resource_type}")
    return ServiceAccount(username, created, password_changed)


def _required(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise SystemExit(f"set {name}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loopline.ops.mlflow_auth", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="write the auth config (database from MLFLOW_AUTH_DATABASE_URI)")
    config.add_argument("path", type=Path)
    commands.add_parser(
        "service-account",
        help="create/update the service account: MLFLOW_TRACKING_URI, MLFLOW_AUTH_ADMIN_USERNAME/_PASSWORD, "
        "MLFLOW_TRACKING_USERNAME/_PASSWORD (the account the clients log in as)",
    )
    args = parser.parse_args(argv)
    if args.command == "config":
        default = os.environ.get("MLFLOW_AUTH_DEFAULT_PERMISSION", DEFAULT_PERMISSION)
        path = write_auth_config(args.path, _required("MLFLOW_AUTH_DATABASE_URI"), default)
        print(f"wrote {path} (default_permission = {default})")
        return 0
    uri = _required("MLFLOW_TRACKING_URI")
    wait_until_up(uri)
    account = ensure_service_account(
        uri,
        _required("MLFLOW_AUTH_ADMIN_USERNAME"),
        _required("MLFLOW_AUTH_ADMIN_PASSWORD"),
        _required("MLFLOW_TRACKING_USERNAME"),
        _required("MLFLOW_TRACKING_PASSWORD"),
    )
    state = "created" if account.created else ("password updated" if account.password_changed else "unchanged")
    grants = ", ".join(f"{p} on {t}:{i}" for t, i, p in SERVICE_ACCOUNT_GRANTS)
    print(f"MLflow service account {account.username}: {state}; {grants}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
