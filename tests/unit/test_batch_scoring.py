"""The batch-scored file holds the service's answer, field for field, for every task type.

One small model per task type is trained here on a table generated here, registered in a
MLflow registry of this test's own, and scores a CSV through ``score_file`` (what the
batch-score DAG runs); the same rows go through the service's path (``RoutedScorer`` and the
answer schema's ``answers``). The file's columns must be the entity id, the answer's fields
without ``request_id``, and the same values.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import yaml

from loopline.core.settings import get_settings
from loopline.core.spec import load_spec
from loopline.core.tasks import TASKS
from loopline.serving.batch_scoring import score_file
from loopline.serving.online import RoutedScorer
from loopline.serving.request_schema import answer_model, answers
from loopline.training import trainer

CLASSES = ["low", "mid", "high"]
TARGETS = {"binary": "flagged", "regression": "amount", "multiclass": "band"}


def table(n: int = 1400, seed: int = 3) -> pd.DataFrame:
    """Rows seen hourly over eight weeks: two numbers and a tier, and a target of each kind made from them."""
    rng = np.random.default_rng(seed)
    load = rng.uniform(0, 10, n)
    age = rng.uniform(0, 1000, n)
    tier = rng.choice(["a", "b", "c"], n)
    signal = 0.5 * load - 0.002 * age + (tier == "c") * 1.5 + rng.normal(0, 0.8, n)
    return pd.DataFrame(
        {
            "ref": [f"R{seed}{i:06d}" for i in range(n)],
            "seen_at": pd.date_range("2025-03-03", periods=n, freq="1h").strftime("%Y-%m-%dT%H:%M:%S"),
            "load": load.round(3),
            "age_days": age.round(1),
            "tier": tier,
            "flagged": (signal > 2.0).astype(int),
            "amount": (20 + 6 * signal).round(2),
            "band": np.select([signal > 3.0, signal > 1.0], ["high", "mid"], "low"),
        }
    )


def write_spec(models, task: str) -> str:
    name = f"scored_{task}"
    dataset = {
        "name": name,
        "entity_id": "ref",
        "timestamp": "seen_at",
        "target": TARGETS[task],
        "expectation_suite": f"{name}_batch",
    }
    training = {
        "valid_weeks": 1,
        "holdout_weeks": 1,
        "min_train_rows": 200,
        "seed": 1,
        "early_stopping_rounds": 10,
        "params": {"learning_rate": 0.1, "num_leaves": 7, "min_child_samples": 10, "num_boost_round": 60},
    }
    if task == "multiclass":
        dataset["classes"] = CLASSES
    if task == "binary":
        training["decision_threshold"] = 0.5
        training["decisions"] = {"below": "pass", "at_or_above": "review"}
    spec = {
        "name": name,
        "task": task,
        "dataset": dataset,
        "features": {
            "version": "1",
            "numeric": {"load": {"min": 0, "max": 10}, "age_days": {"min": 0, "max": 1000}},
            "categorical": {"tier": ["a", "b", "c"]},
        },
        "training": training,
        "quality_gate": dict(TASKS[task].default_gate),
    }
    (models / name).mkdir(parents=True)
    (models / name / "spec.yaml").write_text(yaml.safe_dump(spec))
    return name


@pytest.fixture(scope="module")
def line(tmp_path_factory):
    """Settings with this module's models folder and MLflow registry (restored afterwards)."""
    root = tmp_path_factory.mktemp("batch")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    settings = dataclasses.replace(
        get_settings(), models_dir=root / "models", mlflow_tracking_uri=uri, mlflow_artifact_root=str(root / "art")
    )
    (root / "models").mkdir()
    return root, settings


@pytest.mark.parametrize("task", ["binary", "regression", "multiclass"])
def test_the_scored_file_has_the_services_answer_fields_and_values(line, task, monkeypatch):
    import mlflow
    import mlflow.lightgbm

    root, settings = line
    for key, value in settings.as_env().items():  # what tracking.client_for exports; restored by monkeypatch
        monkeypatch.setenv(key, value)
    name = write_spec(settings.models_dir, task)
    spec = load_spec(name, settings.models_dir)
    data = table()
    model, _ = trainer.fit_and_evaluate(data, spec, dict(spec.training.params))
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    with mlflow.start_run():
        mlflow.lightgbm.log_model(model.booster, name="model", registered_model_name=name)

    rows = data.tail(40).drop(columns=list(TARGETS.values()))
    path = root / f"{name}.csv"
    rows.to_csv(path, index=False)
    result = score_file(name, str(path), "1", root / "scores" / name, settings)
    scored = pd.read_parquet(result.output)

    schema = answer_model(spec)
    served = RoutedScorer(spec, None, None, "1", model.booster).score(rows.reset_index(drop=True))
    http = [a.model_dump() for a in answers(served, [f"q{i}" for i in range(len(rows))], spec, schema)]
    answer_fields = [f for f in schema.model_fields if f != "request_id"]
    assert list(scored.columns) == ["ref", *answer_fields]  # entity id, then the answer's fields in its order
    assert list(scored["ref"]) == list(rows["ref"])
    own = {
        "binary": ["score", "decision"],
        "regression": ["prediction"],
        "multiclass": ["predicted_class", "probabilities"],
    }
    assert answer_fields == [*own[task], "model_version", "reasons"]
    for i, (_, row) in enumerate(scored.iterrows()):
        body = http[i]
        for field in answer_fields:
            value = row[field]
            if field == "reasons":
                value = list(value)
            elif field == "probabilities":
                value = {k: v for k, v in value.items() if v is not None}
                assert value.keys() == set(CLASSES) and body[field] == pytest.approx(value)
                continue
            assert value == (pytest.approx(body[field]) if isinstance(body[field], float) else body[field]), field
    assert scored.notna().all().all()  # no column the task leaves empty
