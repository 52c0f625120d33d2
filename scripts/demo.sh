#!/usr/bin/env bash
# The README's first command: the whole spine on the embedded default, no Docker, no server.
# Starts from empty state so every run tells the same story.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1;34m== %s\033[0m\n' "$*"; }

loopline reset --yes >/dev/null
eval "$(loopline env)"
step "Initialise state in $LOOPLINE_HOME (Airflow on SQLite, MLflow on SQLite, DVC registry + local remote)"
loopline init
airflow db migrate >/dev/null 2>&1

step "Week 0-3 arrive in the landing zone, with one malformed batch of every kind"
loopline generate --weeks 0-3 --rows 2000
loopline malformed

step "Ingest DAG: validate with Great Expectations, quarantine the bad, version the good with DVC"
airflow dags test loopline_ingest >"$LOOPLINE_HOME/demo-ingest-1.log" 2>&1 || { tail -50 "$LOOPLINE_HOME/demo-ingest-1.log"; exit 1; }
echo "log: $LOOPLINE_HOME/demo-ingest-1.log"

step "Train DAG: exact data version -> LightGBM -> MLflow -> registry -> gate -> Bento (first model becomes champion)"
airflow dags test loopline_train >"$LOOPLINE_HOME/demo-train-1.log" 2>&1 || { tail -50 "$LOOPLINE_HOME/demo-train-1.log"; exit 1; }
echo "log: $LOOPLINE_HOME/demo-train-1.log"

step "Weeks 4-5 arrive; ingest and train again (the new version must beat the champion's holdout to be challenger)"
loopline generate --weeks 4-5 --rows 2000
airflow dags test loopline_ingest >"$LOOPLINE_HOME/demo-ingest-2.log" 2>&1 || { tail -50 "$LOOPLINE_HOME/demo-ingest-2.log"; exit 1; }
airflow dags test loopline_train >"$LOOPLINE_HOME/demo-train-2.log" 2>&1 || { tail -50 "$LOOPLINE_HOME/demo-train-2.log"; exit 1; }

step "What the line holds now"
loopline status

step "Reproduce model version 1 from its lineage"
loopline reproduce 1

cat <<TXT

Explore what the run left behind (after: eval "\$(.venv/bin/loopline env)"):
  airflow dags list-runs loopline_train            # the DAG runs
  mlflow ui --backend-store-uri \$MLFLOW_TRACKING_URI   # runs, lineage tags, registry aliases
  git -C $LOOPLINE_HOME/data-registry log --oneline --decorate ; dvc -C ... (see README)
  ls $LOOPLINE_HOME/quarantine/credit_risk/*/validation.txt
  bentoml list
TXT
