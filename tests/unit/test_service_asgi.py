"""The service's edges through BentoML's own ASGI app (``Service.to_asgi()``), with Starlette's TestClient.

The service (``tests.unit.edges_service``) has the platform's request row for a spec made in
the tests, and ``service_edges.protect`` in front, as ``serving/bento_service.py`` has. Each member of the class of
JSON-level problems is sent as raw bytes and must get the README's status with a message naming
it; every refusal must leave one WARNING line (no BentoML ERROR, no traceback) and reach the
refusal hook.
"""

from __future__ import annotations

import json
import logging

import pytest
from starlette.testclient import TestClient

from loopline.serving.service_edges import BENTOML_ERROR_LOGGER, ErrorBody, Refusal
from tests.unit.edges_service import ENTITY, SINKS, app

REFUSED: list[Refusal] = []


@pytest.fixture(scope="module")
def client():
    SINKS.append(REFUSED.append)
    with TestClient(app(), raise_server_exceptions=False) as c:
        yield c
    SINKS.remove(REFUSED.append)


def good_row(**values) -> dict:
    return {ENTITY: "c-1", "basket_value": 12.5, "visits": 3, "channel": "web", **values}


def send(client, body: bytes):
    return client.post("/predict", content=body, headers={"content-type": "application/json"})


def refused(response, status: int) -> ErrorBody:
    assert response.status_code == status, response.text
    return ErrorBody.model_validate_json(response.content)


def nested(depth: int) -> bytes:
    return b'{"applications": ' + b"[" * depth + b"]" * depth + b"}"


def test_a_good_request_is_answered(client):
    response = send(client, json.dumps({"applications": [good_row()]}).encode())
    assert response.status_code == 200 and response.json() == [{"seen": "c-1"}]


@pytest.mark.parametrize(
    "body,kind,says",
    [
        (b"", "empty_body", "the body is empty: send one JSON object with 'applications'"),
        (b"  \n ", "empty_body", "the body is empty: send one JSON object with 'applications'"),
        (b'{"applications": [', "invalid_json", "not valid JSON: Expecting value"),
        (b"{'applications': []}", "invalid_json", "Expecting property name enclosed in double quotes"),
        (b'{"applications": []} []', "invalid_json", "more than one JSON document"),
        (nested(32), "too_deep", "more than 32 levels deep"),  # Python and pydantic parse it; no request is that deep
        (nested(500), "too_deep", "more than 32 levels deep"),  # pydantic: "recursion limit exceeded", 422
        (nested(1000), "too_deep", "more than 32 levels deep"),  # Python: RecursionError
        (b'{"applications": [{"customer_ref": "\\ud800"}]}', "lone_surrogate", "lone surrogate"),
        (b'{"applications": [{"customer_ref": "x\\udc00y"}]}', "lone_surrogate", "lone surrogate"),
        (b'\xef\xbb\xbf{"applications": []}', "byte_order_mark", "UTF-8 byte order mark (EF BB BF)"),
        ('{"applications": []}'.encode("utf-16"), "byte_order_mark", "UTF-16 byte order mark"),
        ('{"applications": []}'.encode("utf-16-be"), "invalid_encoding", "NUL byte at offset 0"),
        ('{"applications": ["é"]}'.encode("latin-1"), "invalid_encoding", "not valid UTF-8: byte 0xe9"),
        (b'{"applications": [], "applications": []}', "duplicate_key", "duplicate key 'applications'"),
        (b'{"applications": [{"visits": NaN}]}', "non_finite_number", "non-finite number not allowed"),
    ],
)
def test_each_json_level_problem_is_a_400_naming_it(client, body, kind, says, caplog):
    caplog.set_level(logging.INFO)
    before = len(REFUSED)
    error = refused(send(client, body), 400)
    assert error.detail[0].type == kind and says in error.error, error.error
    assert len(REFUSED) == before + 1 and REFUSED[-1].status == 400
    one_warning_and_no_traceback(caplog, kind)


@pytest.mark.parametrize(
    "document,says",
    [
        ([good_row()], "must be a JSON object (keys: 'applications'), got an array"),
        ("applications", "got a string"),
        (None, "got null"),
        (7, "got a number"),
        ({}, "applications: required key missing"),
        ({"applications": {"customer_ref": "c"}}, "applications: expected an array, got an object"),
    ],
)
def test_a_wrong_top_level_type_is_a_422_naming_it(client, document, says, caplog):
    caplog.set_level(logging.INFO)
    error = refused(send(client, json.dumps(document).encode()), 422)
    assert says in error.error, error.error
    one_warning_and_no_traceback(caplog, error.detail[0].type)


def test_an_unknown_level_is_a_422_naming_the_level_and_logged_in_one_line(client, caplog):
    caplog.set_level(logging.INFO)
    rows = [good_row(), good_row(channel="kiosk")]
    error = refused(send(client, json.dumps({"applications": rows}).encode()), 422)
    assert error.error == "applications[1].channel: 'kiosk' is not allowed: expected 'web', 'shop' or 'phone'"
    [line] = one_warning_and_no_traceback(caplog, "literal_error")
    assert "at applications[1].channel" in line and "from client 'anonymous'" in line
    refusal = REFUSED[-1]
    assert refusal.rows == 2 and refusal.status == 422 and refusal.client == "anonymous"


def test_a_control_character_in_a_key_cannot_forge_a_log_line(client, caplog):
    caplog.set_level(logging.INFO)
    row = {**good_row(), "x\nERROR forged": 1}
    refused(send(client, json.dumps({"applications": [row]}).encode()), 422)
    [line] = one_warning_and_no_traceback(caplog, "extra_forbidden")
    assert "\n" not in line and "x\\nERROR forged" in line


def one_warning_and_no_traceback(caplog, kind: str) -> list[str]:
    """The refusal's log: exactly one WARNING line naming its kind; BentoML's ERROR with traceback gone."""
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.getMessage().startswith("refused ")]
    assert len(warnings) == 1 and kind in warnings[0].getMessage(), [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], "an ERROR or a traceback"
    assert not [r for r in caplog.records if r.name == BENTOML_ERROR_LOGGER]
    caplog.clear()
    return [w.getMessage() for w in warnings]
