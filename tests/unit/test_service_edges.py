"""The service's edges without BentoML: the strict request row, the EdgeGuard middleware, the OpenAPI patch.

The downstream app stands in for BentoML's HTTP layer and answers the way BentoML
1.4 does (a pydantic ValidationError as ``{"error", "detail": [...]}`` with 400, its
own 4xx exceptions as a one-item list, 500 as ``{"error"}``), so the guard is tested
against the shapes it has to rewrite.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from loopline.core.spec import load_spec
from loopline.serving.request_schema import application_model
from loopline.serving.service_edges import (
    ERROR_RESPONSES,
    EdgeError,
    EdgeGuard,
    ErrorBody,
    check_content_type,
    check_top_level,
    format_loc,
    normalise_error,
    parse_json_body,
    patch_openapi,
    protect,
)

SPEC = load_spec("credit_risk", Path(__file__).resolve().parents[2] / "models")
Application = application_model(SPEC)
LIMIT = 4096


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    x: float | None = Field(default=None, strict=True, allow_inf_nan=False, ge=0, le=10)


class Body(BaseModel):
    rows: list[Row] = Field(min_length=1)


def good_row() -> dict:
    return {"id": "a1", "x": 3}


async def predict(request: Request) -> JSONResponse:
    try:
        body = Body.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:  # as BentoML's api_endpoint_wrapper answers it
        detail = exc.errors(include_context=False, include_input=False)
        return JSONResponse({"error": f"{exc.error_count()} validation error for {exc.title}", "detail": detail}, 400)
    return JSONResponse([{"id": r.id, "score": 0.5} for r in body.rows], headers={"x-request-id": "r1"})


async def refuse(_: Request) -> JSONResponse:
    return JSONResponse([{"error": "application/vnd.bentoml+pickle is not allowed"}], 415)  # BentoML's list body


async def crash(_: Request) -> JSONResponse:
    return JSONResponse({"error": "An unexpected error has occurred, please check the server log."}, 500)


async def docs(_: Request) -> JSONResponse:
    return JSONResponse(bentoml_like_spec())


async def other(request: Request) -> JSONResponse:
    return JSONResponse({"seen": len(await request.body())})


def bentoml_like_spec() -> dict:
    invalid = {"description": "Bad Request", "content": {"application/json": {"schema": {"$ref": "#/x"}}}}
    return {
        "openapi": "3.0.2",
        "paths": {
            "/predict": {
                "post": {
                    "responses": {"200": {"description": "ok"}, "400": invalid, "404": invalid, "500": invalid},
                    "requestBody": {"content": {"application/json": {"schema": Body.model_json_schema()}}},
                }
            },
            "/metrics": {"get": {"responses": {"200": {"description": "ok"}}}},
        },
        "components": {"schemas": {"InvalidArgument": {"type": "object"}}},
    }


def client(limit: int = LIMIT) -> TestClient:
    app = Starlette(
        routes=[
            Route("/predict", predict, methods=["POST"]),
            Route("/refuse", refuse, methods=["POST"]),
            Route("/crash", crash, methods=["POST"]),
            Route("/docs.json", docs),
            Route("/other", other, methods=["POST"]),
        ]
    )
    routes = {"/predict": ("rows",), "/refuse": (), "/crash": ()}
    return TestClient(EdgeGuard(app, routes=routes, max_body_bytes=limit), raise_server_exceptions=False)


def post(c: TestClient, content: bytes | str, content_type: str | None = "application/json", path: str = "/predict"):
    headers = {"content-type": content_type} if content_type is not None else {}
    return c.post(path, content=content, headers=headers)


def error_of(response) -> ErrorBody:
    assert response.headers["content-type"] == "application/json"
    return ErrorBody.model_validate_json(response.content)  # every error answer is the documented model


# --------------------------------------------------------------------------- the request row


def full_row() -> dict:
    """One application with every feature (credit_risk requires some, and bounds the share missing)."""
    row: dict = {SPEC.dataset.entity_id: "a1"}
    row.update({name: bounds.min for name, bounds in SPEC.features.numeric.items()})
    row.update({name: levels[0] for name, levels in SPEC.features.categorical.items()})
    return {**row, "age": 40}


def test_the_request_row_is_strict_about_json_types():
    row = full_row()
    assert Application.model_validate_json(json.dumps(row)).age == 40.0  # an integer is a number
    for value, kind in [(True, "float_type"), ("40", "float_type"), ("NaN", None)]:
        text = json.dumps({**row, "age": value})
        if kind is None:
            text = text.replace('"NaN"', "NaN")
            kind = "finite_number"
        with pytest.raises(ValidationError) as exc:
            Application.model_validate_json(text)
        assert exc.value.errors()[0]["type"] == kind
    with pytest.raises(ValidationError, match="finite_number|finite number"):
        Application.model_validate_json(json.dumps(row).replace("40", "1e999"))
    with pytest.raises(ValidationError, match="string_type|valid string"):
        Application.model_validate_json(json.dumps({**row, SPEC.dataset.entity_id: 7}))
    with pytest.raises(ValidationError, match="extra_forbidden|Extra inputs"):
        Application.model_validate_json(json.dumps({**row, "nickname": "x"}))


def test_the_request_row_schema_says_number_without_coercion():
    schema = Application.model_json_schema()
    assert schema["additionalProperties"] is False
    assert schema["required"] == [
        SPEC.dataset.entity_id,
        *[n for n in SPEC.features.names if n in SPEC.features.required],
    ]
    numeric = next(n for n in SPEC.features.numeric if n not in SPEC.features.required)
    assert {"type": "number"}.items() <= schema["properties"][numeric]["anyOf"][0].items()


def test_a_row_without_its_required_features_is_a_422_naming_each():
    bento_detail = [  # pydantic's errors as BentoML reports them (loc from the top of the body)
        {**e, "loc": ["applications", 0, *e["loc"]]} for e in _errors({SPEC.dataset.entity_id: "a1"})
    ]
    status, body = normalise_error(400, json.dumps({"error": "x", "detail": bento_detail}).encode(), None)
    assert status == 422
    assert [format_loc(d.loc) for d in body.detail] == [f"applications[0].{n}" for n in SPEC.features.required]
    assert body.error == f"applications[0].{SPEC.features.required[0]}: required key missing (and 3 more problems)"
    null = _errors({**full_row(), SPEC.features.required[0]: None})
    assert [e["type"] for e in null] == ["float_type"]  # a required feature may not be null either


def test_a_row_missing_too_many_features_is_refused_with_what_to_send():
    names, share = SPEC.features.names, SPEC.features.max_missing_share
    allowed = int(share * len(names))
    optional = [n for n in names if n not in SPEC.features.required]
    row = full_row()
    for name in optional[:allowed]:
        row[name] = None
    assert Application.model_validate_json(json.dumps(row))  # exactly the allowed share missing
    del row[optional[allowed]]
    errors = _errors(row)
    status, body = normalise_error(400, json.dumps({"error": "x", "detail": [
        {**e, "loc": ["applications", 0, *e["loc"]]} for e in errors
    ]}).encode(), None)  # fmt: skip
    assert status == 422 and body.detail[0].loc == ["applications", 0]
    assert body.error.startswith(f"applications[0]: {allowed + 1} of {len(names)} features are missing, at most")
    assert "send " in body.error and "Value error" not in body.error


def test_the_documented_row_schema_states_the_missing_limit_and_never_admits_what_is_refused():
    schema = Application.model_json_schema()
    allowed = int(SPEC.features.max_missing_share * len(SPEC.features.names))
    assert f"At most {allowed} of the {len(SPEC.features.names)} features" in schema["description"]
    row = full_row()
    optional = [n for n in SPEC.features.names if n not in SPEC.features.required]
    for name in optional[: allowed + 1]:  # one key fewer than minProperties allows
        del row[name]
    assert len(row) == schema["minProperties"] - 1
    _errors(row)  # JSON Schema refuses it, and so does the service


def _errors(row: dict) -> list[dict]:
    with pytest.raises(ValidationError) as exc:
        Application.model_validate_json(json.dumps(row))
    return exc.value.errors(include_context=False, include_input=False, include_url=False)


# --------------------------------------------------------------------------- pure checks


@pytest.mark.parametrize(
    "header",
    ["multipart/form-data", "multipart/form-data; boundary=x", "text/plain", "application/x-www-form-urlencoded", ""],
)
def test_anything_but_json_is_415(header):
    with pytest.raises(EdgeError) as exc:
        check_content_type(header)
    assert exc.value.status == 415 and "application/json" in exc.value.message


def test_json_in_another_charset_is_415_and_utf8_is_fine():
    check_content_type("application/json")
    check_content_type("Application/JSON; charset=UTF-8")
    with pytest.raises(EdgeError, match="charset 'latin-1'") as exc:
        check_content_type("application/json; charset=latin-1")
    assert exc.value.status == 415


@pytest.mark.parametrize(
    "body,kind,loc,says",
    [
        (b'{"rows": [{"id": "a", "x": 1, "x": 2}]}', "duplicate_key", ["rows", 0, "x"], "duplicate key 'x'"),
        (b'{"rows": [], "rows": []}', "duplicate_key", ["rows"], "duplicate key 'rows'"),
        (b'{"rows": [{"id": "a", "x": NaN}]}', "non_finite_number", ["rows", 0, "x"], "non-finite number not allowed"),
        (b'{"rows": [{"x": -Infinity}]}', "non_finite_number", ["rows", 0, "x"], "non-finite number not allowed"),
        (b'{"rows": [1, Infinity]}', "non_finite_number", ["rows", 1], "non-finite number not allowed"),
        (b'{"rows": ["caf\xe9"]}', "invalid_encoding", [], "not valid UTF-8: byte 0xe9"),
        ('{"rows": []}'.encode("utf-16"), "byte_order_mark", [], "UTF-16 byte order mark (FF FE): send JSON as UTF-8"),
        ('{"rows": []}'.encode("utf-32"), "byte_order_mark", [], "UTF-32 byte order mark (FF FE 00 00)"),
        ('{"rows": []}'.encode("utf-16-le"), "invalid_encoding", [], "NUL byte at offset 1 (UTF-16 or UTF-32?)"),
        (b"\xef\xbb\xbf{}", "byte_order_mark", [], "UTF-8 byte order mark (EF BB BF): send JSON without it"),
        (b"{not json", "invalid_json", [], "not valid JSON: Expecting property name"),
        (b'{"rows": []', "invalid_json", [], "line 1, column 12"),
        (b'{"rows": []} {}', "invalid_json", [], "more than one JSON document (line 1, column 14)"),
        (b" \r\n\t ", "empty_body", [], "the body is empty (only whitespace)"),
        (b"[" * 100_000, "too_deep", [], "more than 32 levels deep"),
        (b"[" * 500 + b"]" * 500, "too_deep", [], "more than 32 levels deep"),  # Python parses it, pydantic not
        (b'{"rows": ' + b"[" * 33 + b"]" * 33 + b"}", "too_deep", [], "more than 32 levels deep"),
        (b'{"rows": [{"id": "\\ud800"}]}', "lone_surrogate", ["rows", 0, "id"], "lone surrogate escape"),
        (b'{"rows": [{"id": "a\\udfff"}]}', "lone_surrogate", ["rows", 0, "id"], "not a Unicode character"),
        (b'{"rows": [{"\\ud83d": 1}]}', "lone_surrogate", ["rows", 0, "\ud83d"], "lone surrogate"),
        (b'"\\ud800"', "lone_surrogate", [], "lone surrogate"),
        (b'{"rows": ' + b"9" * 5000 + b"}", "invalid_json", [], "not valid JSON"),
    ],
)
def test_unreadable_json_is_400_naming_the_problem(body, kind, loc, says):
    with pytest.raises(EdgeError) as exc:
        parse_json_body(body)
    err = exc.value
    assert (err.status, err.kind, err.loc) == (400, kind, loc) and says in err.message
    body_model = err.body()
    assert body_model.detail[0].type == kind and says in body_model.error


def test_nesting_up_to_the_limit_a_surrogate_pair_and_an_escaped_backslash_parse():
    assert parse_json_body(b"[" * 32 + b"]" * 32) is not None
    assert parse_json_body(b'{"id": "\\ud83d\\ude00"}') == {"id": "\U0001f600"}  # a pair is one character
    assert parse_json_body(b'{"id": "\\\\ud800"}') == {"id": "\\ud800"}  # a backslash, then text


def test_good_json_parses_as_usual():
    assert parse_json_body(b'{"rows": [{"id": "a", "x": 1.5, "nested": {"x": 1}}], "y": null}') == {
        "rows": [{"id": "a", "x": 1.5, "nested": {"x": 1}}],
        "y": None,
    }


def test_the_top_level_must_be_an_object_with_known_keys():
    check_top_level({"rows": []}, ("rows",))
    check_top_level({}, ("rows",))  # a missing key is the API model's to report
    with pytest.raises(EdgeError) as exc:
        check_top_level({"rows": [], "padding": "x"}, ("rows",))
    assert exc.value.status == 422 and exc.value.loc == ["padding"]
    assert "unknown top-level key 'padding'" in exc.value.message and "'rows'" in exc.value.message
    with pytest.raises(EdgeError, match="must be a JSON object .* got an array") as exc:
        check_top_level([1], ("rows",))
    assert exc.value.status == 422


def test_locations_read_like_paths():
    assert format_loc(["rows", 0, "x"]) == "rows[0].x" and format_loc([]) == "" and format_loc([2, "a"]) == "[2].a"


def test_bentoml_validation_errors_become_422_saying_what_was_sent():
    document = {"rows": [{"id": "a", "x": True}, {"id": 5, "x": "3"}]}
    errors = [
        {"type": "float_type", "loc": ["rows", 0, "x"], "msg": "Input should be a valid number", "url": "u"},
        {"type": "string_type", "loc": ["rows", 1, "id"], "msg": "Input should be a valid string"},
        {"type": "float_type", "loc": ["rows", 1, "x"], "msg": "Input should be a valid number"},
    ]
    raw = json.dumps({"error": "3 validation errors for Input", "detail": errors}).encode()
    status, body = normalise_error(400, raw, document)
    assert status == 422
    assert body.error == "rows[0].x: expected a number, got a boolean (true) (and 2 more problems)"
    assert [d.msg for d in body.detail] == [
        "expected a number, got a boolean (true)",
        "expected a string, got a number",
        "expected a number, got a string",
    ]
    assert body.detail[0].loc == ["rows", 0, "x"] and body.detail[0].type == "float_type"
    nan = [{"type": "finite_number", "loc": ["rows", 0, "x"], "msg": "Input should be a finite number"}]
    assert normalise_error(400, json.dumps({"error": "e", "detail": nan}).encode(), {})[1].error == (
        "rows[0].x: non-finite number not allowed"
    )


def test_other_error_shapes_keep_their_status_and_message():
    assert normalise_error(415, b'[{"error": "pickle is not allowed"}]', None)[1].error == "pickle is not allowed"
    assert normalise_error(500, b'{"error": "boom"}', None) == (
        500,
        ErrorBody(error="boom", detail=[{"loc": [], "msg": "boom", "type": "internal_error"}]),
    )
    assert normalise_error(503, b"Service Unavailable", None)[1].error == "Service Unavailable"
    assert normalise_error(404, b"", None)[1].error == "Not Found"
    assert normalise_error(405, b"Method Not Allowed", None, {"method": "GET", "path": "/p"})[1].error == (
        "GET is not allowed on /p"
    )


# --------------------------------------------------------------------------- the middleware, over HTTP


def test_a_good_request_passes_untouched():
    response = post(client(), json.dumps({"rows": [good_row()]}))
    assert response.status_code == 200 and response.json() == [{"id": "a1", "score": 0.5}]
    assert response.headers["x-request-id"] == "r1"


def test_multipart_without_a_boundary_is_415_not_500():
    response = post(client(), b"--x\r\n", "multipart/form-data")
    assert response.status_code == 415 and "multipart/form-data is not accepted" in error_of(response).error


def test_a_missing_content_type_with_a_body_is_415_and_an_empty_body_is_400():
    assert post(client(), json.dumps({"rows": [good_row()]}), None).status_code == 415
    for content_type in (None, "application/json"):
        empty = post(client(), b"", content_type)
        assert (
            empty.status_code == 400 and error_of(empty).error == "the body is empty: send one JSON object with 'rows'"
        )
        assert error_of(empty).detail[0].type == "empty_body"
    assert post(client(), b"", path="/crash").status_code == 500  # a route that takes nothing may be sent nothing


def test_duplicate_keys_nan_and_bad_bytes_are_400():
    c = client()
    dup = post(c, b'{"rows": [{"id": "a", "x": 1, "x": 2}]}')
    assert dup.status_code == 400 and error_of(dup).error.startswith("rows[0].x: duplicate key 'x'")
    nan = post(c, b'{"rows": [{"id": "a", "x": NaN}]}')
    assert nan.status_code == 400 and "non-finite number not allowed" in error_of(nan).error
    latin = post(c, '{"rows": [{"id": "café"}]}'.encode("latin-1"))
    assert latin.status_code == 400 and "not valid UTF-8" in error_of(latin).error


def test_field_problems_are_422_in_the_documented_body():
    c = client()
    as_bool = post(c, json.dumps({"rows": [{"id": "a", "x": True}]}))
    assert (
        as_bool.status_code == 422 and error_of(as_bool).error == "rows[0].x: expected a number, got a boolean (true)"
    )
    as_text = post(c, json.dumps({"rows": [{"id": "a", "x": "3"}]}))
    assert as_text.status_code == 422 and error_of(as_text).error == "rows[0].x: expected a number, got a string"
    overflow = post(c, b'{"rows": [{"id": "a", "x": 1e999}]}')
    assert overflow.status_code == 422 and error_of(overflow).error == "rows[0].x: non-finite number not allowed"
    extra = post(c, json.dumps({"rows": [good_row()], "padding": "x"}))
    assert extra.status_code == 422 and error_of(extra).detail[0].loc == ["padding"]


def test_a_body_over_the_limit_is_413_from_its_content_length_without_reading_it():
    read = []

    async def app(scope, receive, send):  # must never be reached
        read.append(await receive())

    guard = EdgeGuard(app, routes={"/predict": ("rows",)}, max_body_bytes=LIMIT)
    response = TestClient(guard).post(
        "/predict", content=b"x" * (LIMIT + 1), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and read == []
    assert (
        error_of(response).detail[0].type == "body_too_large" and f"limit of {LIMIT} bytes" in error_of(response).error
    )


def test_a_streamed_body_over_the_limit_is_413_too():
    def chunks():
        for _ in range(10):
            yield b"x" * 1024

    response = client().post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413


def test_a_body_at_the_limit_is_read():
    body = json.dumps({"rows": [good_row()]})
    body += " " * (LIMIT - len(body))
    assert post(client(), body).status_code == 200


def test_bentoml_list_bodies_and_500s_are_rewritten_and_other_routes_left_alone():
    c = client()
    refused = post(c, b"{}", path="/refuse")
    assert refused.status_code == 415 and error_of(refused).error == "application/vnd.bentoml+pickle is not allowed"
    crashed = post(c, b"{}", path="/crash")
    assert crashed.status_code == 500 and error_of(crashed).detail[0].type == "internal_error"
    unguarded = post(c, b"x" * (LIMIT * 2), "text/plain", path="/other")
    assert unguarded.status_code == 200 and unguarded.json() == {"seen": LIMIT * 2}
    wrong_method = c.get("/predict")
    assert wrong_method.status_code == 405 and error_of(wrong_method).error == "GET is not allowed on /predict"


def test_the_openapi_document_is_patched_once_with_the_error_body():
    c = client()
    spec = c.get("/docs.json").json()
    assert c.get("/docs.json").json() == spec
    operation = spec["paths"]["/predict"]["post"]
    assert sorted(operation["responses"]) == sorted(["200", *map(str, ERROR_RESPONSES)])
    for status in ERROR_RESPONSES:
        schema = operation["responses"][str(status)]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}
    assert operation["requestBody"]["content"]["application/json"]["schema"]["additionalProperties"] is False
    assert operation["requestBody"]["required"] is True  # its schema has a required key
    assert spec["paths"]["/metrics"] == bentoml_like_spec()["paths"]["/metrics"]  # not a guarded route
    assert {"ErrorBody", "ErrorDetail"} <= set(spec["components"]["schemas"])
    assert spec["components"]["schemas"]["ErrorBody"]["required"] == ["error", "detail"]


def test_patch_resolves_a_referenced_request_body_and_replaces_integer_status_keys():
    spec = {
        "paths": {"/p": {"post": {"responses": {200: {}, 400: {}}, "requestBody": {"content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/In"}}}}}}},
        "components": {"schemas": {"In": {"type": "object", "properties": {}}}},
    }  # fmt: skip
    patched = patch_openapi(spec, {"/p": ()})
    assert 400 not in patched["paths"]["/p"]["post"]["responses"]
    assert patched["components"]["schemas"]["In"]["additionalProperties"] is False
    assert "required" not in patched["paths"]["/p"]["post"]["requestBody"]  # nothing required: may be empty


def test_protect_guards_every_api_route_with_its_input_fields():
    class Api:
        def __init__(self, route, fields):
            self.route, self.input_spec = route, type("In", (), {"model_fields": dict.fromkeys(fields)})

    class Service:
        apis = {"predict": Api("/predict", ["rows"]), "ready": Api("/ready", [])}
        middlewares: list = []

        def add_asgi_middleware(self, cls, **options):
            self.middlewares.append((cls, options))

    service = Service()
    protect(service, max_body_bytes=123)
    [(cls, options)] = service.middlewares
    assert cls is EdgeGuard and options["routes"] == {"/predict": ("rows",), "/ready": ()}
    assert options["max_body_bytes"] == 123 and not options["api_keys"]  # no keys configured: open
    assert options["open_paths"] == ("/ready",) and options["client_rows"] == {}


def test_bentoml_keeps_its_traceback_for_server_errors_only():
    import logging
    import sys
    from http import HTTPStatus

    from loopline.serving.service_edges import _ClientErrorsQuiet

    class BentoLike(Exception):  # BentoML's exceptions carry their status as ``error_code``
        def __init__(self, status: HTTPStatus) -> None:
            super().__init__(status.phrase)
            self.error_code = status

    def record_of(error: BaseException) -> logging.LogRecord:
        try:
            raise error
        except BaseException:
            info = sys.exc_info()
        return logging.LogRecord("bentoml", logging.ERROR, __file__, 1, "Exception on /p [POST]", (), info)

    try:
        Application.model_validate({})
    except ValidationError as err:
        invalid = err
    quiet = _ClientErrorsQuiet()
    assert not quiet.filter(record_of(invalid))
    assert not quiet.filter(record_of(BentoLike(HTTPStatus.UNSUPPORTED_MEDIA_TYPE)))
    assert quiet.filter(record_of(BentoLike(HTTPStatus.SERVICE_UNAVAILABLE)))
    assert quiet.filter(record_of(RuntimeError("a bug")))
    assert quiet.filter(logging.LogRecord("bentoml", logging.INFO, __file__, 1, "Service started", (), None))
