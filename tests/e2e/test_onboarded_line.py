"""A table nobody here wrote, onboarded with `loopline onboard`, runs through the real line with no code change.

In a state folder of its own (own Airflow DB, models and expectations folders): the
onboarding command writes the model folder from a CSV, the DAG files generate the new
model's DAGs, and its ingest and train DAGs run with `airflow dags test`: the batches are
validated by the written suite, versioned with DVC, trained with LightGBM, gated, registered
in MLflow and packaged as a Bento. Nothing outside the temporary folders is written.
"""

from __future__ import annotations

import json

import httpx
import pytest

from loopline.core.spec import load_spec
from loopline.serving.bento_server import BentoServer
from tests.e2e.isolated_line import BIN, IsolatedLine
from tests.unit.test_onboarding import churn_table

pytestmark = pytest.mark.slow


def test_an_onboarded_table_is_ingested_trained_and_packaged(tmp_path):
    line = IsolatedLine(tmp_path)
    home, run = line.home, line.run
    table = churn_table(n=900, seed=3)
    sample = tmp_path / "sample.csv"
    table.head(300).to_csv(sample, index=False)
    onboarded = run(str(BIN / "loopline"), "onboard", "churn", "--sample", str(sample), "--target", "churned",
        "--timestamp", "observed_on", "--entity-id", "customer_ref")  # fmt: skip
    assert "commit them" in onboarded.stdout  # reproduce needs the folder and suite in the recorded commit
    spec = load_spec("churn", line.models)
    assert spec.features.required and spec.features.max_missing_share is not None
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

    server = BentoServer(tag, **line.service_env())
    try:  # the platform's own service answers for a model that brought none
        applications = json.loads(
            table.drop(columns=["observed_on", "churned", "notes"]).head(3).to_json(orient="records")
        )
        answers = server.predict(applications)
        assert [a["decision"] in ("negative", "positive") for a in answers] == [True] * 3
        assert all(0 <= a["score"] <= 1 and a["model_version"] == "1" and a["reasons"] for a in answers)
        bad = httpx.post(f"{server.url}/predict", json={"instances": [{**applications[0], "plan": "platinum"}]})
        assert bad.status_code == 422 and "plan" in bad.text
        only_id = httpx.post(f"{server.url}/predict", json={"applications": [{"customer_ref": "C000001"}]})
        assert only_id.status_code == 422 and all(name in only_id.text for name in spec.features.required)
    finally:
        server.stop()
