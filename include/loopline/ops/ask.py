"""``loopline ask``: one real request to a model's champion Bento, as a caller would send it.

The demo's last step (and a newcomer's first look at serving): the champion's Bento is started
with ``bentoml serve`` on a free local port, the request goes over HTTP to ``/predict``, the
answer is printed, the server stops. With no body given, the request is built from the newest
rows of the model's latest data version: what a caller carries (the entity id, the join keys of
stored features, the request-time inputs), never the target or the event time. A model that
reads stored features answers from the feature store's online copy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from loopline.core.errors import LooplineError
from loopline.core.settings import Settings
from loopline.core.spec import ModelSpec
from loopline.serving.packaging import BENTO_TAG


class AskError(LooplineError, RuntimeError):
    """No champion, no Bento, or no data to build a request from: the message says which."""


@dataclass
class Asked:
    version: str
    bento: str
    instances: list[dict[str, Any]]
    status: int
    answer: Any

    def text(self) -> str:
        return (
            f"champion v{self.version} ({self.bento}) over HTTP, POST /predict:\n"
            f"request  {json.dumps({'instances': self.instances}, default=str)}\n"
            f"answer   HTTP {self.status} {json.dumps(self.answer, default=str)}"
        )


def caller_columns(spec: ModelSpec) -> list[str]:
    """What a request row carries: the entity id, the join keys, the request-time inputs."""
    return list(dict.fromkeys([spec.dataset.entity_id, *spec.dataset.keys, *spec.features.names]))


def example_instances(spec: ModelSpec, settings: Settings, rows: int = 2) -> list[dict[str, Any]]:
    """The newest ``rows`` rows of the model's latest data version, as a caller would send them."""
    from loopline.ingestion.ingest import registry_for

    registry = registry_for(settings)
    try:
        version = registry.resolve(spec.dataset.name, "latest")
    except LooplineError as err:
        raise AskError(f"{spec.name}: no data version to build a request from ({err}); pass --body") from None
    frame = registry.load(version, settings.work_dir / "ask" / spec.name)
    newest = frame.sort_values(spec.dataset.timestamp, kind="stable").tail(rows)
    present = [c for c in caller_columns(spec) if c in newest.columns]
    return json.loads(newest[present].to_json(orient="records"))


def champion_bento(spec: ModelSpec, settings: Settings) -> tuple[str, str]:
    from loopline.core import tracking

    client = tracking.client_for(settings)
    version = tracking.alias_version(client, spec.name, "champion")
    if version is None:
        raise AskError(f"{spec.name} has no champion yet: train it first (airflow dags test {spec.name}_train)")
    tag = client.get_model_version(spec.name, str(version)).tags.get(BENTO_TAG)
    if not tag:
        raise AskError(f"{spec.name} v{version} has no Bento (tag {BENTO_TAG}): its train run did not package it")
    return str(version), tag


def ask(spec: ModelSpec, settings: Settings, instances: list[dict[str, Any]] | None = None) -> Asked:
    import requests

    from loopline.serving.bento_server import BentoServer
    from loopline.serving.request_body import ROWS_KEY

    version, tag = champion_bento(spec, settings)
    rows = instances if instances is not None else example_instances(spec, settings)
    server = BentoServer(tag)
    try:
        response = requests.post(f"{server.url}/predict", json={ROWS_KEY: rows}, timeout=60)
    finally:
        server.stop()
    try:
        answer: Any = response.json()
    except ValueError:
        answer = response.text
    return Asked(version, tag, rows, response.status_code, answer)
