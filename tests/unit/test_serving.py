"""RoutedScorer: champion + canary routing and hot swaps, with real boosters and a real state store."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import pandas as pd
import pytest

from loopline.core.features import build_features
from loopline.core.serving_state import Route, ServingState
from loopline.core.spec import load_spec
from loopline.ingestion.ingest import normalise
from loopline.serving.online import RoutedScorer
from loopline.training import trainer as training
from tests.generators import credit_risk as datagen

SPEC = load_spec("credit_risk", Path(__file__).resolve().parents[2] / "models")


@pytest.fixture(scope="module")
def boosters():
    frame = pd.concat([normalise(datagen.make_batch(w, 400, seed=5), SPEC) for w in range(4)], ignore_index=True)
    params = {**SPEC.training.params, "seed": 1, "num_boost_round": 40}
    one = training.fit_and_evaluate(frame, SPEC, params)[0].booster
    two = training.fit_and_evaluate(frame, SPEC, {**params, "num_leaves": 4})[0].booster
    # A model trained on another feature layout: LightGBM refuses its inputs (a broken challenger).
    features = build_features(frame, SPEC).drop(columns=["region"])
    broken = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(features, frame["defaulted"]), 5)
    return {"1": one, "2": two, "3": one, "4": broken}


@pytest.fixture
def setup(tmp_path, boosters):
    loads = []

    def load(version: str):
        loads.append(version)
        return boosters[version]

    state = ServingState(f"sqlite:///{tmp_path / 'state.db'}")
    scorer = RoutedScorer(SPEC, load, state, pinned_version="3", pinned_booster=boosters["3"])
    return scorer, state, loads


def requests_frame(n: int = 2000) -> pd.DataFrame:
    return datagen.make_batch(50, n_rows=n, seed=6).drop(columns=["applied_at", "defaulted"])


def test_without_a_stored_route_the_pinned_model_serves(setup):
    scorer, _, loads = setup
    assert scorer.refresh() is False
    out = scorer.score(requests_frame(10)).frame
    assert set(out["model_version"]) == {"3"} and set(out["arm"]) == {"champion"} and loads == []


def test_canary_split_stickiness_and_order(setup):
    scorer, state, loads = setup
    state.change(Route("credit_risk", champion_version="1"), "first_champion", "t", "t")
    state.change(Route("credit_risk", "1", "2", 0.5, revision=1), "canary_step", "t", "t")
    assert scorer.refresh() is True and sorted(loads) == ["1", "2"]
    frame = requests_frame()
    out = scorer.score(frame).frame
    assert list(out.index) == list(frame.index)
    share = (out["arm"] == "canary").mean()
    assert 0.45 < share < 0.55
    assert (out.loc[out["arm"] == "canary", "model_version"] == "2").all()
    again = scorer.score(frame.sample(frac=1.0, random_state=0)).frame
    assert (again["model_version"] == out.loc[again.index, "model_version"]).all()  # sticky per applicant


def test_an_unchanged_revision_loads_nothing_and_a_rollback_swaps_at_once(setup):
    scorer, state, loads = setup
    state.change(Route("credit_risk", champion_version="1"), "first_champion", "t", "t")
    scorer.refresh()
    assert scorer.refresh() is False and loads == ["1"]
    state.change(Route("credit_risk", "1", "2", 1.0, revision=1), "canary_step", "t", "t")
    scorer.refresh()
    assert set(scorer.score(requests_frame(50)).frame["model_version"]) == {"2"}
    state.change(Route("credit_risk", "1", None, 0.0, revision=2), "rollback", "t", "bad canary")
    scorer.refresh()
    assert set(scorer.score(requests_frame(50)).frame["model_version"]) == {"1"}


def test_a_failing_canary_falls_back_to_the_champion_and_is_counted(setup):
    scorer, state, _ = setup
    state.change(Route("credit_risk", champion_version="1"), "first_champion", "t", "t")
    state.change(Route("credit_risk", "1", "4", 0.3, revision=1), "canary_step", "t", "t")
    scorer.refresh()
    scored = scorer.score(requests_frame(500))
    out = scored.frame
    assert set(out["model_version"]) == {"1"}  # every row answered
    assert set(out["arm"]) == {"champion", "fallback"}
    assert scored.failed == {"4": int((out["arm"] == "fallback").sum())} and 100 < scored.failed["4"] < 200
    assert set(scored.seconds) == {"1"}


def test_a_failing_champion_fails_the_request(setup):
    scorer, state, _ = setup
    state.change(Route("credit_risk", champion_version="4"), "first_champion", "t", "t")
    scorer.refresh()
    with pytest.raises(lgb.basic.LightGBMError):
        scorer.score(requests_frame(5))


def test_a_merged_batch_scores_the_same_on_all_cores_as_row_by_row(setup):
    """Adaptive batching merges requests; large calls use LightGBM's threads, which must not change answers."""
    from loopline.serving.scoring import PARALLEL_ROWS

    scorer, _, _ = setup
    frame = requests_frame(PARALLEL_ROWS + 20)
    merged = scorer.score(frame).frame
    alone = pd.concat([scorer.score(frame.iloc[[i]]).frame for i in range(0, len(frame), 7)])
    pd.testing.assert_frame_equal(merged.iloc[::7].reset_index(drop=True), alone.reset_index(drop=True))


def test_a_shadow_scores_a_copy_and_the_champion_answers_every_row(setup):
    scorer, state, loads = setup
    state.change(Route("credit_risk", champion_version="1"), "first_champion", "t", "t")
    state.change(Route("credit_risk", "1", revision=1, shadow_version="2"), "shadow_start", "t", "t")
    assert scorer.refresh() is True and sorted(loads) == ["1", "2"]
    frame = requests_frame(300)
    answered = scorer.score(frame)
    assert set(answered.frame["model_version"]) == {"1"} and set(answered.frame["arm"]) == {"champion"}
    shadowed = scorer.shadow(frame, answered)
    assert shadowed.version == "2" and shadowed.error == ""
    assert list(shadowed.scored.frame.index) == list(frame.index)
    assert set(shadowed.scored.frame["arm"]) == {"shadow"} and set(shadowed.scored.frame["model_version"]) == {"2"}
    expected = score_frame_of(scorer, "2", frame)
    assert (shadowed.scored.frame["score"] == expected["score"]).all()
    differ = (expected["decision"] != answered.frame["decision"]).sum()
    assert shadowed.compared == 300 and shadowed.disagreements == differ


def score_frame_of(scorer, version, frame):
    from loopline.serving.scoring import score_frame

    return score_frame(scorer._live.boosters[version], frame, SPEC)


def test_a_failing_shadow_never_touches_the_answer(setup):
    scorer, state, _ = setup
    state.change(Route("credit_risk", champion_version="1"), "first_champion", "t", "t")
    state.change(Route("credit_risk", "1", revision=1, shadow_version="4"), "shadow_start", "t", "t")
    scorer.refresh()
    frame = requests_frame(50)
    answered = scorer.score(frame)
    before = answered.frame.copy()
    shadowed = scorer.shadow(frame, answered)  # the broken model raises inside: reported, not raised
    assert shadowed.scored is None and "LightGBMError" in shadowed.error and shadowed.compared == 0
    pd.testing.assert_frame_equal(answered.frame, before)
    assert answered.failed == {} and set(answered.frame["model_version"]) == {"1"}


def test_no_shadow_or_a_route_moved_on_shadows_nothing(setup):
    scorer, state, _ = setup
    state.change(Route("credit_risk", champion_version="1"), "first_champion", "t", "t")
    scorer.refresh()
    frame = requests_frame(20)
    assert scorer.shadow(frame, scorer.score(frame)) is None
    state.change(Route("credit_risk", "1", revision=1, shadow_version="2"), "shadow_start", "t", "t")
    scorer.refresh()
    answered = scorer.score(frame)
    state.change(Route("credit_risk", "1", "2", 0.05, revision=2), "canary_step", "t", "t")
    scorer.refresh()  # the shadow ended between the answer and its copy
    assert scorer.shadow(frame, answered) is None


def test_readers_of_the_prediction_log_get_answers_unless_they_ask_for_the_shadow(tmp_path):
    import json

    from loopline.serving.prediction_log import monitor_name, read_window

    folder = tmp_path / monitor_name("credit_risk") / "data"
    folder.mkdir(parents=True)
    rows = [
        {"prediction_id": "a", "arm": "champion", "model_version": 1, "score": 0.2, "logged_at": 10.0},
        {"prediction_id": "a", "arm": "shadow", "model_version": 2, "score": 0.3, "logged_at": 10.1},
    ]
    (folder / "data.1.log").write_text("".join(json.dumps(r) + "\n" for r in rows))
    answers = read_window(tmp_path, "credit_risk").rows
    assert list(answers["arm"]) == ["champion"] and list(answers["model_version"]) == ["1"]
    both = read_window(tmp_path, "credit_risk", shadow=True).rows
    assert list(both["arm"]) == ["champion", "shadow"]


def test_the_prediction_log_monitor_writes_what_readers_and_bentoml_expect(tmp_path):
    """PredictionLogMonitor: BentoML's default monitor's files and lines, through ``write`` and ``bentoml.monitor``."""
    import json
    import time

    import bentoml

    from loopline.serving.log_monitor import PredictionLogMonitor
    from loopline.serving.prediction_log import monitor_name, read_window

    name = monitor_name("credit_risk")
    monitor = PredictionLogMonitor(name, str(tmp_path))
    now = time.time()
    columns = [
        ("prediction_id", ["a", "b"], "feature", "categorical"),
        ("age", [41.0, None], "feature", "numerical"),
        ("region", ["nörth", "west"], "feature", "categorical"),  # not ASCII: written as UTF-8
        ("model_version", ["1", "1"], "feature", "categorical"),
        ("arm", ["champion", "champion"], "feature", "categorical"),
        ("score", [0.25, 0.75], "prediction", "numerical"),
        ("logged_at", [now, now], "feature", "numerical"),
    ]
    monitor.write(columns)
    monitor.write([(n, v[:1], r, t) for n, v, r, t in columns])  # a second record: one row
    with bentoml.monitor(
        name, monitor_class=PredictionLogMonitor, monitor_options={"log_path": str(tmp_path / "b")}
    ) as mon:
        for column, values, role, kind in columns:
            mon.log_batch(values, column, role, kind)

    for root in (tmp_path, tmp_path / "b"):
        data = (root / name / "data" / "data.0.log").read_text(encoding="utf-8").splitlines()
        lines = [json.loads(line) for line in data]
        assert [line["prediction_id"] for line in lines] == (["a", "b", "a"] if root == tmp_path else ["a", "b"])
        assert list(lines[0]) == [c[0] for c in columns] + ["timestamp", "request_id", "trace_id"]  # the default's
        assert lines[1]["age"] is None and lines[0]["region"] == "nörth" and lines[1]["score"] == 0.75
        schema = (root / name / "schema" / "schema.0.log").read_text().splitlines()
        assert len(schema) == 1, "the schema is written once per process"
        assert json.loads(schema[0])["columns"][1] == {"name": "age", "role": "feature", "type": "numerical"}
    window = read_window(tmp_path, "credit_risk").rows
    assert list(window["prediction_id"]) == ["a", "b", "a"] and list(window["score"]) == [0.25, 0.75, 0.25]

    monitor._data_file.rolloverAt = 0  # a day has passed: the file rotates as the default's does, nothing is lost
    monitor.write([(n, v[1:], r, t) for n, v, r, t in columns])
    assert len(list((tmp_path / name / "data").glob("data.0.log.*"))) == 1
    assert sorted(read_window(tmp_path, "credit_risk").rows["prediction_id"]) == ["a", "a", "b", "b"]


def test_a_trace_shows_as_inputs_only_the_pseudonym_and_the_features(tmp_path):
    """Not the log's bookkeeping: a trace of request X must not list BentoML's own ``request_id=None`` as an input."""
    import time

    from loopline.ops.trace import logged_inputs
    from loopline.serving.log_monitor import PredictionLogMonitor
    from loopline.serving.prediction_log import monitor_name, read_window

    spec = load_spec("credit_risk", Path(__file__).resolve().parents[2] / "models")
    row = normalise(datagen.make_batch(3, 1, seed=2), spec).iloc[0]
    columns = [
        ("prediction_id", ["r1"], "feature", "categorical"),
        ("entity_hash", ["h1"], "feature", "categorical"),
        *((n, [None if pd.isna(row[n]) else row[n]], "feature", "numerical") for n in spec.features.names),
        ("model_version", ["1"], "feature", "categorical"),
        ("score", [0.5], "prediction", "numerical"),
        ("client", ["c"], "feature", "categorical"),
        ("logged_at", [time.time()], "feature", "numerical"),
    ]
    PredictionLogMonitor(monitor_name("credit_risk"), str(tmp_path)).write(columns)
    logged = read_window(tmp_path, "credit_risk").rows.iloc[0].to_dict()
    assert {"timestamp", "request_id", "trace_id"} <= set(logged)  # what BentoML's monitor adds to every line
    inputs = logged_inputs(logged, spec.features.names)
    assert list(inputs) == ["entity_hash", *spec.features.names] and inputs["entity_hash"] == "h1"


def test_a_trace_names_the_route_the_answer_was_scored_under_not_the_change_it_had_not_adopted_yet():
    """An answer logged 0.3 s after an abort came from the canary step before it (the service polls the store)."""
    from datetime import UTC, datetime, timedelta

    from loopline.core.serving_state import AuditRecord
    from loopline.ops.trace import route_that_served

    t = datetime(2026, 6, 1, tzinfo=UTC)

    def change(n: int, action: str, after: Route, seconds: int) -> AuditRecord:
        return AuditRecord(n, t + timedelta(seconds=seconds), "m", action, {}, after.to_dict(), "alice", "", {})

    changes = [
        change(1, "first_champion", Route("m", "1", revision=1), 0),
        change(2, "canary_step", Route("m", "1", "2", 0.2, revision=2), 10),
        change(3, "abort", Route("m", "1", revision=3), 20),
    ]
    answered = t + timedelta(seconds=20.3)
    route, why = route_that_served(changes, answered, revision=2.0)  # the log's numbers come back as floats
    assert (route["canary_version"], route["canary_weight"]) == ("2", 0.2) and why.startswith("set by audit #2")
    route, why = route_that_served(changes, answered, revision=float("nan"))  # a log from before the column
    assert route["canary_version"] is None and why.startswith("set by audit #3")
    assert route_that_served(changes, answered, revision=-1)[1].startswith("set by audit #3")  # the Bento's own
    assert route_that_served(changes, t - timedelta(seconds=1)) == (None, "no route change recorded before it")
