"""A table nobody here wrote, onboarded with `loopline onboard`, runs through the real line with no code change.

In a state folder of its own (own Airflow DB, models and expectations folders): the
onboarding command writes the model folder from a CSV, the DAG files generate the new
model's DAGs, and its ingest and train DAGs run with `airflow dags test`: the batches are
validated by the written suite, versioned with DVC, trained with LightGBM, gated, registered
in MLflow and packaged as a Bento. Nothing outside the temporary folders is written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from loopline.serving.bento_server import BentoServer
from tests.unit.test_onboarding import churn_table

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
PROJECT = Path(__file__).resolve().parents[2]


def test_an_onboarded_table_is_ingested_trained_and_packaged(tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPLINE_", "AIRFLOW"))}
    env.update(
        LOOPLINE_HOME=str(home),
        LOOPLINE_MODELS_DIR=str(tmp_path / "models"),
        LOOPLINE_EXPECTATIONS_DIR=str(tmp_path / "expectations"),
        LOOPLINE_LANDING_SETTLE_SECONDS="0",
        PATH=f"{BIN}:{os.environ['PATH']}",
    )
    env.update(
        json.loads(
            subprocess.run(
                [
                    str(BIN / "python"),
                    "-c",
                    "import json; from loopline.core.settings import get_settings as g; "
                    "print(json.dumps(g().as_env()))",
                ],  # fmt: skip
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
    )

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(args, env=env, capture_output=True, text=True, cwd=PROJECT, timeout=900)
        assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    table = churn_table(n=900, seed=3)
    sample = tmp_path / "sample.csv"
    table.head(300).to_csv(sample, index=False)
    run(str(BIN / "loopline"), "onboard", "churn", "--sample", str(sample), "--target", "churned",
        "--timestamp", "observed_on", "--entity-id", "customer_ref")  # fmt: skip
    run(str(BIN / "airflow"), "db", "migrate")
    run(str(BIN / "loopline"), "init")
    landing = home / "landing" / "churn"
    landing.mkdir(parents=True)
    for n, part in enumerate((table.iloc[:450], table.iloc[450:])):
        part.to_csv(landing / f"export-{n}.csv", index=False)
    run(str(BIN / "airflow"), "dags", "test", "churn_ingest", "2026-06-01T00:00:00+00:00")
    assert sorted(p.name.rsplit("-", 2)[0] for p in (home / "archive" / "churn").iterdir()) == ["export-0", "export-1"]
    run(str(BIN / "airflow"), "dags", "test", "churn_train", "2026-06-01T01:00:00+00:00", "-c",
        json.dumps({"reason": "onboarding e2e"}))  # fmt: skip
    status = run(str(BIN / "loopline"), "status", "-m", "churn").stdout
    assert "v0001" in status and "champion" in status and "bento churn:v1-" in status, status
    tag = next(w for w in status.split() if w.startswith("churn:v1-"))

    server = BentoServer(tag, **{k: v for k, v in env.items() if k.startswith(("LOOPLINE_", "BENTOML_", "MLFLOW"))})
    try:  # the platform's own service answers for a model that brought none
        applications = json.loads(
            table.drop(columns=["observed_on", "churned", "notes"]).head(3).to_json(orient="records")
        )
        answers = server.predict(applications)
        assert [a["decision"] in ("negative", "positive") for a in answers] == [True] * 3
        assert all(0 <= a["score"] <= 1 and a["model_version"] == "1" and a["reasons"] for a in answers)
        bad = httpx.post(f"{server.url}/predict", json={"applications": [{**applications[0], "plan": "platinum"}]})
        assert bad.status_code == 422 and "plan" in bad.text
    finally:
        server.stop()
