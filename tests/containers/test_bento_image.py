"""A Bento as an OCI image: the train DAG packages version 1 on this machine, ``loopline bento-image`` builds
its image on the project image, and the image, run on its own (host network, 127.0.0.1), answers a prediction.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient

from tests.containers.serving import free_port, wait_until_serving
from tests.deploy.stack import ROOT
from tests.generators import credit_risk as datagen

pytestmark = pytest.mark.slow

LINE = r"""
set -euo pipefail
eval "$(loopline env)"
loopline init >/dev/null
airflow db migrate >/dev/null 2>&1
loopline generate --model credit_risk --weeks 0-3 --rows 2000 >/dev/null
for dag in credit_risk_ingest credit_risk_train; do
  airflow dags test "$dag" -c '{"reason": "bento image test"}' >"$LOOPLINE_HOME/$dag.log" 2>&1 || true
  log="$LOOPLINE_HOME/$dag.log"
  grep -q "DagRun Finished: dag_id=$dag.*state=success" "$log" || { tail -60 "$log"; exit 1; }
done
loopline bento-image 1 --model credit_risk --base-image "$BASE_IMAGE"
"""


def _clean_env(home: Path, base_image: str) -> dict[str, str]:
    prefixes = ("LOOPLINE_", "AIRFLOW", "MLFLOW_", "BENTOML_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(LOOPLINE_HOME=str(home), BASE_IMAGE=base_image, PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
    return env


def test_a_versions_bento_image_is_built_recorded_and_answers(engine, project_image, tmp_path):
    home = tmp_path / "home"
    line = subprocess.run(
        ["bash", "-c", LINE], cwd=ROOT, env=_clean_env(home, project_image), capture_output=True, text=True
    )
    assert line.returncode == 0, line.stdout[-4000:] + line.stderr[-4000:]
    tag = line.stdout.strip().splitlines()[-1]
    assert tag == "loopline-credit-risk:v1"
    tracking = subprocess.run(
        ["bash", "-c", 'eval "$(loopline env)" && echo "$MLFLOW_TRACKING_URI"'],
        env=_clean_env(home, project_image), capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    version = MlflowClient(tracking_uri=tracking, registry_uri=tracking).get_model_version("credit_risk", "1")
    assert version.tags["loopline.bento_image"] == tag and version.tags["loopline.bento_tag"]
    label = subprocess.run(
        [engine, "image", "inspect", "-f", '{{index .Labels "ai.loopline.bento"}}', tag], capture_output=True, text=True
    )
    assert label.stdout.strip() == version.tags["loopline.bento_tag"]  # the image says which Bento it holds

    port, name = free_port(), f"loopline-bento-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [engine, "run", "-d", "--name", name, "--network=host", "-e", f"LOOPLINE_SERVE_PORT={port}", tag],
        check=True, capture_output=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(engine, name, url)
        batch = datagen.make_batch(30, n_rows=2, seed=9).drop(columns=["applied_at", "defaulted"])
        answer = requests.post(f"{url}/predict", json={"instances": json.loads(batch.to_json(orient="records"))})
        assert answer.status_code == 200, answer.text
        assert [p["model_version"] for p in answer.json()] == ["1", "1"]
        assert all(p["decision"] in ("approve", "decline") for p in answer.json())
    finally:
        subprocess.run([engine, "rm", "-f", "-t", "0", name], capture_output=True)
        subprocess.run([engine, "rmi", "-f", tag], capture_output=True)
