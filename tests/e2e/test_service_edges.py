"""The service's edges against a real `bentoml serve`: every malformed request gets a 4xx in the documented body.

One small model is trained, registered and built into a Bento here (seconds, no
DAG), so this module needs nothing from the others. The listed cases are plain
requests; then schemathesis fuzzes every operation of the service's own OpenAPI
document (``/docs.json``), bounded in examples and time, checking that nothing
answers 5xx and that every answer (status, content type, body) is the one the
document promises.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from loopline.core.settings import get_settings
from loopline.core.spec import load_spec
from loopline.serving.request_schema import allowed_missing
from loopline.serving.service_edges import ErrorBody
from tests.e2e.conftest import BentoServer
from tests.generators import credit_risk as datagen

pytestmark = pytest.mark.slow
MODEL = "credit_risk"
MAX_EXAMPLES = 100  # per operation and kind of data (valid, invalid); the whole fuzz takes about 25 s


def build_small_bento(settings) -> str:
    """A real model version (few trees), registered in MLflow and packaged: what the train DAG does, minus the DAG."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    from loopline.core import tracking
    from loopline.core.features import build_features
    from loopline.core.spec import load_spec
    from loopline.ingestion.ingest import normalise
    from loopline.serving.packaging import build_bento
    from loopline.training import trainer as training

    spec = load_spec(MODEL, settings.models_dir)
    frame = pd.concat([normalise(datagen.make_batch(w, 400, seed=5), spec) for w in range(4)], ignore_index=True)
    booster = training.fit_and_evaluate(frame, spec, {**spec.training.params, "seed": 1, "num_boost_round": 30})[
        0
    ].booster
    client = tracking.client_for(settings)
    features = build_features(frame.head(50), spec)
    with mlflow.start_run(experiment_id=tracking.experiment_id(client, MODEL, settings)) as run:
        info = mlflow.lightgbm.log_model(
            booster, name=tracking.MODEL_ARTIFACT, signature=infer_signature(features, booster.predict(features))
        )
        mlflow.set_tags({"loopline.model_uri": info.model_uri, "loopline.model_id": info.model_id or ""})
    version, _ = tracking.register(client, MODEL, run.info.run_id)
    return build_bento(MODEL, version, settings)


@pytest.fixture(scope="module")
def server(settings):
    server = BentoServer(build_small_bento(settings))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def application() -> dict:
    frame = datagen.make_batch(30, n_rows=1, seed=5).drop(columns=["applied_at", "defaulted"])
    return json.loads(frame.to_json(orient="records"))[0]


def post(server, body: bytes | str, content_type: str | None = "application/json", path: str = "/predict"):
    headers = {"content-type": content_type} if content_type else {}
    return requests.post(f"{server.url}{path}", data=body, headers=headers, timeout=30)


def refused(response, status: int) -> ErrorBody:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return ErrorBody.model_validate_json(response.content)


def test_a_good_request_still_scores(server, application):
    response = post(server, json.dumps({"applications": [application]}))
    assert response.status_code == 200, response.text
    assert response.json()[0]["decision"] in ("approve", "decline")


def test_multipart_without_a_boundary_is_415(server, application):
    body = refused(post(server, b"--x\r\n\r\n", "multipart/form-data"), 415)
    assert "multipart/form-data is not accepted" in body.error and "application/json" in body.error
    with_boundary = requests.post(
        f"{server.url}/predict", files={"applications": ("a.json", json.dumps([application]))}, timeout=30
    )
    refused(with_boundary, 415)


def test_wrong_content_types_are_415(server, application):
    body = json.dumps({"applications": [application]})
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/vnd.bentoml+pickle"):
        refused(post(server, body, content_type), 415)
    assert "charset 'latin-1'" in refused(post(server, body, "application/json; charset=latin-1"), 415).error


def test_a_boolean_or_a_string_for_a_number_is_refused(server, application):
    for value, got in [(True, "a boolean (true)"), ("41", "a string")]:
        body = refused(post(server, json.dumps({"applications": [{**application, "age": value}]})), 422)
        assert body.error == f"applications[0].age: expected a number, got {got}"
        assert body.detail[0].loc == ["applications", 0, "age"] and body.detail[0].type == "float_type"


def test_a_duplicate_key_is_400_naming_it(server, application):
    row = json.dumps(application)[:-1] + ', "age": 99}'
    body = refused(post(server, '{"applications": [' + row + "]}"), 400)
    assert body.error.startswith("applications[0].age: duplicate key 'age'")
    top = refused(post(server, '{"applications": [], "applications": [' + json.dumps(application) + "]}"), 400)
    assert "duplicate key 'applications'" in top.error


def test_nan_and_infinity_are_non_finite_numbers(server, application):
    for literal in ("NaN", "Infinity", "-Infinity"):
        row = json.dumps({**application, "age": 0}).replace('"age": 0', f'"age": {literal}')
        body = refused(post(server, '{"applications": [' + row + "]}"), 400)
        assert "non-finite number not allowed" in body.error and body.detail[0].loc == ["applications", 0, "age"]
    row = json.dumps({**application, "annual_income": 0}).replace('"annual_income": 0', '"annual_income": 1e999')
    body = refused(post(server, '{"applications": [' + row + "]}"), 422)
    assert body.error == "applications[0].annual_income: non-finite number not allowed"


def test_a_10_mb_body_is_413_before_it_is_parsed(server, application):
    limit = get_settings().max_request_bytes
    padding = "x" * (10 * 1024 * 1024)
    big = json.dumps({"applications": [application], "padding": padding})
    body = refused(post(server, big), 413)
    assert f"limit of {limit} bytes" in body.error and body.detail[0].type == "body_too_large"

    def chunks():  # no Content-Length: the limit still holds while the body streams in
        for _ in range(10):
            yield b" " * (1024 * 1024)

    streamed = requests.post(
        f"{server.url}/predict", data=chunks(), headers={"content-type": "application/json"}, timeout=30
    )
    refused(streamed, 413)
    assert post(server, json.dumps({"applications": [application]})).status_code == 200  # still serving


def test_an_unknown_top_level_key_is_refused(server, application):
    body = refused(post(server, json.dumps({"applications": [application], "padding": "x"})), 422)
    assert body.error.startswith("padding: unknown top-level key 'padding'") and body.detail[0].loc == ["padding"]
    inner = refused(post(server, json.dumps({"applications": [{**application, "nickname": "x"}]})), 422)
    assert inner.error == "applications[0].nickname: unknown key"


def test_bad_encodings_and_broken_json_are_400(server):
    assert "not valid UTF-8" in refused(post(server, '{"applications": ["é"]}'.encode("latin-1")), 400).error
    assert "UTF-16 byte order mark" in refused(post(server, '{"applications": []}'.encode("utf-16")), 400).error
    assert "not valid JSON" in refused(post(server, "{not json"), 400).error
    assert "more than 32 levels deep" in refused(post(server, "[" * 200_000), 400).error


def test_every_json_level_problem_is_a_400_naming_it(server, application):
    nested = b'{"applications": ' + b"[" * 500 + b"]" * 500 + b"}"  # pydantic said 422 "recursion limit exceeded"
    row = json.dumps({**application, "region": "REGION"}).replace('"REGION"', '"\\ud800"')  # a lone surrogate
    cases = [
        (b"", "empty_body", "the body is empty: send one JSON object with 'instances'"),
        (b" \n", "empty_body", "the body is empty"),
        (nested, "too_deep", "more than 32 levels deep"),
        (b"[" * 1000 + b"]" * 1000, "too_deep", "more than 32 levels deep"),
        (('{"applications": [' + row + "]}").encode(), "lone_surrogate", "lone surrogate"),
        (
            b"\xef\xbb\xbf" + json.dumps({"applications": [application]}).encode(),
            "byte_order_mark",
            "UTF-8 byte order mark",
        ),
        (json.dumps({"applications": [application]}).encode("utf-16-le"), "invalid_encoding", "NUL byte"),
        (b'{"applications": []} {}', "invalid_json", "more than one JSON document"),
    ]
    for body, kind, says in cases:
        error = refused(post(server, body), 400)
        assert error.detail[0].type == kind and says in error.error, (body[:40], error.error)


def test_a_refused_request_is_one_warning_line_in_the_server_log_and_a_line_in_the_refusal_log(server, application):
    from loopline.serving.refusal_log import read_refusals

    marker = "refusal-marker-7f3"
    before = server.log_path.read_text(errors="replace")
    error = refused(post(server, json.dumps({"applications": [{**application, "region": marker}] * 3})), 422)
    assert error.error.startswith(f"applications[0].region: '{marker}' is not allowed: expected 'north'")
    deadline = time.monotonic() + 10
    while marker not in server.log_path.read_text(errors="replace")[len(before) :] and time.monotonic() < deadline:
        time.sleep(0.2)
    new = server.log_path.read_text(errors="replace")[len(before) :]
    lines = [line for line in new.splitlines() if "refused POST /predict" in line]
    assert len(lines) == 1 and "WARNING" in lines[0] and "literal_error at applications[0].region" in lines[0], new
    assert "from client 'anonymous'" in lines[0]
    assert "Traceback" not in new and "[ERROR]" not in new and "ValidationError" not in new, new
    [line] = [r for r in read_refusals(get_settings().prediction_log_dir, MODEL) if marker in json.dumps(r)]
    assert (line["status"], line["rows"], line["client"]) == (422, 3, "anonymous")
    assert line["problems"][0] == {**line["problems"][0], "field": "region", "value": marker, "rows": 3}
    assert "route_revision" in line


def test_an_empty_array_and_other_routes_answer_in_the_error_body(server, application):
    assert "must be a JSON object" in refused(post(server, json.dumps([application])), 422).error
    too_many = refused(post(server, json.dumps({"applications": [application] * 1001})), 422)
    assert too_many.detail[0].loc == ["applications"]
    refused(post(server, json.dumps({"x": 1}), path="/ready"), 422)
    assert requests.get(f"{server.url}/predict", timeout=10).status_code == 405


def test_a_request_cut_off_mid_body_does_not_hurt_the_server(server, application):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"
        )
    time.sleep(0.2)
    assert post(server, json.dumps({"applications": [application]})).status_code == 200


def test_the_openapi_document_names_the_error_body_for_every_error_status(server):
    spec = requests.get(f"{server.url}/docs.json", timeout=30).json()
    for path in ("/predict", "/ready"):
        responses = spec["paths"][path]["post"]["responses"]
        for status in ("400", "413", "415", "422"):
            assert responses[status]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }
    error_body = spec["components"]["schemas"]["ErrorBody"]
    assert error_body["required"] == ["error", "detail"] and error_body["additionalProperties"] is False
    assert (
        spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"][
            "additionalProperties"
        ]
        is False
    )


# --------------------------------------------------------------------------- schemathesis


def fuzz_checks() -> list:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        positive_data_acceptance,
        response_schema_conformance,
        status_code_conformance,
    )

    return [
        not_a_server_error,  # no 5xx, whatever arrives
        status_code_conformance,  # every status is one the document lists for the operation
        content_type_conformance,
        response_schema_conformance,  # the body matches the schema of that status (ErrorBody for errors)
        positive_data_acceptance,  # what the document allows is scored
        negative_data_rejection,  # what it does not allow is refused with a 4xx
    ]


def within_documented_limits(case, spec) -> bool:
    """Whether a generated body keeps the rule the row's description states beyond JSON Schema.

    At most ``allowed_missing`` features absent or null: JSON Schema can only say
    ``minProperties``, which does not count nulls.
    """
    rows = case.body.get("instances") if isinstance(case.body, dict) else None
    allowed = allowed_missing(spec)
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and sum(row.get(f) is None for f in spec.features.names) > allowed:
            return False
    return True


def fuzz(operation, mode, checks: list, seen: dict[int, int], spec) -> None:
    """One Hypothesis run of MAX_EXAMPLES cases of ``operation``; ``seen`` counts the statuses answered."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    strategy = operation.as_strategy(generation_mode=mode)
    if mode == schemathesis.GenerationMode.POSITIVE:  # valid means valid by every rule the document states
        strategy = strategy.filter(lambda case: within_documented_limits(case, spec))

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,  # the same examples on every run: a failure here reproduces
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def call(case):
        response = case.call_and_validate(checks=checks, timeout=30)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1

    call()


@pytest.mark.timeout(150)  # a hard bound on the run, whatever the examples cost (about 25 s here)
def test_fuzzed_requests_never_get_a_5xx_and_always_match_the_openapi_document(server):
    """Schemathesis over every operation of /docs.json, valid and invalid data, MAX_EXAMPLES each.

    Driven from one test (operation by operation, each its own Hypothesis run) rather than
    ``schemathesis.pytest.from_fixture``, whose lazy loading does not work with pytest 9.
    """
    import schemathesis

    schema = schemathesis.openapi.from_url(f"{server.url}/docs.json")
    spec = load_spec(MODEL, get_settings().models_dir)
    row = next(s for s in schema.raw_schema["components"]["schemas"].values() if "minProperties" in s)
    assert f"At most {allowed_missing(spec)} of" in row["description"], "the row documents its missing limit"
    checks = fuzz_checks()
    failures, answered = [], {}
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [schemathesis.GenerationMode.POSITIVE]
        if operation.body:  # the GET probes take nothing that could be made invalid
            modes.append(schemathesis.GenerationMode.NEGATIVE)
        for mode in modes:
            seen = answered.setdefault(f"{operation.label} {mode.value}", {})
            try:
                fuzz(operation, mode, checks, seen, spec)
            except Exception as err:  # collect every operation's failure, not only the first
                failures.append(f"{operation.label} ({mode.value}): {err}"[:4000])
    print(json.dumps(answered, indent=1))
    assert not failures, "\n\n".join(failures)
    predict_invalid = answered["POST /predict negative"]
    assert sum(predict_invalid.values()) >= MAX_EXAMPLES // 2 and set(predict_invalid) <= {400, 413, 415, 422}
    assert answered["POST /predict positive"].get(200, 0) >= MAX_EXAMPLES // 2


# --------------------------------------------------------------------------- unknown levels scored


@pytest.fixture(scope="module")
def scoring_server(settings, tmp_path_factory):
    """A Bento of a spec that scores an unknown region as unknown (``features.unknown_levels``), served."""
    import os
    import shutil

    import yaml

    folder = tmp_path_factory.mktemp("models")
    shutil.copytree(settings.models_dir / MODEL, folder / MODEL, ignore=shutil.ignore_patterns("__pycache__"))
    spec_file = folder / MODEL / "spec.yaml"
    raw = yaml.safe_load(spec_file.read_text())
    raw["features"]["unknown_levels"] = {"region": "score"}
    spec_file.write_text(yaml.safe_dump(raw))
    before = os.environ.get("LOOPLINE_MODELS_DIR")
    os.environ["LOOPLINE_MODELS_DIR"] = str(folder)
    get_settings.cache_clear()
    try:
        tag = build_small_bento(get_settings())
    finally:
        if before is None:
            os.environ.pop("LOOPLINE_MODELS_DIR")
        else:
            os.environ["LOOPLINE_MODELS_DIR"] = before
        get_settings.cache_clear()
    server = BentoServer(tag)
    yield server
    server.stop()


def test_an_unknown_level_the_spec_scores_is_answered_flagged_logged_and_counted(scoring_server, application):
    from datetime import UTC, datetime, timedelta

    from loopline.monitoring.refusals import check
    from loopline.serving.prediction_log import read_window

    since = datetime.now(UTC)
    rows = [{**application, "applicant_id": f"unknown-level-{i}"} for i in range(10)]
    for row in rows[:2]:
        row["region"] = "central"
    response = post(scoring_server, json.dumps({"applications": [*rows, {**rows[0], "region": None}]}))
    assert response.status_code == 200, response.text
    answers = response.json()
    assert [a["unknown_levels"] for a in answers[:3]] == [["region"], ["region"], []]
    assert answers[0]["score"] == answers[10]["score"]  # an unknown level is scored as a missing one
    assert refused(post(scoring_server, json.dumps({"applications": [{**application, "region": ""}]})), 422)

    spec = load_spec(MODEL, get_settings().models_dir)
    deadline = time.monotonic() + 10
    while True:
        window = read_window(get_settings().prediction_log_dir, MODEL, since, since + timedelta(hours=1)).rows
        if len(window) >= 11 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert list(window["unknown_levels"][:3]) == ["region", "region", ""]
    result = check([], window, spec, limit=0.05)
    assert result.headline() == "region 'central': 18% of rows, unknown to the model (scored as unknown)"
