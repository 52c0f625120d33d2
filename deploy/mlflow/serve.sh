#!/usr/bin/env bash
# The MLflow tracking server and registry with MLflow's own authentication (service mlflow): every
# request but /health needs a login, and a user without a grant of its own gets default_permission =
# READ, so only the admin and the platform's service account (made by the one-shot mlflow-init) write.
# The auth config is written at start from the environment (it holds the auth database's URI and so
# a password; mode 0600, inside the container only). The admin is created from MLFLOW_AUTH_ADMIN_*
# on an empty user store; later changes to that password in .env do not rotate it (see deploy/README.md).
# Arguments: the `mlflow server` options (docker-compose.yaml).
set -euo pipefail
: "${MLFLOW_AUTH_DATABASE_URI:?}" "${MLFLOW_AUTH_ADMIN_USERNAME:?}" "${MLFLOW_AUTH_ADMIN_PASSWORD:?}" "${MLFLOW_FLASK_SERVER_SECRET_KEY:?}"
export MLFLOW_AUTH_CONFIG_PATH="${MLFLOW_AUTH_CONFIG_PATH:-/tmp/mlflow-auth/basic_auth.ini}"
python -m loopline.ops.mlflow_auth config "$MLFLOW_AUTH_CONFIG_PATH"
exec mlflow server --app-name basic-auth "$@"
