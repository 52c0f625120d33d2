"""The request's top-level key is ``instances`` for every model; ``applications`` still works, against a real server.

A small binary model on a table generated here (``tests/unit/test_batch_scoring.py``'s), in a
model folder of its own, registered and built into a Bento (what the train DAG does, minus the
DAG), served by `bentoml serve`. Both keys score the same rows alike; the edge guard reads the
old key as the new one (a client name smuggled in under either is refused); a body with both
keys or another key is refused naming the key to use; the OpenAPI document names ``instances``.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import requests

from loopline.serving.auth import CLIENT_FIELD
from tests.e2e.conftest import BentoServer
from tests.unit.test_batch_scoring import TARGETS, table, write_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(settings, tmp_path_factory):
    import mlflow
    import mlflow.lightgbm

    from loopline.core import tracking
    from loopline.core.spec import load_spec
    from loopline.serving.packaging import build_bento
    from loopline.training import trainer

    models = tmp_path_factory.mktemp("models")
    line = dataclasses.replace(settings, models_dir=models)
    name = write_spec(models, "binary")
    spec = load_spec(name, models)
    model, _ = trainer.fit_and_evaluate(table(), spec, dict(spec.training.params))
    client = tracking.client_for(line)
    with mlflow.start_run(experiment_id=tracking.experiment_id(client, name, line)) as run:
        info = mlflow.lightgbm.log_model(model.booster, name=tracking.MODEL_ARTIFACT)
        mlflow.set_tags({"loopline.model_uri": info.model_uri, "loopline.model_id": info.model_id or ""})
    version, _ = tracking.register(client, name, run.info.run_id)
    server = BentoServer(build_bento(name, version, line))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    frame = table(n=30, seed=9).drop(columns=["seen_at", *TARGETS.values()])
    return json.loads(frame.to_json(orient="records"))


def post(server, body) -> requests.Response:
    return requests.post(f"{server.url}/predict", json=body, timeout=30)


def test_instances_and_the_old_key_score_the_same_rows_alike(server, rows):
    new, old = post(server, {"instances": rows}), post(server, {"applications": rows})
    assert new.status_code == 200 and old.status_code == 200, (new.text, old.text)
    strip = lambda answers: [{k: v for k, v in a.items() if k != "request_id"} for a in answers]  # noqa: E731
    assert len(new.json()) == len(rows) and strip(new.json()) == strip(old.json())
    assert set(new.json()[0]) == {"request_id", "score", "decision", "model_version", "reasons"}


def test_a_row_error_names_the_key_it_was_sent_under(server, rows):
    for key in ("instances", "applications"):
        answer = post(server, {key: [{**rows[0], "load": "high"}]})
        assert answer.status_code == 422 and answer.json()["error"].startswith(f"{key}[0].load"), answer.text


def test_both_keys_or_another_key_are_refused_naming_instances(server, rows):
    both = post(server, {"instances": rows[:1], "applications": rows[1:2]})
    assert both.status_code == 422 and "under 'instances' only" in both.json()["error"], both.text
    other = post(server, {"rows": rows})
    assert other.status_code == 422 and "'rows'" in other.json()["error"] and "'instances'" in other.json()["error"]


def test_a_client_name_is_refused_under_either_key(server, rows):
    for key in ("instances", "applications"):
        answer = post(server, {key: [{**rows[0], CLIENT_FIELD: "someone-else"}]})
        assert answer.status_code == 422 and CLIENT_FIELD in answer.json()["error"], (key, answer.text)


def test_the_openapi_document_names_instances(server):
    document = requests.get(f"{server.url}/docs.json", timeout=30).json()
    body = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in body:
        body = document["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]
    assert list(body["properties"]) == ["instances"] and body["required"] == ["instances"]
