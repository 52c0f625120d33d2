"""The refusal log: every request the service answered 4xx, by reason and field, beside the prediction log.

A refused request never reaches a model, so the prediction log never sees it; without this log
a shift that makes most requests fail validation (a new level, values beyond the bounds) would
leave the drift check looking at the few rows that still pass. One JSON line per refused
request, under ``<prediction_log_dir>/<model>_refusals/refusals.<pid>.<UTC date>.jsonl`` (a file a
worker and day, as the prediction log rotates daily; not BentoML's monitor layout, so nothing that
reads the prediction log's ``data/*.log`` files mistakes it for predictions)::

    {"logged_at": 1767225600.0, "status": 422, "reason": "literal_error", "client": "app-1",
     "route_revision": 7, "path": "/predict", "rows": 5,
     "problems": [{"field": "region", "reason": "literal_error", "value": "central", "rows": 5,
                   "message": "'central' is not allowed: expected 'north', ..."}]}

``rows`` is how many rows the request carried (0 when its body could not be read); each
problem says how many of them had it. ``field`` is the input's name for a problem inside a row,
the location in the body otherwise (``""`` for the whole body). ``value`` is kept for a model
input only (a level, a number: what the drift check names), never for the entity id or
anything else a client sent. ``loopline.monitoring.refusals`` reads it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loopline.core.spec import ModelSpec
from loopline.serving.service_edges import Refusal, format_loc

VALUE_MAX_LENGTH = 64  # a logged value is cut to this many characters
FIELD_MAX_LENGTH = 64


def refusal_dir(log_dir: Path, model: str) -> Path:
    return Path(log_dir) / f"{model}_refusals"


def problems_of(refusal: Refusal, spec: ModelSpec) -> list[dict[str, Any]]:
    """The refusal's problems grouped by (field, reason, value), each with how many rows had it."""
    features = set(spec.features.names)
    rows_key = refusal.rows_key
    grouped: dict[tuple[str, str, Any], dict[str, Any]] = {}
    row_sets: dict[tuple[str, str, Any], set[int]] = defaultdict(set)
    for detail in refusal.body.detail:
        loc = detail.loc
        row = None
        if rows_key and len(loc) >= 2 and loc[0] == rows_key and isinstance(loc[1], int):
            row, inside = loc[1], loc[2:]
            field = str(inside[0]) if inside and isinstance(inside[0], str) else format_loc(inside)
        else:
            field = format_loc(loc)
        value = None
        if field in features and row is not None:
            value = _short(_value_at(refusal.document, [rows_key, row, field]))
        key = (field[:FIELD_MAX_LENGTH], detail.type, value)
        grouped.setdefault(key, {"field": key[0], "reason": detail.type, "value": value, "message": detail.msg})
        row_sets[key].add(row if row is not None else -1)
    return [{**problem, "rows": len(row_sets[key])} for key, problem in grouped.items()]


def _value_at(document: Any, loc: list[Any]) -> Any:
    node = document
    for step in loc:
        if isinstance(node, dict) and step in node:
            node = node[step]
        elif isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
            node = node[step]
        else:
            return None
    return node


def _short(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, int | float):
        return value
    if isinstance(value, str):
        return value[:VALUE_MAX_LENGTH]
    return None  # an array or object where an input belongs: its kind is in the message


class RefusalLog:
    """Appends one line per refused request (one ``write`` per line, so workers' lines never interleave)."""

    def __init__(self, log_dir: Path, spec: ModelSpec) -> None:
        self.spec = spec
        self.folder = refusal_dir(log_dir, spec.name)
        self._lock = threading.Lock()

    def record(self, refusal: Refusal, route_revision: int | None) -> dict[str, Any]:
        line = {
            "logged_at": time.time(),
            "status": refusal.status,
            "reason": refusal.body.detail[0].type if refusal.body.detail else "",
            "client": refusal.client,
            "route_revision": route_revision,
            "path": refusal.path,
            "rows": refusal.rows,
            "problems": problems_of(refusal, self.spec),
        }
        data = (json.dumps(line, default=str) + "\n").encode()
        day = datetime.fromtimestamp(line["logged_at"], UTC).strftime("%Y-%m-%d")
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"refusals.{os.getpid()}.{day}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        return line


def read_refusals(
    log_dir: Path, model: str, since: datetime | None = None, until: datetime | None = None
) -> list[dict[str, Any]]:
    """Refused requests logged in [since, until) (timezone-aware, or None: open); torn lines skipped."""
    low = since.timestamp() if since else float("-inf")
    high = until.timestamp() if until else float("inf")
    found = []
    for path in sorted(refusal_dir(log_dir, model).glob("refusals.*.jsonl")):
        with path.open(encoding="utf-8", errors="replace") as lines:
            for text in lines:
                try:
                    line = json.loads(text)
                    at = float(line["logged_at"])
                except (ValueError, KeyError, TypeError):
                    continue
                if low <= at < high:
                    found.append(line)
    return found
