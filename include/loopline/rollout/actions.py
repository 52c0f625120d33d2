"""Manual serving actions: promote, abort, roll back, pin weights.

Each action changes the serving state store (with its audit record) first, then
the MLflow aliases, and is idempotent, so a retried task converges instead of
doing the change twice. On promotion the old champion keeps the alias
``previous``, which is what a one-click rollback goes back to.
"""

from __future__ import annotations

from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from loopline.core.errors import LooplineError
from loopline.rollout.serving_state import Route, ServingState

ACTIONS = ("promote", "abort", "rollback", "pin")
CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"


class RolloutError(LooplineError, ValueError):
    """The requested action cannot apply: unknown version, nothing to abort, no champion."""


def resolve_version(client: MlflowClient, model: str, ref: str) -> str:
    """A registered version from 'challenger', 'previous', 'champion' or a number."""
    if ref in (CHAMPION, CHALLENGER, PREVIOUS):
        try:
            return str(client.get_model_version_by_alias(model, ref).version)
        except MlflowException:
            raise RolloutError(f"model {model} has no {ref} version") from None
    try:
        return str(client.get_model_version(model, ref).version)
    except MlflowException:
        raise RolloutError(f"model {model} has no registered version {ref!r}") from None


def _alias(client: MlflowClient, model: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(model, alias).version)
    except MlflowException:
        return None


def make_champion(
    state: ServingState, client: MlflowClient, model: str, version: str, action: str, actor: str, reason: str,
    details: dict[str, Any] | None = None,
) -> Route:  # fmt: skip
    """``version`` takes all traffic; the outgoing champion becomes ``previous``."""
    route = state.route(model)
    outgoing = route.champion_version
    if outgoing != version or route.canary_version:
        target = Route(model, champion_version=version, mode=route.mode, revision=route.revision)
        route = state.change(target, action, actor, reason, {"from_champion": outgoing, **(details or {})})
    if outgoing and outgoing != version:
        client.set_registered_model_alias(model, PREVIOUS, outgoing)
    client.set_registered_model_alias(model, CHAMPION, version)
    if _alias(client, model, CHALLENGER) == version:
        client.delete_registered_model_alias(model, CHALLENGER)
    return route


def abort(state: ServingState, model: str, actor: str, reason: str, details: dict[str, Any] | None = None) -> Route:
    """Canary traffic back to 0 at once; the champion keeps serving."""
    route = state.route(model)
    if route.canary_version is None:
        return route
    target = Route(model, champion_version=route.champion_version, mode=route.mode, revision=route.revision)
    return state.change(target, "abort", actor, reason, {"aborted_canary": route.canary_version, **(details or {})})


def pin(state: ServingState, model: str, canary: str, weight: float, actor: str, reason: str) -> Route:
    """Serve ``canary`` to a fixed share of applicants (an A/B test, or a manual rollout step)."""
    route = state.route(model)
    if route.champion_version is None:
        raise RolloutError(f"model {model} has no champion serving; promote a version first")
    if route.canary_version == canary and route.canary_weight == weight:
        return route
    target = Route(model, route.champion_version, canary, weight, route.mode, route.revision)
    return state.change(target, "pin", actor, reason)


def apply(action: str, model: str, ref: str, weight: float, actor: str, reason: str, settings) -> dict[str, Any]:
    """The manual action of the rollout DAG's form; returns the resulting route."""
    from loopline.core import tracking

    if action not in ACTIONS:
        raise RolloutError(f"unknown action {action!r}; expected one of {ACTIONS}")
    state = ServingState(settings.state_db_uri)
    client = tracking.client_for(settings)
    if action == "abort":
        return abort(state, model, actor, reason).to_dict()
    version = resolve_version(client, model, ref)
    if action == "pin":
        return pin(state, model, version, weight, actor, reason).to_dict()
    return make_champion(state, client, model, version, action, actor, reason).to_dict()
