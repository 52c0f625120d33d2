"""A real `bentoml serve` answering from the feature store: stored features looked up per request.

A binary model whose spec reads ``card_activity:spend_1h`` (keyed on ``card_id``, a ``dataset.keys``
column of each request) is trained on rows with that column joined, registered, built into a Bento and
served with the store's settings. The server looks each request's card up in the online store (SQLite,
materialised here from offline values): the answer moves with the stored value (changed in the store,
no restart), an unknown card is a 422 naming the key and the view, and the prediction log holds the
value the model saw, by which key. The service exports the view's freshness on /metrics.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import requests
import yaml

from tests.e2e.conftest import BentoServer
from tests.unit.test_batch_scoring import table, write_spec

pytestmark = pytest.mark.slow
pytest.importorskip("feast")

CARDS = """
entities:
  - {name: card, join_key: card_id, value_type: string}
feature_views:
  - name: card_activity
    owner: risk
    entities: [card]
    ttl: 2d
    schedule: "@hourly"
    source: {dataset: payments, event_time: paid_at}
    features:
      - {name: spend_1h, agg: sum, of: amount, window: 1h}
"""
SPEND = "card_activity__spend_1h"
CARD_SPEND = {f"c{i}": float(100 * i) for i in range(10)}  # c0: 0 ... c9: 900
NOW = datetime.now(UTC).replace(microsecond=0)


def spend_rows(spend: dict[str, float], at: datetime) -> pd.DataFrame:
    times = pd.to_datetime([at] * len(spend), utc=True)
    return pd.DataFrame({"card_id": list(spend), "paid_at": times, "spend_1h": list(spend.values())})


@pytest.fixture(scope="module")
def line(settings, tmp_path_factory):
    root = tmp_path_factory.mktemp("stored")
    (root / "feature_repo").mkdir()
    (root / "feature_repo" / "cards.yaml").write_text(CARDS)
    return dataclasses.replace(
        settings, models_dir=root / "models", feature_repo=root / "feature_repo", feast_root=root / "feast"
    )


@pytest.fixture(scope="module")
def store(line):
    from loopline.serving.stored import open_store

    global NOW  # the clock when the store is filled: a module imported an hour earlier (a long run) is not "now"
    NOW = datetime.now(UTC).replace(microsecond=0)
    fs, _ = open_store(line)
    fs.apply()
    fs.write_offline("card_activity", spend_rows(CARD_SPEND, NOW - timedelta(minutes=30)), batch_id="b1")
    fs.materialize("card_activity", NOW)
    return fs


@pytest.fixture(scope="module")
def server(line, store):
    import mlflow
    import mlflow.lightgbm

    from loopline.core import tracking
    from loopline.core.spec import load_spec
    from loopline.serving.packaging import build_bento
    from loopline.training import trainer

    line.models_dir.mkdir(parents=True, exist_ok=True)
    name = write_spec(line.models_dir, "binary")
    path = line.models_dir / name / "spec.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["dataset"]["keys"] = ["card_id"]
    raw["features"]["stored"] = ["card_activity:spend_1h"]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    spec = load_spec(name, line.models_dir)
    frame = table()
    rng = np.random.default_rng(5)
    frame["card_id"] = rng.choice(list(CARD_SPEND), len(frame))
    frame[SPEND] = frame["card_id"].map(CARD_SPEND) + rng.normal(0, 20, len(frame))
    frame["flagged"] = ((frame[SPEND] > 450) | (frame["flagged"] == 1)).astype(int)  # spend matters
    model, _ = trainer.fit_and_evaluate(frame, spec, dict(spec.training.params))
    client = tracking.client_for(line)
    with mlflow.start_run(experiment_id=tracking.experiment_id(client, name, line)) as run:
        info = mlflow.lightgbm.log_model(model.booster, name=tracking.MODEL_ARTIFACT)
        mlflow.set_tags({"loopline.model_uri": info.model_uri, "loopline.model_id": info.model_id or ""})
    version, _ = tracking.register(client, name, run.info.run_id)
    server = BentoServer(
        build_bento(name, version, line),
        LOOPLINE_FEATURE_REPO=str(line.feature_repo),
        LOOPLINE_FEAST_ROOT=str(line.feast_root),
    )
    server.name, server.booster, server.spec, server.version = name, model.booster, spec, version
    yield server
    server.stop()


def ask(server, card: str, **values) -> requests.Response:
    row = {"ref": "R1", "card_id": card, "load": 5.0, "age_days": 100.0, "tier": "a", **values}
    return requests.post(f"{server.url}/predict", json={"instances": [row]}, timeout=30)


def local_score(server, spend: float) -> float:
    from loopline.serving.scoring import score_frame

    row = pd.DataFrame([{"load": 5.0, "age_days": 100.0, "tier": "a", SPEND: spend}])
    return float(score_frame(server.booster, row, server.spec)["score"].iloc[0])


def test_the_answer_is_scored_with_the_stored_value_of_the_requests_key(server):
    for card in ("c1", "c8"):
        response = ask(server, card)
        assert response.status_code == 200, response.text
        assert response.json()[0]["score"] == pytest.approx(local_score(server, CARD_SPEND[card]), abs=1e-9)
    assert local_score(server, CARD_SPEND["c1"]) != pytest.approx(local_score(server, CARD_SPEND["c8"]))


def test_a_new_value_in_the_store_is_served_without_a_restart(server, store):
    # A value after the last materialisation's end (NOW): what the view's next pipeline run loads.
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    store.write_offline("card_activity", spend_rows({"c2": 850.0}, at), batch_id="b2")
    assert store.materialize("card_activity", datetime.now(UTC)).rows == 1
    response = ask(server, "c2")
    assert response.status_code == 200, response.text
    assert response.json()[0]["score"] == pytest.approx(local_score(server, 850.0), abs=1e-9)


def test_an_unknown_key_is_a_422_naming_the_key_and_the_view(server):
    response = ask(server, "nobody")
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert "card_id='nobody' is not in the store for feature view 'card_activity'" in error, error


def test_a_request_without_the_key_is_refused_naming_it(server):
    row = {"ref": "R1", "load": 5.0, "age_days": 100.0, "tier": "a"}
    response = requests.post(f"{server.url}/predict", json={"instances": [row]}, timeout=30)
    assert response.status_code == 422 and "card_id" in response.text, response.text


def test_the_prediction_log_holds_what_the_model_saw_and_by_which_key(server, line):
    from loopline.serving.prediction_log import read_window

    answer = ask(server, "c7").json()[0]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = read_window(line.prediction_log_dir, server.name).rows
        hit = rows[rows["prediction_id"] == answer["request_id"]] if not rows.empty else rows
        if not hit.empty:
            break
        time.sleep(0.5)
    assert not hit.empty
    logged = hit.iloc[0]
    assert logged[SPEND] == CARD_SPEND["c7"] and logged["card_id"] == "c7" and logged["stored_missing"] == ""


def test_the_views_freshness_is_a_metric(server):
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    ages = [line for line in text.splitlines() if line.startswith('loopline_feature_age_seconds{view="card_activity"}')]
    assert ages and float(ages[0].split()[-1]) < 3600, ages
    assert 'loopline_feature_stale{view="card_activity"} 0.0' in text


def test_batch_scoring_reads_the_offline_store_as_of_each_row(server, line, tmp_path):
    from loopline.serving.batch_scoring import ScoringInputError, score_file

    def scored(at: datetime, cards: list[str]):
        frame = pd.DataFrame(
            {
                "ref": [f"R{i}" for i in range(len(cards))],
                "seen_at": [at.strftime("%Y-%m-%dT%H:%M:%S")] * len(cards),
                "card_id": cards,
                "load": 5.0,
                "age_days": 100.0,
                "tier": "a",
            }
        )
        path = tmp_path / f"batch-{at:%H%M%S}.csv"
        frame.to_csv(path, index=False)
        return score_file(server.name, str(path), str(server.version), tmp_path / "out", line)

    result = scored(NOW - timedelta(minutes=5), ["c1", "c8"])  # after the cards' values (NOW - 30 min)
    scores = pd.read_parquet(result.output)["score"].tolist()
    assert scores == pytest.approx([local_score(server, CARD_SPEND["c1"]), local_score(server, CARD_SPEND["c8"])])
    with pytest.raises(ScoringInputError, match=r"2 row\(s\) have no value in feature view 'card_activity'"):
        scored(NOW - timedelta(hours=1), ["c1", "c8"])  # before them: the rule (refuse) fails the run, in one line
