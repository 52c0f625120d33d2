"""The steps of the automatic rollout DAG: shadow, canary steps judged by gates, or a blue/green switch.

In canary mode a shadow phase comes first (``shadow_step``, unless the spec's
``shadow_seconds`` is 0): the route names the candidate as shadow, the service scores a
copy of every request with it and answers with the champion, and the phase is judged
like a step. It then hands over to the first canary step (which clears the shadow) or
fails the rollout like a step does: the route goes back to the champion alone.

State lives in the serving state store (the route and a rollout record), not in the
task, so every step is safe to retry and a rollout survives a scheduler restart.
Whatever fails, ``fail`` puts all traffic back on the champion and records why.

People stay in control: a rollout holds a route-revision token (``Rollout.route_revision``,
the revision it last wrote, written in the same transaction as the change). It writes
only on top of its own revision, and its clean-up reverts only a revision it wrote. A
manual action ends the running rollout first (``ServingState.end_by_person``); every
step then raises ``RolloutEnded``, which the DAG turns into a skip, not a failure.
Automatic runs that were queued when a person acted, or whose candidate is no longer
the newest challenger, are dropped at ``prepare``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from loopline.core.errors import LooplineError
from loopline.core.serving_state import Rollout, RolloutEnded, Route, ServingState
from loopline.core.settings import Settings
from loopline.core.spec import RolloutSpec, load_spec
from loopline.rollout import canary
from loopline.rollout.actions import CHALLENGER, make_champion, resolve_version
from loopline.serving.prediction_log import read_window

log = logging.getLogger(__name__)


class RolloutStopped(LooplineError, RuntimeError):
    """The rollout cannot go on: a gate failed, or someone changed the route meanwhile."""


class NothingToRollOut(LooplineError, RuntimeError):
    """This run has nothing to do (no challenger, it already serves, or a queued run was overtaken): a skip."""


__all__ = ["NothingToRollOut", "RolloutEnded", "RolloutStopped"]


def _state(settings: Settings) -> ServingState:
    return ServingState(settings.state_db_uri)


def _rollout_spec(model: str, settings: Settings) -> RolloutSpec:
    return load_spec(model, settings.models_dir).rollout


def _scrape(settings: Settings, model: str) -> dict | None:
    url = settings.service_url_for(model)
    try:
        return canary.scrape(url)
    except Exception as err:  # judged as "metrics unavailable"; a step without them cannot pass
        log.warning("cannot read %s/metrics: %s", url, err)
        return None


def _outcomes(model: str, settings: Settings) -> pd.DataFrame | None:
    from loopline.monitoring import outcomes

    return outcomes.read(settings, model)


def _expected_score_psi(client, model: str, candidate: str, champion: str) -> float:
    """The score PSI the quality gate measured between this candidate and this champion, else 0.

    Only a measurement against the very champion the rollout compares with counts; a
    version registered outside the train DAG (or gated against another champion) gets
    no allowance, so the canary's scores must then match the champion's.
    """
    from loopline.core import tracking

    tags = client.get_model_version(model, candidate).tags
    if tags.get(tracking.GATE_CHAMPION_TAG) != champion:
        return 0.0
    try:
        return max(0.0, float(tags.get(tracking.EXPECTED_SCORE_PSI_TAG, 0.0)))
    except ValueError:
        return 0.0


def overtaken(
    state: ServingState, model: str, queued_at: datetime, event_versions: Sequence[str], challenger: str | None
) -> str | None:
    """Why an automatic run queued at ``queued_at`` must not start, or None when it may.

    It is dropped when a person acted on the model's traffic since it was queued (a
    manual change, or a rollout a person ended), when the version its asset events name
    is no longer the challenger (a newer one passed the gate, or a person promoted it),
    and when a canary no rollout owns is serving (a person's pin: an A/B test is not
    overridden by an automatic rollout).
    """
    queued_at = queued_at.astimezone(UTC)  # the stores compare UTC instants
    for change in state.changes_since(model, queued_at):
        if change.details.get("manual"):
            by_hand = f"{change.actor} changed traffic by hand ({change.action}, audit #{change.id})"
            return f"{by_hand} after this run was queued"
    ended = state.ended_by_people_since(model, queued_at)
    if ended:
        return f"{ended[0].ended_by} ended rollout #{ended[0].id} by hand after this run was queued"
    if event_versions:
        newest = max(event_versions, key=int)
        if challenger != newest:
            now = f"the challenger is now v{challenger}" if challenger else "there is no challenger now"
            return f"queued for v{newest}, but {now}"
    route = state.route(model)
    if route.canary_version and state.running_rollout(model) is None:
        return (
            f"v{route.canary_version} is pinned at {route.canary_weight:.0%} by hand; an automatic rollout "
            "does not override it (abort the pin, or trigger the rollout yourself)"
        )
    return None


def prepare(
    model: str, ref: str, mode: str | None, actor: str, settings: Settings, automatic: bool = False,
    queued_at: datetime | None = None, event_versions: Sequence[str] = (),
) -> dict[str, Any]:  # fmt: skip
    """Open a rollout for ``ref`` (default: the challenger); ``NothingToRollOut`` when there is nothing to do.

    ``automatic``: the run was started by the scheduler or an asset event, not a person;
    ``queued_at`` (when the run was queued) and ``event_versions`` (the versions its
    asset events name) decide whether it was overtaken meanwhile (``overtaken``).
    """
    from loopline.core import tracking

    client = tracking.client_for(settings)
    state = _state(settings)
    route = state.route(model)
    challenger = tracking.alias_version(client, model, CHALLENGER)
    if automatic and state.running_rollout(model) is None:  # a retried prepare keeps its own rollout
        why = overtaken(state, model, queued_at or datetime.now(UTC), event_versions, challenger)
        if why:
            raise NothingToRollOut(f"automatic rollout dropped: {why}")
    if ref == CHALLENGER and event_versions:
        ref = max(event_versions, key=int)  # the version this run was queued for (still the challenger)
    if ref == CHALLENGER and challenger is None:
        raise NothingToRollOut(f"model {model} has no challenger waiting; nothing to roll out")
    candidate = resolve_version(client, model, ref)
    if route.champion_version is None:
        raise RolloutStopped(f"model {model} has no champion serving; promote a first version by hand")
    if candidate == route.champion_version:
        raise NothingToRollOut(f"v{candidate} already serves as champion; nothing to roll out")
    chosen_mode = mode or _rollout_spec(model, settings).mode
    expected = _expected_score_psi(client, model, candidate, route.champion_version)
    rollout = state.start_rollout(model, candidate, route.champion_version, chosen_mode, actor, route.revision)
    return {
        "rollout_id": rollout.id,
        "candidate": candidate,
        "champion": route.champion_version,
        "mode": chosen_mode,
        "expected_score_psi": expected,  # read once here; every step's score gate allows it
    }


def _ended(rollout: Rollout) -> RolloutEnded:
    return RolloutEnded(f"rollout #{rollout.id} was ended by {rollout.ended_by}: {rollout.outcome}")


def _live(state: ServingState, rollout_id: int) -> Rollout:
    rollout = state.rollout(rollout_id)
    if rollout.ended_by:
        raise _ended(rollout)
    if rollout.status != "running":
        raise RolloutStopped(f"rollout #{rollout.id} is {rollout.status}: {rollout.outcome}")
    return rollout


def _own_route(state: ServingState, rollout: Rollout) -> Route:
    """The current route, which must still be at this rollout's revision; else the rollout stops, hands off.

    A person's action ended the rollout before changing the route (``RolloutEnded``: a
    skip). Any other writer is recorded and fails the run, but the route is left as it is.
    """
    route = state.route(rollout.model)
    if rollout.expected_revision is None or route.revision == rollout.expected_revision:
        return route  # (None: a rollout opened before the token existed)
    rollout = state.rollout(rollout.id)
    if rollout.ended_by:
        raise _ended(rollout)
    where = f"revision {route.revision}, the rollout's is {rollout.expected_revision}"
    state.finish_rollout(rollout.id, "aborted", f"route changed outside the rollout ({where}): {route.to_dict()}")
    raise RolloutStopped(f"rollout #{rollout.id} stopped: the route was changed by someone else ({where})")


def _stop(state: ServingState, rollout: Rollout, verdict: canary.StepVerdict, actor: str) -> None:
    """Canary traffic back to 0 now (only on the rollout's own revision), then record the failed rollout."""
    from loopline.rollout.actions import abort

    reason = f"rollout #{rollout.id}: {verdict.reason}"
    details = {"verdict": verdict.to_dict(), "rollout": rollout.id}
    abort(state, rollout.model, actor, reason, details, revision=rollout.expected_revision, owner=rollout.id)
    state.finish_rollout(rollout.id, "failed", verdict.summary())


def shadow_step(rollout_id: int, actor: str, settings: Settings, expected_score_psi: float = 0.0) -> canary.StepVerdict:
    """One poke of the shadow phase: name the candidate as shadow on the first poke, judge on the later ones."""
    state = _state(settings)
    rollout = _live(state, rollout_id)
    spec = load_spec(rollout.model, settings.models_dir)
    if spec.rollout.shadow_bake_seconds == 0:  # the spec dropped its shadow phase since the DAG was parsed
        return canary.StepVerdict(0.0, canary.PASS, 0.0, {}, [], "no shadow phase in the spec", canary.SHADOW)
    route = _own_route(state, rollout)
    if rollout.phase != canary.SHADOW:
        if route.champion_version != rollout.champion_version:
            raise RolloutStopped(f"champion changed to v{route.champion_version} during rollout #{rollout.id}")
        target = Route(
            rollout.model, route.champion_version, mode="canary", revision=route.revision,
            shadow_version=rollout.candidate_version,
        )  # fmt: skip
        if target != route:
            reason = f"rollout #{rollout.id}: shadow (scores a copy of traffic, answers nothing)"
            state.change(target, "shadow_start", actor, reason, {"rollout": rollout.id}, owner=rollout.id)
        state.begin_step(rollout.id, 0.0, _scrape(settings, rollout.model) or {}, phase=canary.SHADOW)
        return canary.StepVerdict(0.0, canary.WAIT, 0.0, {}, [], "shadow started", canary.SHADOW)
    if route.shadow_version != rollout.candidate_version or route.canary_version:
        state.finish_rollout(rollout.id, "aborted", f"route changed outside the rollout: {route.to_dict()}")
        raise RolloutStopped(f"rollout #{rollout.id} stopped: the route is not in its shadow phase: {route.to_dict()}")
    started = rollout.step_started_at or datetime.now(UTC)
    window = read_window(settings.prediction_log_dir, rollout.model, since=started, shadow=True).rows
    verdict = canary.judge_shadow(
        (datetime.now(UTC) - started).total_seconds(),
        window,
        rollout.baseline or None,
        _scrape(settings, rollout.model),
        str(rollout.champion_version),
        rollout.candidate_version,
        spec.rollout.gates,
        spec.rollout.shadow_bake_seconds,
        spec.rollout.max_step_seconds,
        spec=spec,
        expected_score_psi=expected_score_psi,
    )
    return _recorded(state, rollout, verdict, actor)


def _recorded(state: ServingState, rollout, verdict: canary.StepVerdict, actor: str) -> canary.StepVerdict:
    """A judged poke: logged, its gates stored once decided, and a failure stops the rollout."""
    log.info("%s", verdict.summary())
    if verdict.status != canary.WAIT:
        state.add_gate_result(rollout.id, verdict.to_dict())
    if verdict.status == canary.FAIL:
        _stop(state, rollout, verdict, actor)
    return verdict


def canary_step(
    rollout_id: int, step: float, actor: str, settings: Settings, expected_score_psi: float = 0.0
) -> canary.StepVerdict:
    """One poke of a canary step: set the weight on the first poke, judge on the later ones."""
    state = _state(settings)
    rollout = _live(state, rollout_id)
    spec = _rollout_spec(rollout.model, settings)
    route = _own_route(state, rollout)
    if rollout.step != step:
        if route.champion_version != rollout.champion_version:
            raise RolloutStopped(f"champion changed to v{route.champion_version} during rollout #{rollout.id}")
        target = Route(rollout.model, route.champion_version, rollout.candidate_version, step, "canary", route.revision)
        if target != route:
            reason = f"rollout #{rollout.id}: step {step:.0%}"
            state.change(target, "canary_step", actor, reason, {"rollout": rollout.id}, owner=rollout.id)
        state.begin_step(rollout.id, step, _scrape(settings, rollout.model) or {})
        return canary.StepVerdict(step, canary.WAIT, 0.0, {}, [], "step started")
    if (route.canary_version, route.canary_weight) != (rollout.candidate_version, step):
        state.finish_rollout(rollout.id, "aborted", f"route changed outside the rollout: {route.to_dict()}")
        raise RolloutStopped(f"rollout #{rollout.id} stopped: the route is not at this step: {route.to_dict()}")
    started = rollout.step_started_at or datetime.now(UTC)
    window = read_window(settings.prediction_log_dir, rollout.model, since=started).rows
    verdict = canary.judge_step(
        step,
        (datetime.now(UTC) - started).total_seconds(),
        window,
        rollout.baseline or None,
        _scrape(settings, rollout.model),
        str(rollout.champion_version),
        rollout.candidate_version,
        spec.gates,
        spec.bake_seconds,
        spec.max_step_seconds,
        spec=load_spec(rollout.model, settings.models_dir),
        outcomes=_outcomes(rollout.model, settings),
        expected_score_psi=expected_score_psi,
    )
    return _recorded(state, rollout, verdict, actor)


def promote(rollout_id: int, actor: str, settings: Settings) -> dict[str, Any]:
    """Every step passed: the candidate becomes champion (MLflow alias too); the old one keeps `previous`."""
    from loopline.core import tracking

    state = _state(settings)
    rollout = state.rollout(rollout_id)
    if rollout.ended_by:
        raise _ended(rollout)
    if rollout.status not in ("running", "succeeded"):
        raise RolloutStopped(f"rollout #{rollout.id} is {rollout.status}; not promoting")
    if rollout.status == "running":
        _own_route(state, rollout)
    reason = f"rollout #{rollout.id} passed every step"
    details = {"rollout": rollout.id, "gate_results": rollout.gate_results}
    client = tracking.client_for(settings)
    route = make_champion(
        state, client, rollout.model, rollout.candidate_version, "promote", actor, reason, details,
        revision=rollout.expected_revision, owner=rollout.id,
    )  # fmt: skip
    state.finish_rollout(rollout.id, "succeeded", reason)
    return route.to_dict()


# --- blue/green: one switch after a pre-switch check, then a watch with instant switch-back ----------


def pre_switch_check(rollout_id: int, settings: Settings, expected_score_psi: float = 0.0) -> canary.StepVerdict:
    """Score the champion's recent traffic with the candidate offline: it must not fail or shift scores."""
    import mlflow.lightgbm

    from loopline.core import tracking
    from loopline.serving.scoring import score_frame

    state = _state(settings)
    rollout = _live(state, rollout_id)
    spec_all = load_spec(rollout.model, settings.models_dir)
    gates = spec_all.rollout.gates
    recent = read_window(settings.prediction_log_dir, rollout.model).rows
    if not recent.empty:
        recent = recent[recent["model_version"] == rollout.champion_version].tail(5 * gates.min_samples)
    results: list[canary.GateResult] = []
    if len(recent) < gates.min_samples:
        results.append(canary.GateResult("recent_traffic", canary.FAIL, detail=f"{len(recent)} rows logged"))
    else:
        tracking.use_store(settings)
        try:
            booster = mlflow.lightgbm.load_model(f"models:/{rollout.model}/{rollout.candidate_version}")
            shadow = score_frame(booster, recent[spec_all.features.names], spec_all)
            results.append(canary.GateResult("errors", canary.PASS, 0.0, detail=f"scored {len(recent)} rows"))
            rows = recent.assign(
                score=shadow["score"].to_numpy(), decision=shadow["decision"].to_numpy(), arm="canary",
                model_version="candidate",
            )  # fmt: skip
            results.append(canary.psi_gate(rows, recent, gates, spec_all, expected_score_psi))
        except Exception as err:  # the candidate cannot score what the champion serves
            results.append(canary.GateResult("errors", canary.FAIL, 1.0, detail=f"{type(err).__name__}: {err}"))
    failed = [g.name for g in results if g.status == canary.FAIL]
    status = canary.FAIL if failed else canary.PASS
    reason = f"pre-switch gate failed: {', '.join(failed)}" if failed else "candidate scores recent traffic alike"
    verdict = canary.StepVerdict(0.0, status, 0.0, {"recent": len(recent)}, results, reason)
    state.add_gate_result(rollout.id, verdict.to_dict())
    if failed:
        state.finish_rollout(rollout.id, "failed", verdict.summary())
    return verdict


def switch(rollout_id: int, actor: str, settings: Settings) -> dict[str, Any]:
    """All traffic to the candidate at once (the old champion stays loaded as `previous`)."""
    from loopline.core import tracking

    state = _state(settings)
    rollout = _live(state, rollout_id)
    _own_route(state, rollout)
    reason = f"rollout #{rollout.id}: blue/green switch after the pre-switch check"
    client = tracking.client_for(settings)
    route = make_champion(
        state, client, rollout.model, rollout.candidate_version, "bluegreen_switch", actor, reason,
        {"rollout": rollout.id}, revision=rollout.expected_revision, owner=rollout.id,
    )  # fmt: skip
    state.begin_step(rollout.id, 1.0, _scrape(settings, rollout.model) or {})
    return route.to_dict()


def post_switch_watch(
    rollout_id: int, actor: str, settings: Settings, expected_score_psi: float = 0.0
) -> canary.StepVerdict:
    """After the switch: the new champion's errors, latency and scores vs the old one's just before."""
    state = _state(settings)
    rollout = _live(state, rollout_id)
    _own_route(state, rollout)
    spec = _rollout_spec(rollout.model, settings)
    started = rollout.step_started_at or datetime.now(UTC)
    elapsed = (datetime.now(UTC) - started).total_seconds()
    after = read_window(settings.prediction_log_dir, rollout.model, since=started).rows
    lookback = started - timedelta(seconds=spec.max_step_seconds)
    before = read_window(settings.prediction_log_dir, rollout.model, since=lookback, until=started).rows
    new = after[after["model_version"] == rollout.candidate_version] if not after.empty else after
    old = before[before["model_version"] == rollout.champion_version] if not before.empty else before
    gates = spec.gates
    results = [
        canary.error_gate(
            rollout.baseline or None, _scrape(settings, rollout.model), rollout.candidate_version, "", gates
        ),
        canary.latency_gate(new, old, gates),
        canary.psi_gate(new, old, gates, load_spec(rollout.model, settings.models_dir), expected_score_psi),
    ]
    samples = {"after": len(new), "before": len(old)}
    verdict = canary.verdict(1.0, elapsed, samples, results, spec.bake_seconds, spec.max_step_seconds)
    if verdict.status != canary.WAIT:
        state.add_gate_result(rollout.id, verdict.to_dict())
    if verdict.status == canary.FAIL:
        switch_back(rollout.id, actor, verdict.summary(), settings)
    elif verdict.status == canary.PASS:
        state.finish_rollout(rollout.id, "succeeded", f"after the switch: {verdict.reason}")
    return verdict


def _wrote_current(state: ServingState, rollout: Rollout) -> Route | None:
    """The current route if this rollout wrote its revision itself (else None: it is someone else's)."""
    route = state.route(rollout.model)
    if rollout.ended_by or rollout.route_revision is None or route.revision != rollout.route_revision:
        log.info("route at revision %s is not rollout #%s's own: left as is", route.revision, rollout.id)
        return None
    return route


def switch_back(rollout_id: int, actor: str, reason: str, settings: Settings) -> None:
    """The old champion back at once, only if the route is still the switch this rollout made."""
    from loopline.core import tracking

    state = _state(settings)
    rollout = state.rollout(rollout_id)
    route = _wrote_current(state, rollout)
    if route and rollout.champion_version and route.champion_version == rollout.candidate_version:
        client = tracking.client_for(settings)
        make_champion(
            state, client, rollout.model, rollout.champion_version, "bluegreen_switch_back", actor, reason,
            {"rollout": rollout.id}, revision=route.revision, owner=rollout.id,
        )  # fmt: skip
    state.finish_rollout(rollout.id, "failed", reason)


def fail(rollout_id: int, actor: str, settings: Settings) -> dict[str, Any]:
    """After any failed task: the rollout's own traffic change undone; the rollout recorded as failed (idempotent).

    Reverts only a route revision this rollout wrote itself: a rollout a person ended,
    or a route someone changed since, is left exactly as it is.
    """
    from loopline.rollout.actions import abort

    state = _state(settings)
    rollout = state.rollout(rollout_id)
    try:
        if rollout.mode == "bluegreen":
            switch_back(rollout_id, actor, rollout.outcome or "rollout task failed", settings)
        else:
            route = _wrote_current(state, rollout)
            if route and rollout.candidate_version in (route.canary_version, route.shadow_version):
                abort(
                    state, rollout.model, actor, f"rollout #{rollout.id} failed", {"rollout": rollout.id},
                    revision=route.revision, owner=rollout.id,
                )  # fmt: skip
            state.finish_rollout(rollout_id, "failed", rollout.outcome or "a rollout task failed")
    except RolloutEnded:  # a person ended it meanwhile: their route stands (the record says who)
        log.info("rollout #%s was ended by a person during its clean-up; route left as they set it", rollout_id)
    return state.rollout(rollout_id).to_dict()
