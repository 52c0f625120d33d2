#!/usr/bin/env bash
# One Postgres server, one database and owner role per store. Runs once, when the postgres-data
# volume is empty (/docker-entrypoint-initdb.d). Passwords come from .env through the environment
# and reach SQL as psql variables (:'name' quotes them), never through the shell.
set -euo pipefail
: "${AIRFLOW_DB_PASSWORD:?}" "${MLFLOW_DB_PASSWORD:?}" "${LOOPLINE_DB_PASSWORD:?}" "${FEAST_DB_PASSWORD:?}" "${GRAFANA_DB_PASSWORD:?}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v airflow_password="$AIRFLOW_DB_PASSWORD" \
  -v mlflow_password="$MLFLOW_DB_PASSWORD" \
  -v loopline_password="$LOOPLINE_DB_PASSWORD" \
  -v feast_password="$FEAST_DB_PASSWORD" \
  -v grafana_password="$GRAFANA_DB_PASSWORD" <<'SQL'
-- Airflow metadata and the Celery result backend
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
-- MLflow backend store (runs, registry); artifacts live in MinIO
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
-- MLflow's authentication (users, roles, grants; mlflow server --app-name basic-auth)
CREATE DATABASE mlflow_auth OWNER mlflow;
-- Loopline state: serving routes, audit trail, rollouts, drift checks, outcomes
CREATE ROLE loopline LOGIN PASSWORD :'loopline_password';
CREATE DATABASE loopline OWNER loopline;
-- The feature store's registry (Feast's SQL registry: entities, feature views, materialisation intervals)
CREATE ROLE feast LOGIN PASSWORD :'feast_password';
CREATE DATABASE feast OWNER feast;
-- Grafana reads the Loopline state, nothing else, and never writes
CREATE ROLE grafana_reader LOGIN PASSWORD :'grafana_password';

REVOKE ALL ON DATABASE airflow, mlflow, mlflow_auth, loopline, feast FROM PUBLIC;
GRANT CONNECT ON DATABASE loopline TO grafana_reader;

\connect loopline
GRANT USAGE ON SCHEMA public TO grafana_reader;
-- Loopline creates its tables on first use (as role loopline): each one is readable by Grafana.
ALTER DEFAULT PRIVILEGES FOR ROLE loopline IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
SQL
