"""Refused requests and unknown levels reach the drift check: the refusal log, the spec's unknown-level option,
``monitoring.refusals`` (the share, the words, the alert) and the report's section.

Traffic is generated here for a spec of the test's own (a ``channel`` input with three levels)
and sent through BentoML's ASGI app with the platform's request row and edge guard in front,
whose refusal hook is the service's: ``RefusalLog.record``.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from loopline.core.features import feature_set
from loopline.monitoring import refusals
from loopline.serving.refusal_log import RefusalLog, read_refusals
from loopline.serving.request_schema import answer_model, answers, application_model, unknown_levels
from loopline.serving.scoring import Answers
from tests.unit.edges_service import ENTITY, SINKS, SPEC, app, made_spec

SCORING = made_spec(unknown_levels={"channel": "score"})
Row = application_model(SPEC)


def row(i: int, channel: str = "web", **values) -> dict:
    return {ENTITY: f"c-{i}", "basket_value": float(i % 400), "visits": i % 30, "channel": channel, **values}


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    """80 answered rows (40 requests of 2), 20 refused rows (4 requests of 5: a level the spec does not list)."""
    folder = tmp_path_factory.mktemp("log")
    refusal_log = RefusalLog(folder, SPEC)

    def record(refusal) -> None:
        refusal_log.record(refusal, route_revision=7)

    SINKS.append(record)
    answered = []
    with TestClient(app(), raise_server_exceptions=False) as client:
        for r in range(40):
            rows = [row(2 * r), row(2 * r + 1, channel="shop")]
            assert client.post("/predict", json={"applications": rows}).status_code == 200
            answered += rows
        for r in range(4):
            rows = [row(100 + 5 * r + k, channel="central") for k in range(5)]
            assert client.post("/predict", json={"applications": rows}).status_code == 422
        assert (
            client.post("/predict", content=b"\xef\xbb\xbf{}", headers={"content-type": "application/json"}).status_code
            == 400
        )
    SINKS.remove(record)
    return folder, pd.DataFrame(answered)


def test_each_refused_request_is_one_line_with_reason_field_value_rows_client_and_route(traffic):
    folder, _ = traffic
    lines = read_refusals(folder, SPEC.name)
    assert len(lines) == 5
    assert not list(folder.rglob("*.log"))  # never mistaken for the prediction log's files (data/*.log)
    first = lines[0]
    assert (first["status"], first["reason"], first["client"], first["route_revision"], first["rows"]) == (
        422, "literal_error", "anonymous", 7, 5,
    )  # fmt: skip
    [problem] = first["problems"]
    assert (problem["field"], problem["value"], problem["rows"]) == ("channel", "central", 5)
    assert "'central' is not allowed" in problem["message"]
    assert ENTITY not in json.dumps(lines) and "c-100" not in json.dumps(lines)  # never the entity id
    bom = lines[-1]
    assert (bom["status"], bom["reason"], bom["rows"]) == (400, "byte_order_mark", 0)


def test_the_check_names_the_share_refused_and_why(traffic):
    folder, answered = traffic
    now = datetime.now(UTC)
    result = refusals.check(read_refusals(folder, SPEC.name, now - timedelta(hours=1), now + timedelta(seconds=1)),
                            answered, SPEC, limit=0.05)  # fmt: skip
    assert (result.answered_rows, result.refused_rows, result.refused_requests) == (80, 21, 5)
    assert result.headline().startswith(
        "21% of rows refused (21 of 101, in 5 requests): channel 'central' not allowed (20% of rows)"
    )
    assert "byte order mark" in result.headline()
    assert "refused" in result.over and result.lines()[0].startswith("ALERT ")
    quiet = refusals.check(read_refusals(folder, SPEC.name, until=now - timedelta(hours=1)), answered, SPEC, 0.05)
    assert quiet.refused_rows == 0 and quiet.over == [] and quiet.lines() == []


def test_an_unknown_level_is_refused_by_default_and_scored_as_unknown_when_the_spec_says_so():
    with pytest.raises(ValidationError, match="literal_error|Input should be"):
        Row.model_validate(row(1, channel="central"))
    scoring_row = application_model(SCORING)
    assert scoring_row.model_validate(row(1, channel="central")).channel == "central"
    with pytest.raises(ValidationError):  # still a string, and not empty
        scoring_row.model_validate(row(1, channel=""))
    values = {"basket_value": [1.0, 2.0, 3.0], "visits": [1, 2, 3], "channel": ["web", "central", None]}
    assert unknown_levels(values, SCORING) == [[], ["channel"], []]
    assert unknown_levels(values, SPEC) is None
    codes = feature_set(SCORING).value_arrays(values)["channel"]
    assert codes[0] == 0 and math.isnan(codes[1]) and math.isnan(codes[2])  # scored as missing: LightGBM's unknown
    Answer = answer_model(SCORING)
    assert "unknown_levels" in Answer.model_fields and "unknown_levels" not in answer_model(SPEC).model_fields
    scored = SimpleNamespace(
        answers=Answers(np.array([0.1, 0.9]), np.array(["approve", "decline"], dtype=object), [[], []]),
        versions=["3", "3"],
    )
    out = answers(scored, ["r1", "r2"], SCORING, Answer, [[], ["channel"]])
    assert [a.unknown_levels for a in out] == [[], ["channel"]]


def test_a_spec_may_only_score_unknown_levels_of_its_categorical_inputs():
    with pytest.raises(ValidationError, match="not categorical: \\['visits'\\]"):
        made_spec(unknown_levels={"visits": "score"})
    with pytest.raises(ValidationError):
        made_spec(unknown_levels={"channel": "ignore"})
    assert SPEC.features.scored_unknown == {} and SCORING.features.scored_unknown == {
        "channel": frozenset({"web", "shop", "phone"})
    }


def test_scored_unknown_levels_in_the_prediction_log_are_counted_by_level():
    window = pd.DataFrame(
        {"channel": ["web"] * 75 + ["central"] * 20 + ["kiosk"] * 5, "unknown_levels": [""] * 75 + ["channel"] * 25}
    )
    result = refusals.check([], window, SCORING, limit=0.1)
    assert [(u.feature, u.level, u.rows) for u in result.unknown] == [
        ("channel", "central", 20),
        ("channel", "kiosk", 5),
    ]
    assert result.headline() == (
        "channel 'central': 20% of rows, unknown to the model (scored as unknown); "
        "channel 'kiosk': 5% of rows, unknown to the model (scored as unknown)"
    )
    assert result.over == ["unknown|channel|central"]  # kiosk's 5% is under the 10% limit


def check_at(at: datetime, over: list[str], alerted: bool):
    return SimpleNamespace(at=at, impact={"refusals": {"over": over, "alerted": alerted}})


def test_the_alert_comes_once_then_again_for_a_new_problem_or_after_the_reminder():
    now = datetime(2026, 3, 2, 12, tzinfo=UTC)
    central = {"field": "channel", "reason": "literal_error", "value": "central", "rows": 30}
    result = refusals.check([{"rows": 30, "problems": [central]}], pd.DataFrame({"x": range(70)}), SPEC, 0.05)
    assert result.over == ["refused", "channel|literal_error|central"]
    assert refusals.decide_alert(result, now, [], 24).alert
    earlier = [check_at(now - timedelta(hours=1), result.over, True)]
    again = refusals.decide_alert(result, now, earlier, 24)
    assert not again.alert and "already alerted" in again.reason
    assert refusals.decide_alert(result, now, [check_at(now - timedelta(hours=25), result.over, True)], 24).alert
    assert refusals.decide_alert(result, now, [check_at(now - timedelta(hours=1), ["refused"], True)], 24).alert
    nothing = refusals.check([], pd.DataFrame({"x": range(70)}), SPEC, 0.05)
    assert not refusals.decide_alert(nothing, now, [], 24).alert


def test_the_report_section_is_escaped_and_sits_before_the_first_heading():
    result = refusals.check([{"rows": 3, "problems": [{"field": "channel", "reason": "literal_error",
                             "value": "<script>", "rows": 3, "message": "<b>x</b>"}]}], pd.DataFrame({"x": range(7)}),
                            SPEC, 0.05).to_dict()  # fmt: skip
    page = refusals.into_report("<html><body><h1>t</h1><p>v</p><h2>Inputs</h2></body></html>", result)
    assert "<script>" not in page and "&lt;script&gt;" in page and "<b>x</b>" not in page
    assert page.index("Requests the model never scored as sent") < page.index("<h2>Inputs</h2>")
    assert refusals.into_report("<html></html>", refusals.check([], pd.DataFrame(), SPEC, 0.05).to_dict()) == (
        "<html></html>"
    )
