"""The project image for real: in one container (host network, 127.0.0.1 only) the credit_risk line runs
on the image's Airflow and MLflow (embedded state): a batch lands, ingest and train DAGs succeed, and the
champion answers a prediction over HTTP from the image's BentoML service, asked from the host.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
import requests

from tests.containers.serving import free_port, logs, wait_until_serving
from tests.generators import credit_risk as datagen

pytestmark = pytest.mark.slow

SCRIPT = r"""
set -euo pipefail
export LOOPLINE_HOME=/opt/loopline/state  # the image creates it for its user
eval "$(loopline env)"
loopline init >/dev/null
airflow db migrate >/dev/null 2>&1
loopline generate --model credit_risk --weeks 0-3 --rows 2000
run_dag() {
  airflow dags test "$@" >"/tmp/$1.log" 2>&1 || true
  grep -q "DagRun Finished: dag_id=$1.*state=success" "/tmp/$1.log" || { tail -80 "/tmp/$1.log"; exit 1; }
  echo "$1: success"
}
run_dag credit_risk_ingest
run_dag credit_risk_train -c '{"reason": "container test: the line in the project image"}'
echo "serving on 127.0.0.1:$PORT"
LOOPLINE_SERVICE_MODEL_DIR=/opt/loopline/models/credit_risk \
  exec bentoml serve loopline.serving.bento_service:ModelService --host 127.0.0.1 --port "$PORT"
"""


def test_the_image_runs_the_line_and_its_bento_answers_over_http(engine, project_image):
    port = free_port()
    name = f"loopline-line-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [engine, "run", "-d", "--name", name, "--network=host", "-e", f"PORT={port}", project_image]
        + ["bash", "-c", SCRIPT],
        check=True,
        capture_output=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(engine, name, url)
        output = logs(engine, name)
        assert "credit_risk_ingest: success" in output and "credit_risk_train: success" in output, output
        batch = datagen.make_batch(30, n_rows=3, seed=5).drop(columns=["applied_at", "defaulted"])
        applications = json.loads(batch.to_json(orient="records"))
        answer = requests.post(f"{url}/predict", json={"instances": applications}, timeout=60)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()
        assert len(predictions) == 3
        for p in predictions:
            assert 0 <= p["score"] <= 1 and p["decision"] in ("approve", "decline")
            assert p["model_version"] == "1"
    finally:
        subprocess.run([engine, "rm", "-f", "-t", "0", name], capture_output=True)
    left = subprocess.run([engine, "ps", "-aq", "--filter", f"name={name}"], capture_output=True, text=True)
    assert left.stdout.strip() == "", "the container must be gone"
