"""Task types (loopline.core.tasks): what each one trains, measures, answers and watches, on real models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loopline.core.settings import get_settings
from loopline.core.spec import load_spec
from loopline.core.tasks import TASKS, LabelError, categorical_psi, smape
from loopline.ops.demo_data import load_generator
from loopline.ops.onboarding import onboard
from loopline.serving.online import RoutedScorer
from loopline.serving.request_schema import answer_model, answers
from loopline.serving.scoring import score_frame
from loopline.training import trainer
from tests.unit.test_onboarding import ticket_table

DELIVERY = load_spec("delivery_time", get_settings().models_dir)
CREDIT = load_spec("credit_risk", get_settings().models_dir)


@pytest.fixture(scope="module")
def delivery():
    generator = load_generator(DELIVERY.model_dir)
    frame = pd.concat([generator.make_batch(w, 1200, seed=2) for w in range(5)], ignore_index=True)
    model, metrics = trainer.fit_and_evaluate(frame, DELIVERY, dict(DELIVERY.training.params))
    return generator, frame, model, metrics


@pytest.fixture(scope="module")
def tickets(tmp_path_factory):
    root = tmp_path_factory.mktemp("tickets")
    table = ticket_table(n=2352, seed=1)  # 14 whole weeks: the holdout is a full week
    table.head(400).to_csv(root / "sample.csv", index=False)
    onboard("tickets", root / "sample.csv", "priority", "opened", "ticket", root / "models", root / "expectations")
    spec = load_spec("tickets", root / "models")
    model, metrics = trainer.fit_and_evaluate(table, spec, dict(spec.training.params))
    return spec, table, model, metrics


def test_a_regression_model_learns_minutes_and_reports_regression_metrics(delivery):
    _, _, model, metrics = delivery
    assert set(metrics) >= set(TASKS["regression"].metrics)
    assert metrics["r2"] > 0.8 and 0 < metrics["smape"] < 0.2 and 0 < metrics["mae"] < metrics["rmse"] < 8
    assert model.params["objective"] == "regression" and model.params["metric"] == "l2"


def test_a_regression_answer_is_the_prediction_with_reasons_in_either_direction(delivery):
    _, frame, model, _ = delivery
    scored = score_frame(model.booster, frame.head(20), DELIVERY)
    assert scored["decision"].isna().all() and "probabilities" not in scored
    np.testing.assert_allclose(scored["score"], trainer.predict_scores(model.booster, frame.head(20), DELIVERY))
    contributions = model.booster.predict(
        trainer.build_features(frame.head(20), DELIVERY), pred_contrib=True, num_iteration=model.best_iteration
    )[:, :-1]
    names = list(trainer.build_features(frame.head(1), DELIVERY).columns)
    raw = [*DELIVERY.features.numeric, *DELIVERY.features.categorical]
    for row, reasons in enumerate(scored["reasons"]):
        # What moved this prediction most, up or down, in fields of the request: a derived
        # input's share goes to the raw inputs it is built from (congested_km: distance, traffic).
        by_raw = dict.fromkeys(raw, 0.0)
        for name, value in zip(names, np.abs(contributions[row]), strict=True):
            sources = {"congested_km": ("distance_km", "traffic_index"), "rush_hour": ("order_hour",)}.get(
                name, (name,)
            )
            for source in sources:
                by_raw[source] += value / len(sources)
        assert set(reasons) <= set(raw) and len(reasons) == 3
        assert reasons == sorted(by_raw, key=lambda k: -by_raw[k])[:3]
    served = RoutedScorer(DELIVERY, None, None, "1", model.booster).score(frame.head(20))
    rows = answers(served, [f"r{i}" for i in range(20)], DELIVERY, answer_model(DELIVERY))
    assert set(rows[0].model_dump()) == {"request_id", "prediction", "model_version", "reasons"}
    for r in rows:  # built without validation: each must still be what the schema accepts
        assert answer_model(DELIVERY).model_validate(r.model_dump()).model_dump() == r.model_dump()


def test_a_multiclass_model_answers_a_class_with_probabilities(tickets):
    spec, table, model, metrics = tickets
    assert set(metrics) >= {"log_loss", "accuracy", "macro_f1"} and metrics["accuracy"] > 0.5 and metrics["rows"] > 100
    assert model.params["num_class"] == 4 and model.params["objective"] == "multiclass"
    scored = score_frame(model.booster, table.tail(50), spec)
    for _, row in scored.iterrows():
        probabilities = row["probabilities"]
        assert list(probabilities) == spec.dataset.classes and abs(sum(probabilities.values()) - 1) < 1e-9
        assert row["decision"] == max(probabilities, key=probabilities.get)
        assert row["score"] == pytest.approx(probabilities[row["decision"]])
    served = RoutedScorer(spec, None, None, "3", model.booster).score(table.tail(50))
    assert served.frame[["score", "decision"]].equals(scored[["score", "decision"]])  # one path, one answer
    body = answers(served, [f"r{i}" for i in range(50)], spec, answer_model(spec))[0]
    assert set(body.model_dump()) == {"request_id", "predicted_class", "probabilities", "model_version", "reasons"}
    assert answer_model(spec).model_validate(body.model_dump()).model_dump() == body.model_dump()  # built unvalidated


def test_multiclass_reasons_explain_the_predicted_class(tickets):
    spec, table, model, _ = tickets
    rows = table.tail(10)
    raw = model.booster.predict(trainer.build_features(rows, spec), num_iteration=model.best_iteration)
    contributions = model.booster.predict(
        trainer.build_features(rows, spec), pred_contrib=True, num_iteration=model.best_iteration
    )
    explained = TASKS["multiclass"].explained(contributions, raw, spec)
    blocks = contributions.reshape(len(rows), 4, -1)
    for i, best in enumerate(raw.argmax(axis=1)):
        np.testing.assert_array_equal(explained[i], blocks[i, best, :-1])


@pytest.mark.parametrize(
    "spec_name,values,message",
    [
        ("credit_risk", [0, 1, 2], "must be 0 or 1"),
        ("delivery_time", [12.5, None], "must be a finite number"),
        ("delivery_time", [12.5, "soon"], "must be a finite number"),
    ],
)
def test_labels_the_task_cannot_use_are_named(spec_name, values, message):
    spec = CREDIT if spec_name == "credit_risk" else DELIVERY
    with pytest.raises(LabelError, match=message):
        TASKS[spec.task].labels(pd.Series(values, dtype=object), spec)


def test_multiclass_labels_are_class_indices_and_unknown_classes_are_named(tickets):
    spec = tickets[0]
    task = TASKS["multiclass"]
    assert task.labels(pd.Series(["low", "urgent", "high"]), spec).tolist() == [1, 3, 0]
    with pytest.raises(LabelError, match=r"not in dataset.classes .*\['critical'\]"):
        task.labels(pd.Series(["low", "critical"]), spec)


def test_live_quality_and_its_direction_per_task(tickets):
    spec = tickets[0]
    regression, multiclass = TASKS["regression"], TASKS["multiclass"]
    labelled = pd.DataFrame({"score": [10.0, 20.0], "outcome": [10.0, 30.0], "decision": [None, None]})
    assert regression.live_quality(labelled, DELIVERY) == pytest.approx(smape(np.array([10, 30]), np.array([10, 20])))
    assert regression.quality_drop(0.30, 0.20) == pytest.approx(0.10)  # sMAPE: higher is worse
    classes = pd.DataFrame({"decision": ["low", "high", "low"], "outcome": [1.0, 1.0, 1.0], "score": [0.9] * 3})
    assert multiclass.live_quality(classes, spec) == pytest.approx(2 / 3)
    assert multiclass.quality_drop(0.70, 0.80) == pytest.approx(0.10)  # accuracy: lower is worse


def test_output_shift_per_task():
    same = pd.DataFrame({"score": np.linspace(10, 50, 500), "decision": ["a", "b"] * 250})
    moved = pd.DataFrame({"score": np.linspace(30, 70, 500), "decision": ["a"] * 400 + ["b"] * 100})
    assert TASKS["regression"].output_shift(same, same) < 0.01 < 1 < TASKS["regression"].output_shift(same, moved)
    assert TASKS["multiclass"].output_shift(same, same) == 0
    assert TASKS["multiclass"].output_shift(same, moved) == pytest.approx(
        categorical_psi(same["decision"], moved["decision"])
    )
    assert TASKS["multiclass"].output_test(same, moved) < 1e-6


def test_smape_is_scale_free_and_finite_at_zero():
    truth, predicted = np.array([0.0, 10.0, 100.0]), np.array([0.0, 11.0, 110.0])
    assert smape(truth, predicted) == pytest.approx(smape(truth * 1000, predicted * 1000))
    assert np.isfinite(smape(np.zeros(3), np.zeros(3))) and smape(np.zeros(3), np.zeros(3)) == 0


def test_stored_targets_keep_missing_outcomes_and_pass_a_type_check(tmp_path):
    from loopline.ingestion.validation import validate_frame

    stored = TASKS["regression"].stored_target(pd.Series(["12.5", None, "7"]))
    assert stored.dtype == "float64" and stored.isna().tolist() == [False, True, False]
    suite = {"name": "t", "expectations": [{"type": "expect_column_values_to_be_in_type_list",
             "kwargs": {"column": "y", "type_list": ["float64"]}}]}  # fmt: skip
    (tmp_path / "t.json").write_text(__import__("json").dumps(suite))
    assert validate_frame(pd.DataFrame({"y": stored}), "s", "t", tmp_path, entity_id=None).success
    classes = TASKS["multiclass"].stored_target(pd.Series([1.0, None, 3.0]))
    assert classes.tolist()[0] == "1" and classes.isna().tolist() == [False, True, False]
    labels = TASKS["multiclass"].stored_target(pd.Series(["high", "low"], dtype=object))  # none missing
    assert labels.tolist() == ["high", "low"] and str(labels.dtype) == "string"


@pytest.mark.parametrize(
    ("params", "transform"),
    [
        ({"objective": "binary"}, "sigmoid"),
        ({"objective": "binary", "sigmoid": 2.0}, "sigmoid"),
        ({"objective": "regression"}, "identity"),
        ({"objective": "huber"}, "identity"),
        ({"objective": "multiclass", "num_class": 3}, "softmax"),
        ({"objective": "poisson"}, None),  # exp of the raw score: predict is asked, not derived
        ({"objective": "binary", "boosting": "rf", "bagging_freq": 1, "bagging_fraction": 0.8}, None),
    ],
)
def test_the_prediction_from_contributions_is_what_predict_answers(params, transform, tmp_path):
    import lightgbm as lgb

    from loopline.serving.scoring import _output_of_raw, _predicted

    rng = np.random.default_rng(3)
    x = rng.random((600, 5))
    y = {"multiclass": (x[:, 0] * 3).astype(int), "binary": (x[:, 0] + x[:, 1] > 1).astype(int)}.get(
        params["objective"], np.exp(x[:, 0])
    )
    trained = lgb.train({**params, "verbose": -1}, lgb.Dataset(x, y), 30)
    trained.save_model(tmp_path / "model.txt")
    for booster in (trained, lgb.Booster(model_file=str(tmp_path / "model.txt"))):  # in memory and as served
        assert (_output_of_raw(booster) or (None,))[0] == transform
        contributions = booster.predict(x, pred_contrib=True)
        np.testing.assert_allclose(_predicted(booster, x, contributions, None, 1), booster.predict(x), atol=1e-12)
