"""The prediction service's edges: what a request must be before BentoML reads it, and one error body.

``EdgeGuard`` is a plain ASGI middleware (``Service.add_asgi_middleware``; no BentoML
import here, so it is unit-tested on its own). On each API route it answers, before
anything is parsed by BentoML:

- 415 to a body that is not ``application/json`` (UTF-8): multipart, form data, a
  pickle, or JSON declared in another charset;
- 413 to a body over ``max_body_bytes``: at once from ``Content-Length``, or as soon
  as a streamed body passes the limit, without reading the rest;
- 400 to a body that is not one unambiguous JSON document: empty (on a route that
  takes input), a byte order mark or a NUL byte (UTF-16/32), not UTF-8, malformed,
  more than one document, nested beyond ``MAX_DEPTH``, a lone surrogate escape
  (``"\\ud800"``: not a character; pydantic would fail on it later with a 422), a
  key twice in one object (the key is named: JSON parsers disagree on which copy
  wins), NaN or ±Infinity (not JSON; ``non-finite number not allowed``);
- 422 to a document that does not fit the request: not an object, or an unknown
  top-level key (named). Field-level problems (types, ranges, levels) are left to
  the API's pydantic model, and BentoML's answer to them becomes a 422 here too.

Every refused request (4xx) is logged as one WARNING line (status, reason, where in the
body, client, address; no traceback: BentoML's own ERROR record with its traceback for a
client error is filtered out) and handed to ``on_refusal`` (the service's refusal log,
``loopline.serving.refusal_log``).

Every error response of a guarded route, whoever raised it, leaves with the body
``ErrorBody`` (one line naming the problem, then one entry per problem with its
location), and the service's OpenAPI document (``/docs.json``) is patched once to
say so for every route: the schema and the answers agree.

With API keys configured (``loopline.serving.auth``), every guarded route but the
``open_paths`` (``/ready``) first needs a valid key: 401 without one, before a byte of
the body is read. The key's client name is then written into each row of the
request (the reserved row key ``loopline_client``, which a client may not send itself),
so it survives the merging of requests into one call and reaches the prediction log.

The extra cost on a good request is one standard-library JSON parse of the body
(tens of microseconds for one row, a few milliseconds for a full batch), needed
because no faster parser reports duplicate keys; error responses alone are buffered.
"""

from __future__ import annotations

import codecs
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loopline.core.api_keys import ApiKeyError
from loopline.serving.auth import CLIENT_FIELD, OPEN_CLIENT, ApiKeys, presented_key

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_MEDIA_TYPE = "application/json"
DOCS_PATH = "/docs.json"  # where BentoML serves the OpenAPI document
SCHEMA_REF = "#/components/schemas/"
ERROR_SCHEMA_NAME = "ErrorBody"
# Every error status a guarded route answers with, as documented in the OpenAPI.
ERROR_RESPONSES: dict[int, str] = {
    400: "Not one readable JSON document: empty, not UTF-8 (or with a byte order mark), malformed, nested too "
    "deeply, a lone surrogate escape, a duplicate key, or a non-finite number",
    401: "No valid API key: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
    404: "Not found",
    413: "Request body larger than the service reads",
    415: "Not sent as application/json (UTF-8)",
    422: "Well-formed JSON that does not fit the request: a wrong type, a value out of range, "
    "an unknown or a missing key",
    500: "Internal error",
    503: "Overloaded: the request waited longer than the traffic timeout",
}
_KINDS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    500: "internal_error",
    503: "unavailable",
}


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    loc: list[str | int] = Field(
        description="Where in the request body: object keys and array indices from the top; empty for the body"
    )
    msg: str = Field(description="What is wrong there")
    type: str = Field(description="A stable, machine-readable name for the kind of problem")


class ErrorBody(BaseModel):
    """The body of every error response of the service's API routes."""

    model_config = ConfigDict(extra="forbid", title=ERROR_SCHEMA_NAME)

    error: str = Field(description="One line naming the problem (the first of several, with their count)")
    detail: list[ErrorDetail] = Field(description="Each problem found, with where it is")


log = logging.getLogger(__name__)
BENTOML_ERROR_LOGGER = "bentoml._internal.server.http_app"  # where BentoML logs every API exception, as ERROR


@dataclass(frozen=True)
class Refusal:
    """A request answered 4xx (by the guard or by the API's own validation): what the warning line and the
    refusal log say about it."""

    method: str
    path: str
    status: int
    client: str  # the API key's client; "unknown" before a key was accepted
    peer: str  # the client's address, as the server saw it
    body: ErrorBody
    document: Any = None  # the parsed body; None when it was not readable
    rows_key: str | None = None  # the top-level key holding the request's rows, as the client sent it

    @property
    def rows(self) -> int:
        """How many rows the refused request carried (0: none could be read)."""
        rows = self.document.get(self.rows_key) if isinstance(self.document, dict) and self.rows_key else None
        return len(rows) if isinstance(rows, list) else 0

    def line(self) -> str:
        """One log line: status, reason, where, client; no traceback, no control characters from the client."""
        detail = self.body.detail[0] if self.body.detail else None
        where = format_loc(detail.loc) if detail else ""
        text = f"refused {self.method} {self.path}: {self.status} {detail.type if detail else _KINDS.get(self.status)}"
        text += f" at {where}" if where else ""
        text += f" from client {self.client!r} ({self.peer}): {self.body.error}"
        return _printable(text)[:600]


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _ClientErrorsQuiet(logging.Filter):
    """Drops BentoML's ERROR record (with its traceback) for a request the client got wrong: the guard logs
    one WARNING line for it instead. Server errors (5xx) keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is None:
            return True
        if isinstance(error, ValidationError):
            return False
        code = getattr(error, "error_code", None)
        return not (isinstance(code, int) and 400 <= code < 500)


def quiet_client_errors(logger_name: str = BENTOML_ERROR_LOGGER) -> None:
    """Install the filter once on BentoML's API error logger."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _ClientErrorsQuiet) for f in logger.filters):
        logger.addFilter(_ClientErrorsQuiet())


class EdgeError(Exception):
    """A request refused at the edge: HTTP status, kind, message and where in the body."""

    def __init__(self, status: int, kind: str, message: str, loc: Sequence[str | int] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.loc = list(loc)

    def body(self) -> ErrorBody:
        where = format_loc(self.loc)
        return ErrorBody(
            error=f"{where}: {self.message}" if where else self.message,
            detail=[ErrorDetail(loc=self.loc, msg=self.message, type=self.kind)],
        )


def format_loc(loc: Sequence[str | int]) -> str:
    """``["rows", 0, "age"]`` -> ``rows[0].age``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# --------------------------------------------------------------------------- request checks


def check_content_type(header: str | None) -> None:
    """415 unless the declared media type is JSON in UTF-8 (a missing header is judged with the body)."""
    if header is None:
        return
    media_type, _, params = header.partition(";")
    media_type = media_type.strip().lower()
    if media_type != JSON_MEDIA_TYPE:
        shown = media_type or "an empty Content-Type"
        raise EdgeError(415, "unsupported_media_type", f"{shown} is not accepted: send the body as {JSON_MEDIA_TYPE}")
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
            if charset not in ("utf-8", "utf8"):
                raise EdgeError(
                    415, "unsupported_charset", f"charset {charset!r} is not accepted: JSON is read as UTF-8"
                )


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class _NonFinite(ValueError):
    def __init__(self, constant: str) -> None:
        super().__init__(constant)
        self.constant = constant


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def _refuse_constant(constant: str) -> Any:
    raise _NonFinite(constant)


_STRICT = json.JSONDecoder(object_pairs_hook=_unique_pairs, parse_constant=_refuse_constant)


MAX_DEPTH = 32  # arrays and objects nested in one another; a request needs 3
_BOMS = (  # longest first: UTF-32's little-endian mark begins with UTF-16's
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"), (codecs.BOM_UTF8, "UTF-8"),
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)  # fmt: skip


def _check_encoding(body: bytes) -> str:
    """The body as text; EdgeError 400 naming a byte order mark, a NUL byte (UTF-16/32) or a byte not UTF-8."""
    for mark, encoding in _BOMS:
        if body.startswith(mark):
            shown = " ".join(f"{b:02X}" for b in mark)
            if encoding == "UTF-8":
                message = f"the body starts with a UTF-8 byte order mark ({shown}): send JSON without it"
            else:
                message = f"the body starts with a {encoding} byte order mark ({shown}): send JSON as UTF-8"
            raise EdgeError(400, "byte_order_mark", message)
    nul = body.find(b"\x00")
    if nul >= 0:
        raise EdgeError(
            400, "invalid_encoding",
            f"the body has a NUL byte at offset {nul} (UTF-16 or UTF-32?): send JSON as UTF-8",
        )  # fmt: skip
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise EdgeError(
            400, "invalid_encoding", f"the body is not valid UTF-8: byte 0x{body[err.start]:02x} at offset {err.start}"
        ) from None


def _too_deep() -> EdgeError:
    return EdgeError(
        400, "too_deep", f"the body nests arrays and objects more than {MAX_DEPTH} levels deep (a request needs 3)"
    )


def _depth_over(document: Any, limit: int) -> bool:
    """Whether ``document`` nests arrays and objects more than ``limit`` levels deep (level by level, no recursion).

    A node's values are typed in one C-level pass (``set(map(type, ...))``); only a node holding a
    container is walked in Python: a request's rows are flat, so this costs a fraction of the parse.
    """
    level = [document] if type(document) in (dict, list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        deeper: list[Any] = []
        for node in level:
            values = node.values() if type(node) is dict else node
            kinds = set(map(type, values))
            if dict in kinds or list in kinds:  # the parser makes exactly these types
                deeper.extend(v for v in values if type(v) is dict or type(v) is list)
        level = deeper
    return False


def _lone_surrogate(node: Any) -> Any:
    """For ``_locate``: the key or string that holds a lone surrogate (not a Unicode character)."""
    if isinstance(node, _Pairs):
        for key, _ in node:
            if _has_surrogate(key):
                return key
        return None
    return isinstance(node, str) and _has_surrogate(node)


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def parse_json_body(body: bytes) -> Any:
    """The one JSON document in ``body``; EdgeError 400 naming what makes it unreadable.

    Beyond the standard library's parser, what it accepts and pydantic's (BentoML's) would not,
    or would report as a field problem, is refused here by name: a byte order mark, a NUL byte,
    nesting beyond ``MAX_DEPTH`` and a lone surrogate escape (``"\\ud800"``).
    """
    text = _check_encoding(body)
    if not text.strip(" \t\r\n"):
        raise EdgeError(400, "empty_body", "the body is empty (only whitespace): send one JSON object")
    try:
        document = _STRICT.decode(text)
    except _DuplicateKey as err:
        key = err.key
        loc = _locate(text, lambda node: _duplicate_of(node, key))
        message = f"duplicate key {key!r}: each key may appear once in an object"
        raise EdgeError(400, "duplicate_key", message, loc) from None
    except _NonFinite as err:
        loc = _locate(text, lambda node: node is _CONSTANT)
        raise EdgeError(
            400, "non_finite_number", f"non-finite number not allowed ({err.constant} is not JSON)", loc
        ) from None
    except json.JSONDecodeError as err:
        what = "more than one JSON document" if err.msg == "Extra data" else err.msg
        raise EdgeError(
            400, "invalid_json", f"the body is not valid JSON: {what} (line {err.lineno}, column {err.colno})"
        ) from None
    except RecursionError:
        raise _too_deep() from None
    except ValueError as err:  # e.g. an integer with more digits than Python converts
        raise EdgeError(400, "invalid_json", f"the body is not valid JSON: {err}") from None
    if _depth_over(document, MAX_DEPTH):
        raise _too_deep()
    if "\\u" in text:  # only an escape can make a lone surrogate (raw UTF-8 ones fail decoding above)
        loc = _locate(text, _lone_surrogate)
        if loc or _lone_surrogate(document) is True:
            raise EdgeError(
                400, "lone_surrogate",
                "a lone surrogate escape (\\ud800-\\udfff without its pair) is not a Unicode character: "
                "send the character itself, or both halves of its pair", loc,
            )  # fmt: skip
    return document


def check_top_level(document: Any, allowed: Sequence[str]) -> None:
    """422 unless ``document`` is an object whose keys are all in ``allowed``."""
    expected = ", ".join(repr(k) for k in allowed) or "no keys"
    if not isinstance(document, dict):
        raise EdgeError(
            422, "object_type", f"the body must be a JSON object (keys: {expected}), got {json_kind(document)}"
        )
    unknown = [key for key in document if key not in allowed]
    if unknown:
        message = f"unknown top-level key {unknown[0]!r} (allowed: {expected})"
        raise EdgeError(422, "extra_forbidden", message, [unknown[0]])


# The error path only: where in the document a duplicate key or a non-finite constant is.
class _Pairs(list):
    pass


_CONSTANT = object()
_LOCATOR = json.JSONDecoder(object_pairs_hook=_Pairs, parse_constant=lambda _: _CONSTANT)


def _duplicate_of(node: Any, key: str) -> str | None:
    if isinstance(node, _Pairs) and sum(1 for k, _ in node if k == key) > 1:
        return key
    return None


def _locate(text: str, match: Callable[[Any], Any]) -> list[str | int]:
    try:
        found = _find(_LOCATOR.decode(text), match, [])
    except (ValueError, RecursionError):
        return []
    return found or []


def _find(node: Any, match: Callable[[Any], Any], path: list[str | int]) -> list[str | int] | None:
    hit = match(node)
    if hit is True:
        return path
    if isinstance(hit, str):
        return [*path, hit]
    if isinstance(node, _Pairs):
        children = [(k, v) for k, v in node]
    elif isinstance(node, list):
        children = list(enumerate(node))
    else:
        return None
    for step, child in children:
        found = _find(child, match, [*path, step])
        if found is not None:
            return found
    return None


# --------------------------------------------------------------------------- error bodies

_MISSING = object()


def json_kind(value: Any) -> str:
    """What JSON calls ``value``'s type, with an article, for messages."""
    if value is _MISSING:
        return "nothing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({json.dumps(value)})"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _value_at(document: Any, loc: Sequence[Any]) -> Any:
    node = document
    for step in loc:
        if isinstance(node, dict) and isinstance(step, str) and step in node:
            node = node[step]
        elif isinstance(node, list) and isinstance(step, int) and -len(node) <= step < len(node):
            node = node[step]
        else:
            return _MISSING
    return node


def _message(error: Mapping[str, Any], document: Any) -> str:
    kind = str(error.get("type", ""))
    if kind == "finite_number":
        return "non-finite number not allowed"
    got = json_kind(_value_at(document, error.get("loc") or ()))
    if kind in ("float_type", "int_type", "float_parsing", "int_parsing"):
        return f"expected a number, got {got}"
    if kind in ("string_type", "bool_type", "list_type"):
        wanted = {"string_type": "a string", "bool_type": "a boolean", "list_type": "an array"}[kind]
        return f"expected {wanted}, got {got}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected an object, got {got}"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "literal_error":  # a categorical level the spec does not know
        value = _value_at(document, error.get("loc") or ())
        expected = str(error.get("msg") or "").removeprefix("Input should be ")
        sent = repr(value) if isinstance(value, str) else json_kind(value)
        return f"{sent} is not allowed: expected {expected}" if expected else f"{sent} is not allowed"
    if kind == "missing":
        return "required key missing"
    if kind == "value_error":  # a row-level rule of the request model (e.g. too many features missing)
        return str(error.get("msg") or "invalid value").removeprefix("Value error, ")
    return str(error.get("msg") or kind or "invalid value")


def from_validation_errors(errors: Sequence[Mapping[str, Any]], document: Any) -> ErrorBody:
    """Pydantic's errors (as BentoML reports them) as an ErrorBody, with messages saying what was sent."""
    details = [
        ErrorDetail(
            loc=[p for p in (e.get("loc") or ()) if isinstance(p, str | int)],
            msg=_message(e, document),
            type=str(e.get("type") or "value_error"),
        )
        for e in errors
    ] or [ErrorDetail(loc=[], msg="invalid request", type="value_error")]
    first = details[0]
    where = format_loc(first.loc)
    line = f"{where}: {first.msg}" if where else first.msg
    if len(details) > 1:
        line += f" (and {len(details) - 1} more problem{'s' if len(details) > 2 else ''})"
    return ErrorBody(error=line, detail=details)


def _is_validation(detail: Any) -> bool:
    return (
        isinstance(detail, list)
        and bool(detail)
        and all(isinstance(d, dict) and "loc" in d and "type" in d for d in detail)
    )


def _plain_message(payload: Any, raw: bytes) -> str:
    """BentoML's own error bodies: ``{"error": ...}``, or that in a one-item list; else the text."""
    if isinstance(payload, list) and len(payload) == 1:
        payload = payload[0]
    if isinstance(payload, list) and len(payload) == 1:  # BentoML answers a 4xx exception as [{"error": ...}]
        payload = payload[0]
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        return payload["error"]
    return raw.decode("utf-8", "replace").strip()[:500]


def normalise_error(status: int, raw: bytes, document: Any, scope: Scope | None = None) -> tuple[int, ErrorBody]:
    """Any error response of a guarded route as ``(status, ErrorBody)``; BentoML's validation 400 becomes 422."""
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = None
    if status == 400 and isinstance(payload, dict) and _is_validation(payload.get("detail")):
        return 422, from_validation_errors(payload["detail"], document)
    kind = _KINDS.get(status, f"http_{status}")
    if status == 405 and scope is not None:
        message = f"{scope.get('method')} is not allowed on {scope.get('path')}"
    else:
        message = _plain_message(payload, raw) or _phrase(status)
    return status, ErrorBody(error=message, detail=[ErrorDetail(loc=[], msg=message, type=kind)])


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


# --------------------------------------------------------------------------- OpenAPI


def error_schema_components() -> dict[str, dict]:
    schema = ErrorBody.model_json_schema(ref_template=SCHEMA_REF + "{model}")
    components = schema.pop("$defs", {})
    components[ERROR_SCHEMA_NAME] = schema
    return components


def patch_openapi(spec: dict, routes: Mapping[str, Sequence[str]]) -> dict:
    """Document ErrorBody for every error status of each guarded route, and its closed request body."""
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(error_schema_components())
    content = {JSON_MEDIA_TYPE: {"schema": {"$ref": SCHEMA_REF + ERROR_SCHEMA_NAME}}}
    for path in routes:
        for operation in (spec.get("paths", {}).get(path) or {}).values():
            if not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            for status in [k for k in responses if str(k) != "200" and str(k).isdigit() and int(k) >= 400]:
                del responses[status]  # BentoML's own error entries (ints or strings): replaced below
            for status, description in ERROR_RESPONSES.items():
                responses[str(status)] = {"description": description, "content": content}
            body = operation.get("requestBody", {}).get("content", {}).get(JSON_MEDIA_TYPE, {}).get("schema")
            if isinstance(body, dict) and "$ref" in body:
                body = schemas.get(str(body["$ref"]).removeprefix(SCHEMA_REF))
            if isinstance(body, dict) and body.get("type") == "object":
                body["additionalProperties"] = False  # unknown top-level keys are refused (check_top_level)
                if body.get("required"):  # an empty body reads as {}: without its required keys, a 422
                    operation["requestBody"]["required"] = True
    return spec


# --------------------------------------------------------------------------- the middleware


class _Disconnected(Exception):
    pass


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _send_json(send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *headers,
                (b"content-type", JSON_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class EdgeGuard:
    """ASGI middleware guarding ``routes`` (path -> the request body's allowed top-level keys)."""

    def __init__(
        self, app: ASGIApp, routes: Mapping[str, Sequence[str]], max_body_bytes: int, docs_path: str = DOCS_PATH,
        api_keys: ApiKeys | None = None, open_paths: Sequence[str] = (),
        client_rows: Mapping[str, str | Sequence[str]] | None = None,
        describe: Callable[[], str] | None = None, on_refusal: Callable[[Refusal], None] | None = None,
    ) -> None:  # fmt: skip
        """``client_rows``: path -> the top-level key (or keys) whose list of rows gets each row's client name.

        ``on_refusal``: called with each request answered 4xx (after its one WARNING line), e.g. to
        write it to the refusal log; its failure is logged, never the client's problem.

        ``describe``: what is serving right now, in words; the OpenAPI document's title and version
        say it (BentoML's name the Bento's pinned model, which need not be the one answering).
        """
        if max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be above 0")
        self.app = app
        self.routes = {path: tuple(keys) for path, keys in routes.items()}
        self.max_body_bytes = max_body_bytes
        self.docs_path = docs_path
        self.api_keys = api_keys if api_keys else None
        self.open_paths = set(open_paths)
        self.client_rows = dict(client_rows or {})
        self.describe = describe
        self.on_refusal = on_refusal
        self._docs: dict | None = None
        quiet_client_errors()  # BentoML's ERROR + traceback per refused request becomes our one WARNING line

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path == self.docs_path and scope.get("method") == "GET":
            await self._serve_docs(scope, receive, send)
            return
        allowed = self.routes.get(path)
        if allowed is None:
            await self.app(scope, receive, send)
            return
        document: Any = None
        try:
            client = self._authenticate(scope, path)
        except EdgeError as err:
            challenge = [(b"www-authenticate", b'Bearer realm="loopline"')]
            self._refused(scope, err.status, err.body(), "unknown", None)
            await _send_json(send, err.status, err.body().model_dump_json().encode(), challenge)
            return
        if scope.get("method") == "POST":
            try:
                body, document = await self._read_checked(scope, receive, allowed)
                rows = self.client_rows.get(path)
                if rows is not None:
                    body, scope = _with_client(document, rows, client, body, scope, self.api_keys is not None)
            except EdgeError as err:
                self._refused(scope, err.status, err.body(), client, document)
                await _send_json(send, err.status, err.body().model_dump_json().encode())
                return
            except _Disconnected:
                return
            receive = _replay(body, receive)

        def refused(status: int, error: ErrorBody) -> None:
            self._refused(scope, status, error, client, document)

        await self.app(scope, receive, _ErrorBodies(send, document, scope, refused))

    def _refused(self, scope: Scope, status: int, body: ErrorBody, client: str, document: Any) -> None:
        """One WARNING line per refused request (never a traceback), then the refusal hook."""
        peer = scope.get("client") or ("?", 0)
        path = scope.get("path", "")
        refusal = Refusal(
            method=str(scope.get("method")), path=path, status=status, client=client, peer=str(peer[0]),
            body=body, document=document, rows_key=sent_rows_key(document, self.client_rows.get(path)),
        )  # fmt: skip
        log.warning("%s", refusal.line())
        if self.on_refusal is not None:
            try:
                self.on_refusal(refusal)
            except Exception:  # the refusal log must never turn a 4xx into a 500
                log.exception("recording a refused request failed")

    def _authenticate(self, scope: Scope, path: str) -> str:
        """The client's name; EdgeError 401 without a valid key (never echoing it). Open: OPEN_CLIENT."""
        if self.api_keys is None or path in self.open_paths:
            return OPEN_CLIENT
        key = presented_key(_header(scope, b"authorization"), _header(scope, b"x-api-key"))
        if key is None:
            how = "send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
            raise EdgeError(401, "missing_api_key", f"an API key is required: {how}")
        client = self.api_keys.client_of(key)
        if client is None:
            raise EdgeError(401, "invalid_api_key", "the API key is not valid: ask for a key for your client")
        return client

    async def _read_checked(self, scope: Scope, receive: Receive, allowed: Sequence[str]) -> tuple[bytes, Any]:
        content_type = _header(scope, b"content-type")
        check_content_type(content_type)
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                raise EdgeError(400, "invalid_content_length", f"Content-Length {declared!r} is not a number") from None
            if length > self.max_body_bytes:
                raise self._too_large(f"the body ({length} bytes)")
        body = await self._read(receive)
        if not body.strip(b" \t\r\n"):
            if allowed:  # not one JSON document (BentoML would read it as {} and answer 422 "missing")
                keys = ", ".join(repr(k) for k in allowed)
                raise EdgeError(400, "empty_body", f"the body is empty: send one JSON object with {keys}")
            return b"", {}  # a route that takes nothing (the readiness probe)
        else:
            if content_type is None:
                raise EdgeError(415, "unsupported_media_type", f"no Content-Type: send the body as {JSON_MEDIA_TYPE}")
            document = parse_json_body(body)
        check_top_level(document, allowed)
        return body, document

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large("the body")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self, what: str) -> EdgeError:
        return EdgeError(
            413,
            "body_too_large",
            f"{what} is over the limit of {self.max_body_bytes} bytes: split it into smaller requests",
        )

    async def _serve_docs(self, scope: Scope, receive: Receive, send: Send) -> None:
        """BentoML's OpenAPI document with the edges' errors in it (patched once) and what serves now."""
        if self._docs is None:
            captured = _Captured()
            await self.app(scope, receive, captured)
            if captured.status != 200:
                await captured.replay(send)
                return
            self._docs = patch_openapi(json.loads(captured.body), self.routes)
        document = self._docs
        if self.describe is not None:
            serving = self.describe()
            info = {**document.get("info", {}), "version": serving}
            info["title"] = f"{info.get('title', 'service')} ({serving})"
            document = {**document, "info": info}
        await _send_json(send, 200, json.dumps(document).encode())


def sent_rows_key(document: Any, rows_keys: str | Sequence[str] | None) -> str | None:
    """The key the rows were sent under: the first of ``rows_keys`` (key, then aliases) present, else the key."""
    if not rows_keys:
        return None
    keys = (rows_keys,) if isinstance(rows_keys, str) else tuple(rows_keys)
    return next((k for k in keys if isinstance(document, dict) and k in document), keys[0])


def _with_client(
    document: Any, rows_keys: str | Sequence[str], client: str, body: bytes, scope: Scope, inject: bool
) -> tuple[bytes, Scope]:
    """Each row of ``document[rows_key]`` carries ``client`` (re-serialised body, its Content-Length with it).

    ``rows_keys``: the key, or the keys it may be sent under (the first one present counts).
    A row that already names a client is refused: only the guard may say who sent it. Without
    keys (``inject`` False) nothing is rewritten: the service logs such rows as OPEN_CLIENT.
    """
    rows_key = sent_rows_key(document, rows_keys)
    rows = document.get(rows_key) if isinstance(document, dict) else None
    if not isinstance(rows, list):
        return body, scope  # the API's own model answers what is wrong with it
    for index, row in enumerate(rows):
        if isinstance(row, dict) and CLIENT_FIELD in row:
            raise EdgeError(422, "extra_forbidden", "unknown key", [rows_key, index, CLIENT_FIELD])
    if not inject:
        return body, scope
    for row in rows:
        if isinstance(row, dict):
            row[CLIENT_FIELD] = client
    new_body = json.dumps(document).encode()
    headers = [(k, v) for k, v in scope.get("headers") or () if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(new_body)).encode()))
    return new_body, {**scope, "headers": headers}


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, handed on as one message; then the client's own messages (disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class _Captured:
    """A whole response kept in memory (the OpenAPI document)."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers") or [])
        elif message["type"] == "http.response.body":
            self.chunks.append(message.get("body", b""))

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    async def replay(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


class _ErrorBodies:
    """Passes successful responses straight through; holds an error response and sends it as an ErrorBody."""

    def __init__(
        self, send: Send, document: Any, scope: Scope, refused: Callable[[int, ErrorBody], None] | None = None
    ) -> None:
        self.send = send
        self.document = document
        self.scope = scope
        self.refused = refused
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start" and message["status"] >= 400:
            self.start = message
            return
        if self.start is None or kind != "http.response.body":
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        status, body = normalise_error(self.start["status"], b"".join(self.chunks), self.document, self.scope)
        if self.refused is not None and 400 <= status < 500:
            self.refused(status, body)
        dropped = (b"content-type", b"content-length")
        keep = [(k, v) for k, v in self.start.get("headers") or () if k.lower() not in dropped]
        self.start = None
        await _send_json(self.send, status, body.model_dump_json().encode(), keep)


def body_keys(name: str, info: Any) -> tuple[str, ...]:
    """The top-level keys an input field is read from: its name and the names its validation alias accepts."""
    alias = getattr(info, "validation_alias", None)
    choices = getattr(alias, "choices", [alias] if isinstance(alias, str) else [])
    return tuple(dict.fromkeys([name, *(c for c in choices if isinstance(c, str))]))


def client_rows_of(service: Any) -> dict[str, tuple[str, ...]]:
    """Per API route, the keys of the input field holding a list of rows that have the CLIENT_FIELD key."""
    found = {}
    for api in service.apis.values():
        for name, info in api.input_spec.model_fields.items():
            for row in getattr(getattr(info, "annotation", None), "__args__", ()):
                if CLIENT_FIELD in getattr(row, "model_fields", {}):
                    found[api.route] = body_keys(name, info)
    return found


def protect(
    service: Any, max_body_bytes: int, api_keys: Sequence[tuple[str, str]] = (), require_keys: bool = False,
    open_paths: Sequence[str] = ("/ready",), describe: Callable[[], str] | None = None,
    on_refusal: Callable[[Refusal], None] | None = None,
) -> None:  # fmt: skip
    """Put an EdgeGuard in front of every API route of a BentoML service (``service.apis``).

    The allowed top-level keys of each route are its input model's fields, so the
    guard and BentoML's own schema cannot disagree. With ``api_keys`` every route but
    ``open_paths`` needs a key; ``require_keys`` refuses to run open (the full stack).
    """
    if require_keys and not api_keys:
        raise ApiKeyError(
            "LOOPLINE_REQUIRE_API_KEYS is set but LOOPLINE_API_KEYS lists no key: the prediction API would be open"
        )
    routes = {
        api.route: tuple(k for name, info in api.input_spec.model_fields.items() for k in body_keys(name, info))
        for api in service.apis.values()
    }
    service.add_asgi_middleware(
        EdgeGuard, routes=routes, max_body_bytes=max_body_bytes, api_keys=ApiKeys(api_keys),
        open_paths=open_paths, client_rows=client_rows_of(service), describe=describe, on_refusal=on_refusal,
    )  # fmt: skip
