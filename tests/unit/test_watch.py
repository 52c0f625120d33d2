"""The watch on tables the tests generate (``watch_data``): the label-free estimate against the realised quality,
a moved base rate, the concept check's noise at a window's size, and what moved answers alone mean."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from loopline.monitoring import concept, detection, impact, verdicts
from tests.unit import watch_data as wd


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("watch_models")


# A champion under-confident on unseen rows (its raw scores put the expected AUC ~0.02 low) and one over-confident
# (many leaves on few rows: ~0.01 high), both "well calibrated" by their holdout ECE.
SHAPES = {
    "under": {"rows_a_week": 1_000, "strength": 2.5, "num_leaves": 63, "min_child_samples": 10},
    "over": {"rows_a_week": 1_500, "strength": 4.0, "num_leaves": 63, "min_child_samples": 10},
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_classifier_estimate_is_the_realised_auc_on_the_champions_unseen_rows(folder, shape):
    knobs = dict(SHAPES[shape])
    spec = wd.spec_folder(folder, "binary")
    champion = wd.champion(spec, rows_a_week=knobs.pop("rows_a_week"), strength=knobs.pop("strength"), **knobs)
    assert champion.calibration.describe().startswith("well calibrated")
    estimator = impact.fit_estimator(spec, champion.valid, champion.holdout, champion.calibration)
    unseen = champion.unseen
    assert estimator.reference_quality == pytest.approx(roc_auc_score(unseen["outcome"], unseen["score"]), abs=0.01)
    errors = []
    for seed in range(6):  # fresh rows of the same weeks' kind, each with its realised AUC
        rows = wd.label(wd.inputs(5_000, 300 + seed, week=6), "binary", 300 + seed, strength=SHAPES[shape]["strength"])
        window = champion.answer(rows)
        errors.append(estimator.estimate(window)["auc"] - roc_auc_score(window["outcome"], window["score"]))
    assert np.mean(np.abs(errors)) <= 0.01, errors
    text = " ".join(impact.judge(estimator, unseen, window, spec, spec.monitoring).reasons(spec.monitoring))
    assert "well calibrated" in text and "unseen rows" in text


# --- the concept check: a window's size, a moved base rate ------------------------------------------------------

RARE = -1.5  # a rarer positive class (about 6%): a 600-row window holds some 35 positives, its AUC is noisy


@pytest.fixture(scope="module")
def rare(folder):
    spec = wd.spec_folder(folder, "binary", name="watch_rare")
    return wd.champion(spec, shift=RARE)


def _detector(folder, champion):
    """The champion's detector folder: the drift worker (.venv-drift) fits it there on first use."""
    return folder / "detectors" / champion.spec.name


def _labelled(champion, rows: pd.DataFrame) -> pd.DataFrame:
    return champion.answer(rows).assign(model_version="1")


def test_stable_600_row_labelled_windows_raise_no_concept_alarm_and_a_real_drop_still_does(rare):
    spec, policy = rare.spec, rare.spec.monitoring
    verdicts, drops = [], []
    for seed in range(100):
        window = _labelled(rare, wd.label(wd.inputs(600, 500 + seed, week=6), "binary", 500 + seed, RARE))
        quality = concept.live_quality(window, spec)["1"]
        drops.append(rare.holdout_quality - quality.value)
        verdicts.append(concept.concept_verdict(quality, rare.holdout_quality, policy, spec))
    beyond_tolerance = sum(d > policy.max_quality_drop for d in drops)
    assert beyond_tolerance > 5, "the windows are noisy enough that a fixed tolerance alone false-alarms"
    alarms = [v.reason for v in verdicts if v.confirmed]
    assert len(alarms) <= 5, alarms  # at most the significance's share (p_value 0.05) of 100 stable windows
    assert "sampling noise gives at 600 labelled rows" in verdicts[0].reason
    caught = 0
    rate = float(rare.unseen["outcome"].mean())
    same_rate = float(np.log(rate / (1 - rate))) - wd.BASE_LOGIT
    for seed in range(20):  # the inputs no longer say anything about the outcome (at the same rate): concept drift
        rows = wd.label(wd.inputs(600, 700 + seed, week=6), "binary", 700 + seed, same_rate, strength=0.0)
        quality = concept.live_quality(_labelled(rare, rows), spec)["1"]
        caught += concept.concept_verdict(quality, rare.holdout_quality, policy, spec).confirmed
    assert caught >= 18


# Each task's prior shift: the outcome moved evenly, the inputs as they were (binary: the positive rate 0.154 -> 0.300).
PRIOR = {"binary": None, "multiclass": 0.8, "regression": 0.25}


@pytest.fixture(scope="module", params=sorted(PRIOR))
def model(request, folder):
    task = request.param
    spec = wd.spec_folder(folder, task)
    shift = wd.logit_shift_for(0.154, wd.inputs(20_000, 9)) if task == "binary" else 0.0
    return task, shift, wd.champion(spec, shift=shift)


def _prior_verdict(champion, window: pd.DataFrame) -> concept.ConceptVerdict:
    spec = champion.spec
    quality = concept.live_quality(window, spec)["1"]
    shifts = concept.outcome_shifts(window, champion.unseen, spec, spec.monitoring)
    holdout_se = concept.holdout_se(champion.holdout, spec)
    return concept.concept_verdict(quality, champion.holdout_quality, spec.monitoring, spec, shifts, holdout_se)


def test_a_moved_base_rate_with_the_inputs_unchanged_is_concept_drift(model, folder):
    task, shift, champion = model
    spec, policy = champion.spec, champion.spec.monitoring
    rows = wd.inputs(2_000, 41, week=6)
    moved = wd.logit_shift_for(0.30, rows) if task == "binary" else shift + PRIOR[task]
    window = _labelled(champion, wd.label(rows, task, 41, moved))
    if task == "binary":
        assert window["outcome"].mean() == pytest.approx(0.30, abs=0.03)
        assert champion.unseen["outcome"].mean() == pytest.approx(0.154, abs=0.02)
    verdict = _prior_verdict(champion, window)
    assert verdict.confirmed and verdict.outcomes_moved and verdict.verdict == "concept_drift", verdict.reason
    if task != "regression":  # a regressor's errors grow with a moved mean; a classifier's ranking holds
        assert not verdict.quality_dropped, "the ranking held: the live metric alone does not see a moved base rate"
    label = {"binary": "positive rate", "multiclass": "share", "regression": "mean outcome"}[task]
    assert label in verdict.reason and "moved away from the predictions" in verdict.reason
    assert verdict.to_dict()["outcomes"][0]["text"]
    report = detection.check(_detector(folder, champion), champion.train, window, spec, {}, None, None, policy)
    assert report.verdict == "stable", "the inputs did not move"
    assert verdicts.grade(report, None, verdict) == "concept_drift"


def test_stable_labelled_windows_keep_their_outcomes_where_the_predictions_say(model):
    task, shift, champion = model
    moved = []
    for seed in range(50):
        window = _labelled(champion, wd.label(wd.inputs(600, 900 + seed, week=6), task, 900 + seed, shift))
        verdict = _prior_verdict(champion, window)
        moved += [verdict.reason] if verdict.outcomes_moved else []
    assert len(moved) <= 2, moved  # at most the significance's share of 50 windows


# --- moved answers, held quality ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def binary(folder):
    spec = wd.spec_folder(folder, "binary", name="watch_answers")
    champion = wd.champion(spec)
    return champion, impact.fit_estimator(spec, champion.valid, champion.holdout, champion.calibration)


def _graded(folder, champion, estimator, window: pd.DataFrame, policy) -> tuple[str, impact.Impact]:
    spec = champion.spec
    report = detection.check(
        _detector(folder, champion), champion.train, window, spec, {}, champion.unseen["score"].to_numpy(),
        window["score"].to_numpy(), policy,
    )  # fmt: skip
    effect = impact.judge(estimator, champion.unseen, window, spec, policy)
    return verdicts.grade(report, effect, concept.concept_verdict(None, 0.8, policy, spec)), effect


def test_answers_that_moved_while_quality_holds_are_an_output_shift_that_alerts_and_does_not_retrain(binary, folder):
    champion, estimator = binary
    policy = champion.spec.monitoring
    rows = wd.inputs(2_000, 51, week=6)
    rows["x_debt"] = rows["x_debt"] + 0.5  # more indebted applicants: more declines, the model as good on them
    window = champion.answer(wd.label(rows, "binary", 51))
    verdict, effect = _graded(folder, champion, estimator, window, policy)
    realised = roc_auc_score(window["outcome"], window["score"])
    assert realised > champion.holdout_quality - policy.max_estimated_drop, "realised quality held"
    assert effect.mix_moved and not effect.quality_at_risk
    assert verdict == "output_shift", (verdict, effect.reasons(policy))
    assert verdicts.decide_alert(verdict, wd.T0.to_pydatetime(), [], policy).alert
    wanted, why = verdicts.wants_retrain(verdict, [], policy)
    assert not wanted and "no retrain" in why
    # the spec decides: a team that wants a retrain when its answers move says so
    eager = policy.model_copy(update={"retrain_on": ["output_shift", "performance_risk", "concept_drift"]})
    assert verdicts.wants_retrain(verdict, [], eager)[0]
    assert verdicts.HEADLINES[verdict].startswith("OUTPUT SHIFT")


def test_an_estimated_drop_is_still_a_performance_risk(binary, folder):
    champion, estimator = binary
    policy = champion.spec.monitoring
    rows = wd.inputs(2_000, 52, week=6)
    rows["x_debt"], rows["x_score"] = 0.6, 650.0  # the two inputs that separate most stop varying: ranking is harder
    window = champion.answer(wd.label(rows, "binary", 52))
    verdict, effect = _graded(folder, champion, estimator, window, policy)
    assert effect.quality_at_risk and verdict == "performance_risk", effect.reasons(policy)
    assert verdicts.wants_retrain(verdict, [], policy)[0]


def test_the_spec_takes_output_shift_and_still_refuses_unknown_verdicts(folder):
    import yaml

    from loopline.core.spec import SpecError, load_spec

    spec = wd.spec_folder(folder, "binary", name="watch_policy")
    assert "output_shift" in spec.monitoring.alert_on and "output_shift" not in spec.monitoring.retrain_on
    path = spec.model_dir / "spec.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["monitoring"] = {"alert_on": ["output_shift"], "retrain_on": ["output_shift", "concept_drift"]}
    path.write_text(yaml.safe_dump(raw))
    assert load_spec("watch_policy", folder).monitoring.retrain_on == ["output_shift", "concept_drift"]
    raw["monitoring"]["retrain_on"] = ["answers_moved"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="retrain_on"):
        load_spec("watch_policy", folder)


# --- the report ---------------------------------------------------------------------------------------------------


def test_the_report_shows_signed_moves_with_where_each_input_was_and_is_and_escapes_every_value(binary, folder):
    import ast
    import inspect
    import re

    from loopline.monitoring import report_page

    champion, estimator = binary
    spec, policy = champion.spec, champion.spec.monitoring
    rows = wd.inputs(3_000, 61, week=6)
    rows["x_income"] = rows["x_income"] * 0.7  # incomes fall
    rows["x_kind"] = np.where(np.arange(len(rows)) % 2 == 0, "d", rows["x_kind"])  # half the rows become "d"
    window = champion.answer(wd.label(rows, "binary", 61))
    report = detection.check(
        _detector(folder, champion), champion.train, window, spec, {}, champion.unseen["score"].to_numpy(),
        window["score"].to_numpy(), policy,
    )  # fmt: skip
    income = next(f for f in report.features if f.name == "x_income")
    assert income.drifted and income.signed_shift < -0.2 and income.current_mean < income.reference_mean
    assert income.current_median == pytest.approx(float(np.median(rows["x_income"])))
    assert "mean -" in detection.effect_text(income) and " → " in detection.effect_text(income)
    kind = next(f for f in report.features if f.name == "x_kind")
    level, before, after = kind.level_shares()[0]
    assert level == "d" and before == pytest.approx(0.1, abs=0.02) and after == pytest.approx(0.55, abs=0.03)
    assert "d 10% → 55% (+45 points)" in detection.effect_text(kind)
    assert report.feature_rows()[0]["signed_shift"] is not None

    # p-values that underflow (alibi-detect's float32) and a context value with markup: escaped, never raw
    underflowed = [f if f.name != "x_income" else type(f)(**{**f.__dict__, "p_value": 0.0}) for f in report.features]
    report = type(report)(**{**report.__dict__, "features": tuple(underflowed)})
    labelled = _labelled(champion, wd.label(rows, "binary", 61, shift=1.0))
    judged = _prior_verdict(champion, labelled)
    page = report_page.render_html(
        report, context={"note": "<script>alert(1)</script>"}, verdict="concept_drift",
        impact=impact.judge(estimator, champion.unseen, window, spec, policy), concept=judged,
    )  # fmt: skip
    text = re.sub(r"<svg.*?</svg>", "", page, flags=re.S)
    assert "< 1e-38" not in text and "&lt; 1e-38" in text and "<script>" not in text
    assert "&lt;script&gt;" in text
    tags = set(re.findall(r"</?([a-zA-Z0-9]+)", text))
    assert tags <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "span", "table", "thead",
                    "tbody", "tr", "th", "td", "ul", "li", "div", "svg"}, tags  # fmt: skip
    assert "mean 4" in text and "d 10% → 55%" in text and "SD</td>" in text and "-0." in text
    assert "positive rate" in text and "MOVED" in text and "Labels: realised quality and outcomes" in text

    # layering: the report depends on detection, never the reverse
    tree = ast.parse(inspect.getsource(detection))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "loopline.monitoring.report_page" not in imported and not hasattr(detection.DriftReport, "to_html")


def test_the_multiclass_estimate_is_the_realised_accuracy_on_the_champions_unseen_rows(folder):
    from loopline.core.tasks import task_of

    spec = wd.spec_folder(folder, "multiclass", name="watch_classes")
    champion = wd.champion(spec, strength=3.0, num_leaves=31, min_child_samples=10)
    estimator = impact.fit_estimator(spec, champion.valid, champion.holdout, champion.calibration)
    realised = task_of(spec).live_quality(champion.unseen, spec)
    assert estimator.method == "expected accuracy" and len(spec.dataset.classes) == 7
    assert estimator.reference_quality == pytest.approx(realised, abs=0.01)
