#!/usr/bin/env bash
# A model's BentoML service (credit-risk, card-fraud in docker-compose.yaml), served from the repo's
# models/<model>/ (baked into the image) rather than a built Bento: the code is the image's, and the model
# comes from the BentoML model store the Airflow workers fill (named volume bentoml-home). Which versions
# take traffic is read from the serving state store at run time, so a new champion or canary needs no
# restart; LOOPLINE_BENTO_MODEL (<model>:<version>) names the model and the fallback version the service
# pins at start. LOOPLINE_SERVE_PORT: where it listens (default 3000; the services share one address
# under the podman overlay's host networking, so each has its own).
set -euo pipefail
model="${LOOPLINE_BENTO_MODEL:-credit_risk:latest}"
name="${model%%:*}"
until bentoml models get "$model" >/dev/null 2>&1; do
  echo "waiting for $model in the BentoML model store: the ${name}_train DAG puts it there"
  sleep 30
done
LOOPLINE_SERVICE_MODEL_DIR="/opt/loopline/models/$name" \
  exec bentoml serve loopline.serving.bento_service:ModelService --host 0.0.0.0 --port "${LOOPLINE_SERVE_PORT:-3000}"
