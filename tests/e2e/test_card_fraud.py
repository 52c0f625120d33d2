"""card_fraud end to end: batches land, the feature pipelines compute the views, training joins them.

Through the real DAGs (``airflow dags test``) in a line of its own: four weekly batches of card
transactions are ingested (suite, DVC); each view's pipeline DAG (``feature_card_activity``,
``feature_merchant_activity``) computes its rows from that dataset and writes them to the embedded
Feast store; the train DAG joins the stored features as of each transaction, trains, records the
training set's lineage on the MLflow run and passes the gate (which the request-time inputs alone
would not: min AUC 0.90); ``loopline reproduce`` rebuilds the same set and the same metrics.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.e2e.isolated_line import BIN, PROJECT, IsolatedLine
from tests.generators import card_fraud as datagen

pytestmark = pytest.mark.slow


def test_card_fraud_trains_on_its_stored_features_and_reproduces(tmp_path):
    line = IsolatedLine(tmp_path)
    shutil.copytree(PROJECT / "models" / "card_fraud", line.models / "card_fraud")
    line.expectations.mkdir(parents=True)
    shutil.copy(PROJECT / "expectations" / "card_fraud_batch.json", line.expectations)
    line.start()
    landing = line.home / "landing" / "card_fraud"
    for week in range(5):
        datagen.write_batch(datagen.make_batch(week, 2500, seed=8), landing / f"transactions-w{week}.csv")
    line.dag_test("card_fraud_ingest")
    for view in ("card_activity", "merchant_activity"):
        line.dag_test(f"feature_{view}")
    line.dag_test("card_fraud_train", {"reason": "card_fraud e2e"})

    status = line.loopline("status", "-m", "card_fraud").stdout
    assert "champion" in status, status
    code = (
        "import json, mlflow; from loopline.core import tracking; from loopline.core.settings import get_settings;"
        "c = tracking.client_for(get_settings()); v = c.get_model_version('card_fraud', '1');"
        "r = c.get_run(v.run_id);"
        "print(json.dumps({'tags': r.data.tags, 'metrics': r.data.metrics,"
        " 'lineage': mlflow.artifacts.load_dict(r.info.artifact_uri + '/features/training_set.json')}))"
    )
    run = json.loads(line.run(str(BIN / "python"), "-c", code).stdout.splitlines()[-1])
    lineage = run["lineage"]
    assert set(lineage["views"]) == {"card_activity", "merchant_activity"}
    assert lineage["as_of"] == "transacted_at - 1 ms" and lineage["rows"] == 5 * 2500
    assert run["tags"]["loopline.training_set_sha"] == lineage["set_sha"]
    assert "card_activity@" in run["tags"]["loopline.stored_features"]
    assert run["metrics"]["holdout.auc"] >= 0.9, run["metrics"]

    reproduced = line.loopline("reproduce", "1", "-m", "card_fraud").stdout
    assert "REPRODUCED" in reproduced and "NOT REPRODUCED" not in reproduced, reproduced
