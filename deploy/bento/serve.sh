#!/usr/bin/env bash
# The credit_risk BentoML service, served from the repo's models/credit_risk/service.py (baked into
# the image) rather than a built Bento: the code is the image's, and the model comes from the
# BentoML model store the Airflow workers fill (named volume bentoml-home). Which versions take
# traffic is read from the serving state store at run time, so a new champion or canary needs no
# restart; LOOPLINE_BENTO_MODEL only picks the fallback model the service pins at start.
set -euo pipefail
model="${LOOPLINE_BENTO_MODEL:-credit_risk:latest}"
until bentoml models get "$model" >/dev/null 2>&1; do
  echo "waiting for $model in the BentoML model store: the credit_risk_train DAG puts it there"
  sleep 30
done
LOOPLINE_SERVICE_MODEL_DIR=/opt/loopline/models/credit_risk \
  exec bentoml serve loopline.serving.bento_service:ModelService --host 0.0.0.0 --port 3000
