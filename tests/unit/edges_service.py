"""One BentoML service for the tests of the service's edges, built like ``serving/bento_service.py``.

Its request row is the platform's (``request_schema.application_model``) for a spec made here
(its own entity, numbers and levels), with ``service_edges.protect`` in front and a refusal hook
the tests point where they need (``SINKS``); only the scoring is left out, since nothing refused
may reach it. BentoML registers its metrics once per process, so every test module shares this
one app (``app()``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import bentoml
from pydantic import Field

from loopline.core.spec import load_spec
from loopline.serving.request_schema import application_model
from loopline.serving.service_edges import Refusal, protect

BASE = load_spec("credit_risk", Path(__file__).resolve().parents[2] / "models")
ENTITY = "customer_ref"


def made_spec(**features):
    """A spec of the tests' own: two numbers and one categorical input with three levels."""
    data = BASE.model_dump()
    data["dataset"]["entity_id"] = ENTITY
    data["dataset"]["rules"]["unique_key"] = [ENTITY]
    data["features"] = {
        "version": "t1",
        "numeric": {"basket_value": {"min": 0, "max": 500}, "visits": {"min": 0, "max": 90}},
        "categorical": {"channel": ["web", "shop", "phone"]},
        **features,
    }
    return type(BASE).model_validate(data)


SPEC = made_spec()
Row = application_model(SPEC)
SINKS: list[Callable[[Refusal], None]] = []  # each refused request is handed to every sink


@bentoml.service(name="edges-under-test")
class EdgesUnderTest:
    @bentoml.api
    def predict(self, applications: list[Row] = Field(min_length=1, max_length=1000)) -> list[dict]:  # type: ignore[valid-type]
        return [{"seen": getattr(a, ENTITY)} for a in applications]


def _to_sinks(refusal: Refusal) -> None:
    for sink in SINKS:
        sink(refusal)


protect(EdgesUnderTest, max_body_bytes=1 << 20, on_refusal=_to_sinks)


@functools.cache
def app():
    return EdgesUnderTest.to_asgi()
