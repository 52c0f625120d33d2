#!/usr/bin/env bash
# One-shot (service airflow-init), before any Airflow component starts. Idempotent: runs on every
# `docker compose up`, so an upgrade migrates and a changed admin password from .env takes effect.
set -euo pipefail

echo "== Airflow metadata database (Postgres)"
airflow db migrate

echo "== Loopline state folders and the DVC data registry (remote: ${LOOPLINE_DVC_REMOTE})"
loopline init

registry="${LOOPLINE_FEAST_REGISTRY:-a file registry}"
echo "== The feature store's registry (${registry##*@}): its tables, and the feature repo's views applied"
# Once here, before any worker: Feast's SQL registry creates its tables on first use, which two feature
# pipelines starting together would race for; the card-fraud service's warm-up lookup needs the views
# registered. A refused definition is left out (loopline features names it), it does not stop the stack.
python -c 'from loopline.features.store import open_store; open_store().apply()'

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
