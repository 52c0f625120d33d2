"""The prediction API's keys: hashed in settings, 401 without a valid one, the client's name on every row."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from loopline.core.api_keys import ApiKeyError, new_key, parse_keys
from loopline.core.settings import SettingsError, get_settings
from loopline.serving.auth import CLIENT_FIELD, ApiKeys, presented_key
from loopline.serving.service_edges import EdgeGuard, ErrorBody


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    loopline_client: str | None = None


class Body(BaseModel):
    rows: list[Row] = Field(min_length=1)


async def predict(request: Request) -> JSONResponse:
    """Stands in for BentoML: what the API method would see, row by row."""
    try:
        body = Body.model_validate_json(await request.body())
    except ValidationError as exc:
        return JSONResponse({"error": "invalid", "detail": exc.errors(include_context=False, include_input=False)}, 400)
    return JSONResponse([{"id": r.id, "client": r.loopline_client} for r in body.rows])


async def ready(_: Request) -> JSONResponse:
    return JSONResponse({"ready": True})


ALICE_KEY, ALICE = new_key("alice-app")
BATCH_KEY, BATCH = new_key("batch")


def client(keys: str | None) -> TestClient:
    app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/ready", ready, methods=["POST"])])
    guard = EdgeGuard(
        app, routes={"/predict": ("rows",), "/ready": ()}, max_body_bytes=4096,
        api_keys=ApiKeys(parse_keys(keys or "")), open_paths=["/ready"], client_rows={"/predict": "rows"},
    )  # fmt: skip
    return TestClient(guard, raise_server_exceptions=False)


BODY = json.dumps({"rows": [{"id": "a"}, {"id": "b"}]})


def send(c: TestClient, headers: dict[str, str] | None = None, body: str = BODY):
    return c.post("/predict", content=body, headers={"content-type": "application/json", **(headers or {})})


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "an API key is required"),
        ({"authorization": "Bearer not-a-key"}, "the API key is not valid"),
        ({"authorization": f"Basic {ALICE_KEY}"}, "an API key is required"),
        ({"x-api-key": ""}, "an API key is required"),
    ],
)
def test_without_a_valid_key_the_answer_is_401_and_never_echoes_the_key(headers, message):
    response = send(client(f"{ALICE},{BATCH}"), headers)
    assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
    error = ErrorBody.model_validate_json(response.content)
    assert message in error.error and "not-a-key" not in response.text and ALICE_KEY not in response.text


def test_each_key_names_its_client_on_every_row():
    c = client(f"{ALICE},{BATCH}")
    answer = send(c, {"authorization": f"Bearer {ALICE_KEY}"})
    assert answer.status_code == 200 and [r["client"] for r in answer.json()] == ["alice-app", "alice-app"]
    answer = send(c, {"x-api-key": BATCH_KEY})
    assert [r["client"] for r in answer.json()] == ["batch", "batch"]


def test_a_client_cannot_name_itself():
    body = json.dumps({"rows": [{"id": "a", CLIENT_FIELD: "someone-else"}]})
    for c, headers in [(client(ALICE), {"x-api-key": ALICE_KEY}), (client(None), {})]:
        response = send(c, headers, body)
        assert response.status_code == 422
        assert ErrorBody.model_validate_json(response.content).error == f"rows[0].{CLIENT_FIELD}: unknown key"


def test_without_keys_the_service_is_open_and_rows_go_unchanged():
    answer = send(client(None))
    assert answer.status_code == 200 and [r["client"] for r in answer.json()] == [None, None]  # logged as anonymous


def test_the_readiness_route_stays_open():
    assert client(ALICE).post("/ready").status_code == 200


def test_a_bad_body_is_still_judged_after_the_key():
    c = client(ALICE)
    assert send(c, {"x-api-key": "wrong"}, "{not json").status_code == 401  # nothing read before the key
    assert send(c, {"x-api-key": ALICE_KEY}, "{not json").status_code == 400


# --- the setting ------------------------------------------------------------------------------------


def test_keys_are_stored_as_hashes_and_a_plain_key_is_refused():
    assert parse_keys(f" {ALICE} , ") == (("alice-app", ALICE.rsplit(":", 1)[1]),)
    with pytest.raises(ApiKeyError, match="the hash of the key, not the key itself"):
        parse_keys(f"alice-app:{ALICE_KEY}")
    with pytest.raises(ApiKeyError, match="twice"):
        parse_keys(f"{ALICE},{ALICE}")
    with pytest.raises(ApiKeyError, match="client name"):
        new_key("alice app")


def test_the_settings_read_the_keys_and_name_a_bad_entry(monkeypatch):
    monkeypatch.setenv("LOOPLINE_API_KEYS", f"{ALICE},{BATCH}")
    monkeypatch.setenv("LOOPLINE_REQUIRE_API_KEYS", "true")
    get_settings.cache_clear()
    try:
        settings = get_settings()
        assert [c for c, _ in settings.api_keys] == ["alice-app", "batch"] and settings.require_api_keys
        assert ALICE_KEY not in repr(settings) and " api_keys=" not in repr(settings)
        monkeypatch.setenv("LOOPLINE_API_KEYS", "alice-app:sha256:xyz")
        get_settings.cache_clear()
        with pytest.raises(SettingsError, match="entry 1 .alice-app."):
            get_settings()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_a_key_matches_only_its_own_client():
    keys = ApiKeys(parse_keys(f"{ALICE},{BATCH}"))
    assert keys.client_of(ALICE_KEY) == "alice-app" and keys.client_of(BATCH_KEY) == "batch"
    assert keys.client_of(ALICE_KEY + "x") is None and not ApiKeys(())
    assert presented_key("bearer  k1 ", None) == "k1" and presented_key(None, " k2") == "k2"


def test_the_full_stack_refuses_to_serve_open():
    from loopline.serving.service_edges import protect

    class Service:  # only what protect() reads of a BentoML service
        apis: dict = {}

    with pytest.raises(ApiKeyError, match="would be open"):
        protect(Service, 4096, api_keys=(), require_keys=True)
