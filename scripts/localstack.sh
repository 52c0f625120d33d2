#!/usr/bin/env bash
# `make up` / `make down`: the embedded default as running services, without Docker.
#   up    Airflow (api-server, scheduler, dag-processor, triggerer), the MLflow UI and every model's
#         newest Bento (ports 3000, 3001, ... in model-name order), as background processes with a pid file and a log each in
#         $LOOPLINE_HOME/run/; waits until every one answers, then prints the URLs and the login.
#         Idempotent: what already runs is left alone.
#   down  stops what `up` started, and only that, then removes the pid files.
set -euo pipefail
set -m  # job control: every background service leads its own process group, so `down` stops it whole
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
eval "$(loopline env)"
RUN="$LOOPLINE_HOME/run"
AIRFLOW_SERVICES="airflow-api-server airflow-scheduler airflow-dag-processor airflow-triggerer"

# A pid file holds the pid and the process's start time: a pid the system has since reused is not ours.
started_at() { ps -o lstart= -p "$1" 2>/dev/null | xargs; }
pid_of() { cut -d' ' -f1 "$RUN/$1.pid"; }
running() {
  local pid started
  [[ -f "$RUN/$1.pid" ]] && read -r pid started <"$RUN/$1.pid" && [[ $(started_at "$pid") == "$started" ]]
}

start() {  # start NAME COMMAND...: run COMMAND in the background unless NAME already runs
  local name=$1; shift
  if running "$name"; then echo "$name: already running (pid $(pid_of "$name"))"; return; fi
  nohup "$@" >"$RUN/$name.log" 2>&1 </dev/null &
  echo "$! $(started_at $!)" >"$RUN/$name.pid"
  echo "$name: started (pid $!)"
}

wait_for() {  # wait_for "NAME..." CHECK URL: until CHECK URL succeeds; stop with a log if one dies or 5 min pass
  local deadline=$((SECONDS + 300)) name
  until "$2" "$3"; do
    for name in $1; do
      if ! running "$name" || ((SECONDS > deadline)); then
        tail -40 "$RUN/$name.log" >&2; echo "$name did not come up ($3); log: $RUN/$name.log" >&2; exit 1
      fi
    done
    sleep 2
  done
}
answers() { curl -sf -o /dev/null "$1"; }
airflow_healthy() { [[ $(curl -sf "$1" | grep -o '"status":"healthy"' | wc -l) -eq 4 ]]; }  # db + 3 jobs

models() {  # every model folder that loads, in name order (the order of their service ports)
  python -c 'from loopline.core.dag_factory import discover; from loopline.core.settings import get_settings
print(" ".join(sorted(s.name for s in discover(get_settings().models_dir)[0])))'
}

newest_bento() {  # newest_bento MODEL: its newest Bento recorded on a model version (tag loopline.bento_tag) and in the store
  MODEL=$1 python - <<'PY' 2>/dev/null || true
import os
from pathlib import Path

from loopline.core import tracking
from loopline.serving.packaging import BENTO_TAG
from loopline.core.settings import get_settings

client = tracking.client_for(get_settings())
name = os.environ["MODEL"]
for mv in sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: -int(v.version)):
    tag = mv.tags.get(BENTO_TAG, "")
    if tag and (Path(os.environ["BENTOML_HOME"], "bentos", *tag.split(":")) / "bento.yaml").exists():
        print(tag)
        break
PY
}

up() {
  mkdir -p "$RUN" "$AIRFLOW_HOME"
  # Login: the SimpleAuthManager user admin (role admin), with a password generated once and then kept.
  export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin"
  export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$AIRFLOW_HOME/simple_auth_manager_passwords.json"
  export AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=8080  # local only
  export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:8080/execution/"  # where task runners report
  export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False  # the line runs on its own, as in docker-compose.yaml
  local passwords=$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE name
  if [[ ! -s $passwords ]]; then
    (umask 077; python -c 'import json, secrets; print(json.dumps({"admin": secrets.token_urlsafe(12)}))' >"$passwords")
  fi

  local model port=3000 served=()
  for model in $(models); do  # each model's service on its own port; the rollout DAG reads its /metrics there
    export "LOOPLINE_SERVICE_URL__${model^^}=http://127.0.0.1:$port"
    served+=("$model:$port")
    port=$((port + 1))
  done

  local airflow_running=true
  for name in $AIRFLOW_SERVICES; do running "$name" || airflow_running=false; done
  if ! $airflow_running; then
    echo "Migrating the Airflow database and initialising $LOOPLINE_HOME ..."
    airflow db migrate >"$RUN/airflow-db-migrate.log" 2>&1 || { tail -40 "$RUN/airflow-db-migrate.log"; exit 1; }
    loopline init >/dev/null
  fi
  start airflow-api-server airflow api-server
  start airflow-scheduler airflow scheduler
  start airflow-dag-processor airflow dag-processor
  start airflow-triggerer airflow triggerer
  local artifact_root bento_tag entry
  artifact_root=$(python -c 'from loopline.core.settings import get_settings; print(get_settings().mlflow_artifact_root)')
  # MLflow's job runners (GenAI jobs: eight more processes) are not used by Loopline: off.
  start mlflow env MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow server --host 127.0.0.1 --port 5000 \
    --workers 1 --backend-store-uri "$MLFLOW_TRACKING_URI" --default-artifact-root "$artifact_root"
  for entry in "${served[@]}"; do
    model=${entry%:*} port=${entry#*:}
    if running "bento-$model"; then echo "bento-$model: already running (pid $(pid_of "bento-$model"))"; continue; fi
    bento_tag=$(newest_bento "$model")
    if [[ -n $bento_tag ]]; then
      start "bento-$model" bentoml serve "$bento_tag" --host 127.0.0.1 --port "$port"
    else
      echo "bento-$model: skipped, no Bento yet (train it, e.g. \`make demo\`, then \`make up\` again)"
    fi
  done

  wait_for "$AIRFLOW_SERVICES" airflow_healthy http://127.0.0.1:8080/api/v2/monitor/health
  # DAGs that `make demo` registered (paused, Airflow's default) are unpaused once; a later pause is kept.
  if [[ ! -e $AIRFLOW_HOME/loopline-dags-unpaused ]]; then
    airflow dags unpause --treat-dag-id-as-regex --yes '.*' >"$RUN/airflow-unpause.log" 2>&1 || true
    touch "$AIRFLOW_HOME/loopline-dags-unpaused"
  fi
  wait_for mlflow answers http://127.0.0.1:5000/health
  for entry in "${served[@]}"; do
    model=${entry%:*} port=${entry#*:}
    if running "bento-$model"; then wait_for "bento-$model" answers "http://127.0.0.1:$port/readyz"; fi
  done

  cat <<TXT

Loopline is up (logs and pid files in $RUN; \`make down\` stops everything):
  Airflow   http://localhost:8080   log in as admin / $(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["admin"])' "$passwords")
  MLflow    http://localhost:5000
  Every model's DAGs run on their own: ingest every 10 min, drift hourly, train weekly and on new
  data, rollout on a new challenger (pause any of them in the Airflow UI).
TXT
  for entry in "${served[@]}"; do
    model=${entry%:*} port=${entry#*:}
    if running "bento-$model"; then
      echo "  $model   http://localhost:$port   serving $(sed -n 's/.*BentoServer from "\([^"]*\)".*/\1/p' "$RUN/bento-$model.log" | head -1)"
    else
      echo "  $model   not serving: no Bento yet (\`make demo\` builds one; then \`make up\`)"
    fi
  done
}

down() {
  local file name pid stopping=()
  for file in "$RUN"/*.pid; do
    [[ -e $file ]] || continue
    name=$(basename "$file" .pid)
    pid=$(pid_of "$name")
    if running "$name" && [[ $(ps -o pgid= -p "$pid" | xargs) == "$pid" ]]; then
      kill -TERM -- "-$pid" && stopping+=("$pid") && echo "$name: stopping (pid $pid)"
    else
      echo "$name: not running"
    fi
    rm -f "$file"
  done
  local deadline=$((SECONDS + 30))
  for pid in "${stopping[@]}"; do
    while kill -0 -- "-$pid" 2>/dev/null && ((SECONDS < deadline)); do
      sleep 1
      # The scheduler can lose a SIGTERM (its handler's SystemExit is swallowed when it lands during
      # garbage collection): remind the group leader every 5 s.
      if ((SECONDS % 5 == 0)); then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    if kill -0 -- "-$pid" 2>/dev/null; then kill -KILL -- "-$pid" && echo "pid $pid: killed after 30 s"; fi
  done
  echo "stopped; logs kept in $RUN"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
