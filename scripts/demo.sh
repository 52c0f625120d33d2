#!/usr/bin/env bash
# The README's first command: the whole spine on the embedded default, no Docker, no server.
# Starts from empty state so every run tells the same story.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1;34m== %s\033[0m\n' "$*"; }

# Run one DAG with `airflow dags test` (a real DAG run, no scheduler needed); stop unless it succeeded.
run_dag() {
  local log="$LOOPLINE_HOME/logs-demo/$1-$2.log"
  mkdir -p "$(dirname "$log")"
  airflow dags test "$1" ${3:+-c "$3"} >"$log" 2>&1 || true
  if ! grep -q "DagRun Finished: dag_id=$1.*state=success" "$log"; then
    tail -60 "$log"; echo "$1 did not succeed; full log: $log" >&2; exit 1
  fi
  echo "$1: success (log: $log)"
}

loopline reset --yes >/dev/null
eval "$(loopline env)"
step "Initialise state in $LOOPLINE_HOME (Airflow on SQLite, MLflow on SQLite, DVC registry + local remote)"
loopline init
airflow db migrate >/dev/null 2>&1

# Two demo models of different task types, on one platform: a binary classifier (credit_risk:
# approve or decline) and a regression model (delivery_time: minutes from order to door).
# Each has its own folder (spec, feature code, generator) and suite; the platform code is shared.
for model in credit_risk delivery_time; do
  step "$model: weeks 0-3 arrive in its landing zone, with malformed batches among them"
  loopline generate --model "$model" --weeks 0-3 --rows 2000
  loopline malformed --model "$model"

  step "$model: ingest DAG: validate with Great Expectations, quarantine the bad, version the good with DVC"
  run_dag "${model}_ingest" 1

  step "$model: train DAG: exact data version -> LightGBM -> MLflow -> registry -> gate -> Bento (v1: champion)"
  run_dag "${model}_train" 1 '{"reason": "demo: first model"}'

  step "$model: weeks 4-5 arrive; ingest and train again (v2 must hold up against the champion on one holdout)"
  loopline generate --model "$model" --weeks 4-5 --rows 2000
  run_dag "${model}_ingest" 2
  run_dag "${model}_train" 2 '{"reason": "demo: two more weeks of data"}'
done

# A third model whose accuracy comes from the feature store: card_fraud reads a card's and a merchant's
# recent history (feature_repo/cards.yaml, merchants.yaml), computed once by feature pipeline DAGs.
step "card_fraud: six weeks of card transactions land and are ingested (the model's rows and the views' events)"
loopline generate --model card_fraud --weeks 0-5 --rows 3000 --ending-now  # fresh: the store serves recent values
run_dag card_fraud_ingest 1

step "card_fraud: each feature view's pipeline DAG: events -> window aggregates -> GE -> offline store -> online store"
run_dag feature_card_activity 1
run_dag feature_merchant_activity 1
loopline features

step "card_fraud: train DAG: a point-in-time training set from the store (nothing after each transaction) -> gate -> Bento"
run_dag card_fraud_train 1 '{"reason": "demo: first model"}'

step "card_fraud: an online request answered from the store (the champion's Bento over HTTP looks up card and merchant)"
loopline ask --model card_fraud

step "What the line holds now, for every model"
loopline status

step "Audit trail of what serves traffic"
loopline audit --model credit_risk
loopline audit --model delivery_time
loopline audit --model card_fraud

step "Reproduce credit_risk version 1 from its lineage"
loopline reproduce 1 --model credit_risk

cat <<TXT

Explore what the run left behind (README, "Look at what it did"):
  eval "\$(.venv/bin/loopline env)"; export PATH="\$PWD/.venv/bin:\$PATH"
  airflow dags list-runs credit_risk_train; airflow dags list-runs delivery_time_train
  mlflow ui --backend-store-uri "\$MLFLOW_TRACKING_URI"        # http://localhost:5000
  git -C "\$LOOPLINE_HOME/data-registry" log --oneline --decorate
  (cd "\$LOOPLINE_HOME/data-registry" && dvc status -c)
  cat "\$LOOPLINE_HOME"/quarantine/*/*/validation.txt
  bentoml list
TXT
