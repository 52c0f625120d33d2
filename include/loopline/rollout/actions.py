"""Manual serving actions: promote, abort, roll back, pin weights.

Each action changes the serving state store (with its audit record) first, then
the MLflow aliases, and is idempotent, so a retried task converges instead of
doing the change twice. On promotion the old champion keeps the alias
``previous``, which is what a one-click rollback goes back to.

A person's action (``apply``) first ends the model's running rollout, recorded
with who and why, so nothing that rollout does afterwards changes the route; its
route change is marked ``manual`` in the audit trail, which is also how a queued
automatic rollout learns that a person acted after it was queued.
"""

from __future__ import annotations

from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from loopline.core.errors import LooplineError
from loopline.core.serving_state import RolloutEnded, Route, ServingState

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


def _expected(route: Route, revision: int | None) -> int:
    """The revision a change is written on top of: the caller's token (a rollout's own), else the current one."""
    return route.revision if revision is None else revision


def make_champion(
    state: ServingState, client: MlflowClient, model: str, version: str, action: str, actor: str, reason: str,
    details: dict[str, Any] | None = None, revision: int | None = None, owner: int | None = None,
) -> Route:  # fmt: skip
    """``version`` takes all traffic; the outgoing champion becomes ``previous``.

    ``revision``/``owner``: a rollout writes only on top of its own route revision (see ``ServingState.change``).
    A person may end that rollout between its route change and its alias writes (``actions.apply``), and
    change the route in turn: the rollout's aliases then come last, so they are put back to follow the
    person's route, and ``RolloutEnded`` says the rollout was ended (its task is skipped, not reported done).
    """
    route = state.route(model)
    outgoing = route.champion_version
    if outgoing != version or route.canary_version or route.shadow_version:
        target = Route(model, champion_version=version, mode=route.mode, revision=_expected(route, revision))
        route = state.change(target, action, actor, reason, {"from_champion": outgoing, **(details or {})}, owner)
    if outgoing and outgoing != version:
        client.set_registered_model_alias(model, PREVIOUS, outgoing)
    client.set_registered_model_alias(model, CHAMPION, version)
    if _alias(client, model, CHALLENGER) == version:
        client.delete_registered_model_alias(model, CHALLENGER)
    if owner is not None and (ended := state.rollout(owner)).ended_by:
        _aliases_follow_route(state, client, model, version)
        raise RolloutEnded(f"rollout #{owner} was ended by {ended.ended_by} while it made v{version} champion")
    return route


def _aliases_follow_route(state: ServingState, client: MlflowClient, model: str, version: str) -> None:
    """A person changed the champion after a rollout made ``version`` champion: the MLflow roles follow the route.

    Written after the rollout's own alias writes, so whichever of the two finishes last, the registry
    ends as the person's change left it (the person's own writes set the same values).
    """
    champion = state.route(model).champion_version
    if champion and champion != version:
        client.set_registered_model_alias(model, PREVIOUS, version)
        client.set_registered_model_alias(model, CHAMPION, champion)


def abort(
    state: ServingState, model: str, actor: str, reason: str, details: dict[str, Any] | None = None,
    revision: int | None = None, owner: int | None = None,
) -> Route:  # fmt: skip
    """Canary traffic back to 0 at once, and any shadow stopped; the champion keeps serving (alone)."""
    route = state.route(model)
    if route.canary_version is None and route.shadow_version is None:
        return route
    target = Route(model, champion_version=route.champion_version, mode=route.mode, revision=_expected(route, revision))
    ended = {"aborted_canary": route.canary_version} if route.canary_version else {}
    ended |= {"stopped_shadow": route.shadow_version} if route.shadow_version else {}
    details = {**ended, **(details or {})}
    return state.change(target, "abort", actor, reason, details, owner)


def pin(
    state: ServingState, model: str, canary: str, weight: float, actor: str, reason: str,
    details: dict[str, Any] | None = None,
) -> Route:  # fmt: skip
    """Serve ``canary`` to a fixed share of applicants (an A/B test, or a manual rollout step); ends any shadow."""
    route = state.route(model)
    check_pin(route, canary)
    if route.canary_version == canary and route.canary_weight == weight and route.shadow_version is None:
        return route
    target = Route(model, route.champion_version, canary, weight, route.mode, route.revision)
    return state.change(target, "pin", actor, reason, details)


def check_pin(route: Route, canary: str) -> None:
    """RolloutError, in words, when ``canary`` cannot be pinned on ``route`` (no champion, or it is the champion)."""
    if route.champion_version is None:
        raise RolloutError(f"model {route.model} has no champion serving; promote a version first")
    if canary == route.champion_version:
        raise RolloutError(
            f"v{canary} already serves {route.model} as champion, so it cannot also be its canary: pin another "
            "version, or roll back to an earlier champion first"
        )


def apply(action: str, model: str, ref: str, weight: float, actor: str, reason: str, settings) -> dict[str, Any]:
    """A person's action (the rollout control DAG's form); returns the resulting route and the rollout it ended.

    The running rollout (if any) is ended first, so from then on its steps stop and its
    writes are refused; then the route changes, marked as manual in the audit trail. A request that
    cannot apply (an unknown version, a pin of the champion itself) is refused before it ends anything.
    """
    from loopline.core import tracking

    if action not in ACTIONS:
        raise RolloutError(f"unknown action {action!r}; expected one of {ACTIONS}")
    state = ServingState(settings.state_db_uri)
    client = tracking.client_for(settings)
    version = None if action == "abort" else resolve_version(client, model, ref)  # a bad ref ends nothing
    if action == "pin":  # nor does a pin the route refuses (the champion as its own canary)
        check_pin(state.route(model), str(version))
    ended = state.end_by_person(model, actor, f"ended by {actor}: {action} by hand ({reason})")
    details: dict[str, Any] = {"manual": True}
    if ended is not None:
        details["ended_rollout"] = ended.id
    if action == "abort":
        route = abort(state, model, actor, reason, details)
    elif action == "pin":
        route = pin(state, model, str(version), weight, actor, reason, details)
    else:
        route = make_champion(state, client, model, str(version), action, actor, reason, details)
    return {**route.to_dict(), "ended_rollout": ended.id if ended else None}
