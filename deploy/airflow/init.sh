#!/usr/bin/env bash
# One-shot (service airflow-init), before any Airflow component starts. Idempotent: runs on every
# `docker compose up`, so an upgrade migrates and a changed admin password from .env takes effect.
set -euo pipefail

echo "== Airflow metadata database (Postgres)"
airflow db migrate

echo "== Loopline state folders and the DVC data registry (remote: ${LOOPLINE_DVC_REMOTE})"
loopline init

echo "== Airflow login: SimpleAuthManager user ${AIRFLOW_ADMIN_USER} with the password from .env"
python - <<'PY'
import json
import os
from pathlib import Path

path = Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text(json.dumps({os.environ["AIRFLOW_ADMIN_USER"]: os.environ["AIRFLOW_ADMIN_PASSWORD"]}) + "\n")
path.chmod(0o600)
PY
airflow version
