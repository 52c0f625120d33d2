"""The impact on the model and the graded verdicts: estimates against known labels, one scenario per verdict.

A small champion is trained on generated credit-risk data; its validation and holdout weeks
(labels known) are the estimator's reference, as in the drift DAG. Regression uses the
delivery_time model folder's own generator.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from loopline.core.features import build_features, categorical_columns
from loopline.core.spec import DriftPolicy, SpecError, load_spec
from loopline.core.tasks import smape, task_of
from loopline.monitoring import concept, detection, impact, verdicts
from loopline.monitoring.monitoring_state import DriftCheck
from loopline.ops import ui
from loopline.ops.demo_data import load_generator
from loopline.serving.scoring import score_frame
from loopline.training.trainer import feature_importance
from tests.generators import credit_risk as gen
from tests.unit.test_tasks import tickets  # noqa: F401 (the multiclass fixture)

MODELS = Path(__file__).resolve().parents[2] / "models"
SPEC = load_spec("credit_risk", MODELS)
POLICY = SPEC.monitoring
T0 = datetime(2026, 3, 2, tzinfo=UTC)


def _answered(booster, rows: pd.DataFrame, spec, target: str) -> pd.DataFrame:
    scored = score_frame(booster, rows[spec.features.names], spec, num_threads=1)
    out = rows.reset_index(drop=True).assign(score=scored["score"].to_numpy(), decision=scored["decision"].to_numpy())
    return out.assign(outcome=rows[target].to_numpy(float))


@pytest.fixture(scope="module")
def line(tmp_path_factory):
    """Champion, its detector and estimator: what drift_flow.check builds from the champion's splits.

    The detector is a folder the drift worker (.venv-drift) fits once here and loads at each check.
    """
    train = pd.concat([gen.make_batch(w, 5_000, seed=w) for w in range(3)], ignore_index=True)
    features = build_features(train, SPEC)
    data = lgb.Dataset(features, label=train["defaulted"], categorical_feature=categorical_columns(SPEC))
    params = {"objective": "binary", "learning_rate": 0.1, "num_leaves": 15, "verbosity": -1, "num_threads": 1}
    booster = lgb.train({**params, "deterministic": True, "seed": 1}, data, 80)
    valid = _answered(booster, gen.make_batch(3, 3_000, seed=30), SPEC, "defaulted")
    holdout = _answered(booster, gen.make_batch(4, 3_000, seed=40), SPEC, "defaulted")
    estimator = impact.fit_estimator(SPEC, valid, holdout)
    detector = tmp_path_factory.mktemp("detectors") / "v1"
    detection.run_detector(detector, train, SPEC, POLICY.p_value)
    return {
        "booster": booster, "train": train, "unseen": pd.concat([valid, holdout], ignore_index=True),
        "estimator": estimator, "detector": detector, "importances": feature_importance(booster),
    }  # fmt: skip


def _window(line, batch: pd.DataFrame) -> pd.DataFrame:
    return _answered(line["booster"], batch, SPEC, "defaulted")


def _grade(line, window: pd.DataFrame, policy: DriftPolicy = POLICY) -> tuple[str, impact.Impact]:
    report = detection.check(
        line["detector"], line["train"], window, SPEC, line["importances"], line["unseen"]["score"].to_numpy(),
        window["score"].to_numpy(), policy,
    )  # fmt: skip
    effect = impact.judge(line["estimator"], line["unseen"], window, SPEC, policy)
    no_labels = concept.concept_verdict(None, 0.8, policy, SPEC)
    return verdicts.grade(report, effect, no_labels), effect


# --- the estimators --------------------------------------------------------------------------------


def test_expected_auc_is_the_auc_when_outcomes_follow_the_probabilities():
    rng = np.random.default_rng(3)
    p = rng.beta(1, 4, 200_000)
    y = rng.random(len(p)) < p
    assert impact.expected_auc(p, p) == pytest.approx(roc_auc_score(y, p), abs=0.005)
    assert impact.expected_auc(np.array([0.5]), np.array([0.5])) is None


def test_cbpe_estimates_live_auc_within_0_02_on_stable_and_shifted_windows(line):
    for batch in (gen.make_batch(6, 3_000, seed=61), gen.make_batch(6, 3_000, seed=62, drift=gen.DriftKnobs(1.0))):
        window = _window(line, batch)
        estimated = line["estimator"].estimate(window)["auc"]
        assert estimated == pytest.approx(roc_auc_score(window["outcome"], window["score"]), abs=0.02)
    assert line["estimator"].method == "CBPE" and line["estimator"].calibration_error < 0.05


def test_a_poorly_calibrated_champion_is_calibrated_first_and_says_so(line):
    def squash(rows):  # the same ranking, probabilities pushed towards 0.5: badly calibrated
        return rows.assign(score=0.5 + (rows["score"] - 0.5) * 0.3)

    valid, holdout = squash(line["unseen"].iloc[:3000]), squash(line["unseen"].iloc[3000:])
    estimator = impact.fit_estimator(SPEC, valid, holdout)
    assert estimator.calibrated and estimator.calibration_error > impact.CALIBRATION_LIMIT
    window = squash(_window(line, gen.make_batch(6, 3_000, seed=63)))
    realised = roc_auc_score(window["outcome"], window["score"])
    assert estimator.estimate(window)["auc"] == pytest.approx(realised, abs=0.03)
    reasons = " ".join(impact.judge(estimator, holdout, window, SPEC, POLICY).reasons(POLICY))
    assert "calibration: isotonic on validation (holdout ECE" in reasons and "fitted at check time" in reasons


@pytest.fixture(scope="module")
def regressor():
    """A delivery_time champion and its DLE estimator, from the model folder's own generator."""
    spec = load_spec("delivery_time", MODELS)
    generator = load_generator(MODELS / "delivery_time")
    target = spec.dataset.target
    train = pd.concat([generator.make_batch(w, 4_000, seed=w) for w in range(3)], ignore_index=True)
    data = lgb.Dataset(build_features(train, spec), label=train[target], categorical_feature=categorical_columns(spec))
    params = {"objective": "regression", "verbosity": -1, "num_threads": 1, "deterministic": True, "seed": 1}
    booster = lgb.train(params, data, 80)
    valid = _answered(booster, generator.make_batch(3, 3_000, seed=30), spec, target)
    holdout = _answered(booster, generator.make_batch(4, 3_000, seed=40), spec, target)
    return {
        "spec": spec, "generator": generator, "booster": booster, "valid": valid, "holdout": holdout,
        "estimator": impact.fit_estimator(spec, valid, holdout),
        "answer": lambda rows: _answered(booster, rows, spec, target),
    }  # fmt: skip


def test_dle_estimates_live_smape_and_mae_of_a_regressor(regressor):
    spec, generator, booster = regressor["spec"], regressor["generator"], regressor["booster"]
    valid, holdout, estimator = regressor["valid"], regressor["holdout"], regressor["estimator"]
    target = spec.dataset.target
    assert estimator.method == "DLE"
    window = _answered(booster, generator.make_batch(6, 3_000, seed=61), spec, target)
    realised = smape(window["outcome"], window["score"])
    estimated = estimator.estimate(window)
    assert estimated["smape"] == pytest.approx(realised, abs=0.02)
    mae = float(np.mean(np.abs(window["outcome"] - window["score"])))
    assert estimated["mae"] == pytest.approx(mae, rel=0.05)  # minutes: what NannyML's DLE estimates
    assert set(estimator.reference_estimates) == {"smape", "mae"}
    effect = impact.judge(estimator, pd.concat([valid, holdout]), window, spec, spec.monitoring)
    assert effect.metric == "smape" and effect.extra == {"mae": estimated["mae"]}  # the verdict judges the sMAPE
    assert f"estimated MAE {estimated['mae']:.3g} against" in " ".join(effect.reasons(spec.monitoring))
    shown = ui._estimated_vs_realised(effect.to_dict())
    assert shown.startswith("SMAPE") and f"MAE {estimated['mae']:.3g} est." in shown
    empty = estimator.estimate(window.iloc[:0])
    assert set(empty) == {"smape", "mae"} and all(np.isnan(v) for v in empty.values())


def _blank(rows: pd.DataFrame, column: str, share: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return rows.assign(**{column: rows[column].where(rng.uniform(size=len(rows)) >= share)})


def test_an_input_gone_missing_is_costed_on_the_unseen_rows_where_the_estimators_cannot_see_it(regressor):
    spec, policy, generator = regressor["spec"], regressor["spec"].monitoring, regressor["generator"]
    unseen = pd.concat([regressor["valid"], regressor["holdout"]], ignore_index=True)
    importance = feature_importance(regressor["booster"])
    top = max(spec.features.numeric, key=lambda c: importance.get(c, 0.0))
    # Labels follow the inputs as they were; then the upstream system stops sending 40% of the top input.
    window = regressor["answer"](_blank(generator.make_batch(6, 2_000, seed=62), top, 0.4, seed=1))
    realised_drop = smape(window["outcome"], window["score"]) - smape(unseen["outcome"], unseen["score"])
    effect = impact.judge(regressor["estimator"], unseen, window, spec, policy, answer=regressor["answer"])
    assert set(effect.missing.shares) == {top}
    assert effect.missing.shares[top][1] == pytest.approx(0.4, abs=0.03)
    assert effect.missing.drop == pytest.approx(realised_drop, abs=0.03)  # measured, not estimated
    assert effect.drop < effect.missing.drop / 2, "the DLE alone misses most of it (why the what-if exists)"
    assert effect.quality_at_risk and effect.missing.drop > policy.max_estimated_drop
    reasons = " ".join(effect.reasons(policy))
    assert f"{top} 40% missing against 0%" in reasons and "beyond the" in reasons and "re-scored" in reasons
    assert f"with {top} 40% missing: SMAPE" in ui._estimated_vs_realised(effect.to_dict())
    # Without the champion to re-score with, the judgement is the estimators' alone (as before).
    assert impact.judge(regressor["estimator"], unseen, window, spec, policy).missing is None


def test_a_missing_input_the_model_barely_uses_costs_nothing_and_unknown_levels_count_as_missing(line):
    answer = lambda rows: _window(line, rows)  # noqa: E731
    batch = gen.make_batch(6, 1_000, seed=74)
    batch["region"] = np.where(np.arange(len(batch)) % 3 == 0, "central", batch["region"])  # not a level in the spec
    window = _window(line, _blank(batch, "num_open_accounts", 0.3, seed=2))
    effect = impact.judge(line["estimator"], line["unseen"], window, SPEC, POLICY, answer=answer)
    assert set(effect.missing.shares) == {"region", "num_open_accounts"}
    assert effect.missing.shares["region"][1] == pytest.approx(1 / 3, abs=0.01)
    assert abs(effect.missing.drop) < 0.02 and not effect.quality_at_risk
    stable = impact.judge(line["estimator"], line["unseen"], _window(line, gen.make_batch(6, 1_000, seed=75)), SPEC,
                          POLICY, answer=answer)  # fmt: skip
    assert stable.missing is None, "no input is missing more often: nothing is re-scored"


def test_a_multiclass_champion_is_costed_by_its_accuracy(tickets):  # noqa: F811
    from loopline.training import trainer

    spec, table, model, _ = tickets
    split = trainer.time_split(trainer.labelled(table, spec), spec)
    answer = lambda rows: rows.reset_index(drop=True).assign(**trainer.answers(model.booster, rows, spec))  # noqa: E731
    unseen = answer(pd.concat([split.valid, split.holdout]))
    weights = detection.feature_weights(feature_importance(model.booster), spec)
    top = max(spec.features.names, key=lambda c: weights[c])
    window = answer(_blank(pd.concat([split.valid, split.holdout]), top, 0.5, seed=3))
    estimator = impact.fit_estimator(spec, answer(split.valid), answer(split.holdout))
    effect = impact.judge(estimator, unseen, window, spec, spec.monitoring, answer=answer)
    assert effect.metric == "accuracy" and set(effect.missing.shares) == {top}
    realised = task_of(spec).quality_drop(
        task_of(spec).live_quality(window, spec), task_of(spec).live_quality(unseen, spec)
    )
    assert effect.missing.drop > 0 and effect.missing.drop == pytest.approx(realised, abs=0.05)


def test_the_loss_terms_average_to_their_metric():
    truth, predicted = np.array([10.0, 20.0, 0.0]), np.array([12.0, 15.0, 0.0])
    assert impact.loss_terms("mae", truth, predicted).mean() == pytest.approx(7 / 3)
    assert impact.loss_terms("smape", truth, predicted).mean() == pytest.approx(smape(truth, predicted))
    with pytest.raises(ValueError, match="no per-row loss"):
        impact.loss_terms("r2", truth, predicted)


# --- one scenario per verdict ----------------------------------------------------------------------


def test_stable_windows_are_stable_and_never_alert(line):
    graded = [_grade(line, _window(line, gen.make_batch(5 + i % 4, 1_000, seed=200 + i)))[0] for i in range(50)]
    assert graded.count("stable") >= 49 and "performance_risk" not in graded, graded


def test_a_shift_of_important_inputs_that_moves_the_answers_is_an_output_shift_in_one_window(line):
    verdict, effect = _grade(line, _window(line, gen.make_batch(6, 1_000, seed=71, drift=gen.DriftKnobs(0.6))))
    assert verdict == "output_shift" and not effect.quality_at_risk  # the answers moved, quality estimated to hold
    assert effect.mix_moved and any(c.moved and c.label.endswith("share") for c in effect.mix)
    assert verdicts.wants_retrain(verdict, [], POLICY)[0], "the demo spec retrains on output_shift"
    assert not verdicts.wants_retrain(verdict, [], DriftPolicy())[0], "the platform's default only alerts"
    assert "the answers' mix moved" in " ".join(effect.reasons(POLICY))


def test_a_moved_input_the_model_ignores_is_feature_drift_and_asks_for_no_retrain(line):
    batch = gen.make_batch(6, 1_000, seed=72)
    batch["region"] = np.where(np.arange(len(batch)) % 2 == 0, "south", batch["region"])
    verdict, effect = _grade(line, _window(line, batch))
    assert verdict == "feature_drift" and not effect.at_risk
    wanted, why = verdicts.wants_retrain(verdict, [], POLICY)
    assert not wanted and "no retrain" in why


def test_too_little_traffic_is_insufficient(line):
    assert _grade(line, _window(line, gen.make_batch(6, 100, seed=73, drift=gen.DriftKnobs(1.0))))[0] == "insufficient"


def test_dropped_realised_quality_is_concept_drift(line):
    window = _window(line, gen.make_batch(6, 1_000, seed=74))
    report = detection.check(line["detector"], line["train"], window, SPEC, line["importances"], None, None, POLICY)
    quality = concept.LiveQuality("1", 1_000, "auc", 0.6, 0.2, 0.2)
    dropped = concept.concept_verdict(quality, 0.8, POLICY, SPEC)
    assert verdicts.grade(report, None, dropped) == "concept_drift"


# --- alerts once per episode, retrains after N windows --------------------------------------------


def _check(hours: float, verdict: str, alerted: bool = False) -> DriftCheck:
    return DriftCheck(
        id=int(hours), at=T0 + timedelta(hours=hours), model="m", champion_version="1", n_rows=900,
        verdict=verdict, confirmed=False, triggered=False, trigger_reason="", drift_share=0.0, score_psi=0.0,
        report_uri=None, features=[], dag_run=None, alerted=alerted,
    )  # fmt: skip


def test_an_episode_alerts_when_it_starts_then_only_a_daily_reminder():
    history: list[DriftCheck] = [_check(0, "stable")]
    sent = []
    for hour in range(1, 49):  # two days of hourly performance_risk checks, a quiet night in between
        verdict = "insufficient" if 10 <= hour < 14 else "performance_risk"
        decision = verdicts.decide_alert(verdict, T0 + timedelta(hours=hour), list(reversed(history)), POLICY)
        if decision.alert:
            sent.append((hour, decision.reason))
        history.append(_check(hour, verdict, decision.alert))
    assert [h for h, _ in sent] == [1, 25], sent
    assert "starts after stable" in sent[0][1] and sent[1][1].startswith("reminder")
    changed = verdicts.decide_alert("concept_drift", T0 + timedelta(hours=49), list(reversed(history)), POLICY)
    assert changed.alert and "after performance_risk" in changed.reason  # worse than anything the episode alerted
    assert not verdicts.decide_alert("stable", T0 + timedelta(hours=50), list(reversed(history)), POLICY).alert


def test_a_window_flipping_between_two_verdicts_alerts_when_it_gets_worse_not_at_every_flip():
    history: list[DriftCheck] = [_check(0, "stable")]
    sent = []
    for hour in range(1, 21):  # near a tolerance: feature_drift, performance_risk, feature_drift, ...
        verdict = "feature_drift" if hour % 2 else "performance_risk"
        decision = verdicts.decide_alert(verdict, T0 + timedelta(hours=hour), list(reversed(history)), POLICY)
        sent += [(hour, decision.reason)] if decision.alert else []
        history.append(_check(hour, verdict, decision.alert))
    assert [h for h, _ in sent] == [1, 2], sent  # the episode starts, then gets worse; the flips are not news
    assert "worse since" in sent[1][1] and "alerted so far: feature_drift" in sent[1][1]
    quiet = verdicts.decide_alert("feature_drift", T0 + timedelta(hours=21), list(reversed(history)), POLICY)
    assert not quiet.alert and "alerted performance_risk" in quiet.reason and "next reminder" in quiet.reason
    history.append(_check(21, "stable"))  # the episode ends; the next moved window is a new one
    again = verdicts.decide_alert("feature_drift", T0 + timedelta(hours=22), list(reversed(history)), POLICY)
    assert again.alert and "starts after stable" in again.reason


def test_a_retrain_waits_for_min_consecutive_windows():
    policy = POLICY.model_copy(update={"min_consecutive_windows": 3})
    one = [_check(1, "stable")]
    assert not verdicts.wants_retrain("performance_risk", one, policy)[0]
    two = [_check(2, "performance_risk"), _check(1, "stable")]
    assert not verdicts.wants_retrain("performance_risk", two, policy)[0]
    three = [_check(3, "performance_risk"), _check(2, "insufficient"), _check(1, "concept_drift")]
    assert verdicts.wants_retrain("performance_risk", three, policy)[0]


def test_the_policy_names_only_verdicts_that_can_alert_or_retrain(tmp_path):
    import yaml

    folder = tmp_path / "credit_risk"
    folder.mkdir()
    raw = yaml.safe_load((MODELS / "credit_risk" / "spec.yaml").read_text())
    raw["monitoring"]["retrain_on"] = ["feature_drift", "drift"]
    (folder / "spec.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="retrain_on"):
        load_spec("credit_risk", tmp_path)
