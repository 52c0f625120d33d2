"""``loopline trace``: one decision, from its request id back to the data it was learned from.

"Why was this applicant declined?" in one answer: the logged inputs (the entity id only as
its pseudonym), the answer and its reason codes, the model version and the route at that
moment (champion or canary, at which weight), the Bento, the MLflow run, the DVC data
version and its hash, the feature version and the code commit; then the logged inputs are
scored again with that very version to show the answer is reproduced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from loopline.core.errors import LooplineError
from loopline.core.settings import Settings

ANSWER_COLUMNS = ("score", "decision", "reasons")


class TraceError(LooplineError, LookupError):
    """The request id is not in the model's prediction log (or its model version is gone)."""


@dataclass
class Trace:
    model: str
    request_id: str
    logged_at: datetime
    model_version: str
    arm: str
    inputs: dict[str, Any]
    answer: dict[str, Any]
    route: dict[str, Any] | None  # what served traffic at that moment (None: no record that old)
    route_change: str  # the audit record that set it
    lineage: dict[str, str] = field(default_factory=dict)
    rescored: dict[str, Any] = field(default_factory=dict)

    @property
    def reproduced(self) -> bool:
        logged, again = self.answer.get("score"), self.rescored.get("score")
        if logged is None or again is None:
            return False
        same_decision = self.answer.get("decision") == self.rescored.get("decision")
        return math.isclose(float(logged), float(again), rel_tol=1e-9, abs_tol=1e-12) and same_decision

    def text(self) -> str:
        route = self.route or {}
        canary = (
            f", canary v{route['canary_version']} at {route['canary_weight']:.0%}"
            if route.get("canary_version")
            else ""
        )
        lines = [
            f"request {self.request_id} ({self.model}) at {self.logged_at:%Y-%m-%d %H:%M:%S} UTC",
            f"  answer     score {self.answer.get('score')}, decision {self.answer.get('decision')},"
            f" reasons {', '.join(self.answer.get('reasons') or [])}",
            f"  served by  v{self.model_version} as {self.arm}; route then: champion v{route.get('champion_version')}"
            f"{canary} ({self.route_change})",
            f"  inputs     {', '.join(f'{k}={v}' for k, v in self.inputs.items())}",
        ]
        for key in ("bento", "run_id", "data_version", "data_md5", "feature_version", "code_commit"):
            lines.append(f"  {key:<10} {self.lineage.get(key, '?')}")
        verdict = "REPRODUCED" if self.reproduced else "NOT REPRODUCED"
        lines.append(
            f"  re-scored  score {self.rescored.get('score')}, decision {self.rescored.get('decision')}: {verdict}"
        )
        return "\n".join(lines)


def _present(value: Any) -> Any:
    """A logged value, with the log's missing (NaN after pandas) as None."""
    return None if isinstance(value, float) and math.isnan(value) else value


def logged_inputs(row: dict[str, Any], feature_names: list[str]) -> dict[str, Any]:
    """What the applicant sent, as logged: the pseudonymised entity id, then the model's features.

    Not the log's other columns: the answer, the service's own (arm, latency, client) and the ones
    BentoML's monitor adds to every line (its ``timestamp``, ``request_id`` and ``trace_id``).
    """
    return {name: _present(row.get(name)) for name in ("entity_hash", *feature_names)}


def _logged_row(model: str, request_id: str, settings: Settings) -> dict[str, Any]:
    from loopline.serving.prediction_log import read_window

    rows = read_window(settings.prediction_log_dir, model).rows
    if rows.empty or "prediction_id" not in rows:
        raise TraceError(f"{model} has no logged predictions yet")
    hit = rows[rows["prediction_id"] == request_id]
    if hit.empty:
        raise TraceError(f"request {request_id!r} is not in the prediction log of {model}")
    return hit.iloc[-1].to_dict()


def route_that_served(changes: list, at: datetime, revision: Any = None) -> tuple[dict | None, str]:
    """The route an answer was scored under, and the audit record that set it.

    The service adopts a change at its next poll of the store, so an answer logged just after a
    change may still come from the route before it: the revision the service logged with the answer
    (``route_revision``) names it exactly. Without one (a log from before that column, or a Bento
    serving its own model before the store named a champion), the last change before the answer.
    """
    revision = _present(revision)
    exact = []
    if revision is not None and int(revision) >= 0:
        exact = [c for c in changes if c.after.get("revision") == int(revision)]
    candidates = exact or [c for c in changes if c.at <= at]
    if not candidates:
        return None, "no route change recorded before it"
    c = candidates[-1]
    return c.after, f"set by audit #{c.id} {c.action} at {c.at:%Y-%m-%d %H:%M:%S} by {c.actor}"


def _route_at(model: str, at: datetime, settings: Settings, revision: Any = None) -> tuple[dict | None, str]:
    from loopline.core.serving_state import ServingState

    changes = ServingState(settings.state_db_uri).changes_since(model, datetime(1970, 1, 1, tzinfo=UTC))
    return route_that_served(changes, at, revision)


def trace(model: str, request_id: str, settings: Settings) -> Trace:
    """Everything behind one logged answer, and the answer computed again from its logged inputs."""
    import mlflow.lightgbm
    import pandas as pd

    from loopline.core import tracking
    from loopline.core.spec import load_spec
    from loopline.serving.packaging import BENTO_TAG
    from loopline.serving.scoring import score_frame

    spec = load_spec(model, settings.models_dir)
    row = _logged_row(model, request_id, settings)
    logged_at = datetime.fromtimestamp(float(row["logged_at"]), UTC)
    version = str(row["model_version"])
    route, change = _route_at(model, logged_at, settings, row.get("route_revision"))
    client = tracking.client_for(settings)
    try:
        model_version = client.get_model_version(model, version)
    except Exception as err:  # a deleted version cannot be traced further
        raise TraceError(f"{model} v{version} is not in the registry: {err}") from err
    tags = client.get_run(model_version.run_id).data.tags
    lineage = {
        "bento": model_version.tags.get(BENTO_TAG, "?"),
        "run_id": model_version.run_id,
        **{k: tags.get(f"loopline.{k}", "?") for k in ("data_version", "data_md5", "feature_version", "code_commit")},
    }
    # Stored features: the values the service looked up and scored (logged with the answer), and the keys
    # (but the entity id) it read them by; the answer is scored again from exactly those values.
    scored = [*spec.features.names, *spec.features.stored_columns]
    extra = [k for k in spec.dataset.keys if k not in scored] + (["stored_missing"] if spec.features.stored else [])
    inputs = logged_inputs(row, [*scored, *extra])
    tracking.use_store(settings)
    booster = mlflow.lightgbm.load_model(f"models:/{model}/{version}")
    again = score_frame(booster, pd.DataFrame([{name: inputs.get(name) for name in scored}]), spec)
    first = again.iloc[0]
    rescored = {"score": float(first["score"]), "decision": first["decision"], "reasons": list(first["reasons"])}
    answer = {k: _present(row.get(k)) for k in ANSWER_COLUMNS}
    if isinstance(answer["reasons"], str):
        answer["reasons"] = [r for r in answer["reasons"].split(",") if r]
    return Trace(
        model, request_id, logged_at, version, str(row.get("arm")), inputs, answer, route, change, lineage, rescored
    )
