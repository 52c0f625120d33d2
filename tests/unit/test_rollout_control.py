"""People stay in control of traffic: a manual action raced against every phase of a rollout.

Deterministic races: the rollout's step functions are driven one by one against a real
SQLite serving-state store and a real MLflow registry (SQLite), and a manual action
(pin, promote, rollback, abort, through ``actions.apply`` as the control DAG calls it)
is put between each pair of steps. Afterwards every remaining step must stop cleanly
(``RolloutEnded``: a skip), the clean-up that runs after a failed task must leave the
route alone, and the route must be exactly what the person set.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from loopline.core.serving_state import Route, ServingState
from loopline.core.settings import get_settings
from loopline.rollout import actions, rollout_flow
from loopline.rollout.rollout_flow import NothingToRollOut, RolloutEnded, RolloutStopped

MODEL = "credit_risk"  # the repo's model folder: its spec's rollout steps (5 -> 20 -> 50 -> 100%) drive the phases
AUTO = "asset (dag:credit_risk_rollout/asset_triggered__1)"
ALICE = "alice (dag:credit_risk_rollout_control/manual__1)"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A real MLflow registry with versions 1..3 of the model (no artifacts: aliases and tags are what counts)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(MODEL)
    for n in range(3):
        client.create_model_version(MODEL, source=str(tmp_path_factory.mktemp(f"v{n + 1}")))
    return uri


@pytest.fixture
def settings(tmp_path, registry, monkeypatch):
    base = get_settings()
    settings = dataclasses.replace(
        base,
        state_db_uri=f"sqlite:///{tmp_path / 'state.db'}",
        mlflow_tracking_uri=registry,
        prediction_log_dir=tmp_path / "predictions",  # no traffic: every judged step waits
        service_url="http://127.0.0.1:9",  # nothing listens: /metrics unavailable
    )
    for key, value in settings.as_env().items():  # tracking.client_for exports these; restored afterwards
        monkeypatch.setenv(key, value)
    from loopline.core import tracking

    client = tracking.client_for(settings)
    for alias in ("previous", "challenger"):
        try:
            client.delete_registered_model_alias(MODEL, alias)
        except Exception:  # not set
            pass
    client.set_registered_model_alias(MODEL, "champion", "1")
    client.set_registered_model_alias(MODEL, "challenger", "2")
    ServingState(settings.state_db_uri).change(Route(MODEL, champion_version="1"), "first_champion", "t", "first")
    return settings


def state_of(settings) -> ServingState:
    return ServingState(settings.state_db_uri)


def aliases(settings) -> dict[str, str]:
    from loopline.core import tracking

    return {k: str(v) for k, v in tracking.client_for(settings).get_registered_model(MODEL).aliases.items()}


def canary_phases(settings, rollout_id: int) -> list[tuple[str, object]]:
    """Every call the canary DAG makes, in order: each step's first poke (sets the weight), a judging poke, promote."""
    calls = []
    for step in (0.05, 0.2, 0.5):
        for poke in ("sets weight", "judges"):
            calls.append(
                (f"canary {step:.0%} {poke}", lambda s=step: rollout_flow.canary_step(rollout_id, s, AUTO, settings))
            )
    calls.append(("promote", lambda: rollout_flow.promote(rollout_id, AUTO, settings)))
    return calls


def bluegreen_phases(settings, rollout_id: int) -> list[tuple[str, object]]:
    """The blue/green calls after a passed pre-switch check: switch, then the watch's pokes."""
    return [
        ("switch", lambda: rollout_flow.switch(rollout_id, AUTO, settings)),
        ("watch", lambda: rollout_flow.post_switch_watch(rollout_id, AUTO, settings)),
        ("watch again", lambda: rollout_flow.post_switch_watch(rollout_id, AUTO, settings)),
    ]


MANUAL = {
    "pin": ("2", 0.1),  # the case: the rollout's own candidate, pinned at 10%
    "promote": ("2", 0.0),
    "rollback": ("1", 0.0),
    "abort": ("challenger", 0.0),
}


def race(settings, mode: str, phases, before: int, action: str) -> None:
    prepared = rollout_flow.prepare(MODEL, "challenger", mode, AUTO, settings, automatic=True)
    rollout_id = prepared["rollout_id"]
    calls = phases(settings, rollout_id)
    for _, call in calls[:before]:
        assert getattr(call(), "status", "wait") != "fail"

    ref, weight = MANUAL[action]
    champion_before = state_of(settings).route(MODEL).champion_version
    if action == "pin" and state_of(settings).route(MODEL).champion_version == "2":  # after a blue/green switch
        ref = "1"
    result = actions.apply(action, MODEL, ref, weight, ALICE, "seen on the dashboard", settings)
    state = state_of(settings)
    set_by_person = state.route(MODEL)
    trail_length = len(state.trail(MODEL, limit=100))
    assert result["ended_rollout"] == rollout_id

    remaining = calls[before:]
    if mode == "bluegreen" and before == 0:
        remaining = [("pre-switch check", lambda: rollout_flow.pre_switch_check(rollout_id, settings)), *remaining]
    for name, call in remaining:
        with pytest.raises(RolloutEnded, match="ended by alice"):
            call()
        assert state.route(MODEL) == set_by_person, name
    cleaned = rollout_flow.fail(rollout_id, AUTO, settings)  # put_champion_back, had a task failed anyway

    assert state.route(MODEL) == set_by_person
    assert len(state.trail(MODEL, limit=100)) == trail_length  # the rollout wrote nothing after the person
    record = state.rollout(rollout_id)
    assert cleaned["ended_by"] == record.ended_by == ALICE and record.status == "aborted"
    assert "pin" in record.outcome or action in record.outcome
    manual = [r for r in state.trail(MODEL, limit=100) if r.details.get("manual")]
    if manual:  # an action that changed nothing (abort with no canary yet) ends the rollout without an audit row
        assert manual[0].actor == ALICE and manual[0].details["ended_rollout"] == rollout_id
    if action == "pin":
        assert (set_by_person.canary_version, set_by_person.canary_weight) == (ref, 0.1)
    elif action == "promote":
        assert (set_by_person.champion_version, set_by_person.canary_version) == ("2", None)
        assert aliases(settings)["champion"] == "2"
    elif action == "rollback":
        assert (set_by_person.champion_version, set_by_person.canary_version) == ("1", None)
    else:  # abort: the canary goes; after a blue/green switch the new champion stays (rollback undoes a switch)
        assert (set_by_person.champion_version, set_by_person.canary_version) == (champion_before, None)


@pytest.mark.parametrize("action", list(MANUAL))
@pytest.mark.parametrize("before", range(7))
def test_a_manual_action_ends_a_canary_rollout_at_any_phase(settings, before, action):
    race(settings, "canary", canary_phases, before, action)


@pytest.mark.parametrize("action", list(MANUAL))
@pytest.mark.parametrize("before", range(3))
def test_a_manual_action_ends_a_blue_green_rollout_at_any_phase(settings, before, action):
    race(settings, "bluegreen", bluegreen_phases, before, action)


def test_a_rollout_that_finished_is_not_touched_by_a_later_action(settings):
    prepared = rollout_flow.prepare(MODEL, "challenger", "canary", AUTO, settings)
    for _, call in canary_phases(settings, prepared["rollout_id"]):
        call()
    assert state_of(settings).rollout(prepared["rollout_id"]).status == "succeeded"
    result = actions.apply("rollback", MODEL, "previous", 0.0, ALICE, "undo", settings)
    assert result["ended_rollout"] is None and result["champion_version"] == "1"
    assert state_of(settings).rollout(prepared["rollout_id"]).ended_by is None


@pytest.mark.parametrize("mode", ["canary", "bluegreen"])
def test_a_rollback_between_a_rollouts_route_change_and_its_alias_writes_keeps_the_persons_roles(
    settings, monkeypatch, mode
):
    """The person's rollback lands after the rollout made v2 champion in the store, before its MLflow aliases."""
    from loopline.core import tracking

    prepared = rollout_flow.prepare(MODEL, "challenger", mode, AUTO, settings)
    rollout_id = prepared["rollout_id"]
    if mode == "canary":
        for _, call in canary_phases(settings, rollout_id)[:-1]:
            call()
        make_v2_champion = lambda: rollout_flow.promote(rollout_id, AUTO, settings)  # noqa: E731
    else:
        make_v2_champion = lambda: rollout_flow.switch(rollout_id, AUTO, settings)  # noqa: E731
    real_client_for = tracking.client_for

    class RolloutsClient:  # the rollout's MLflow client: the person acts just before its first alias write
        def __init__(self, client):
            self.client, self.acted = client, False

        def __getattr__(self, name):
            if name == "set_registered_model_alias" and not self.acted:
                self.acted = True
                monkeypatch.setattr(tracking, "client_for", real_client_for)  # the person's own client
                actions.apply("rollback", MODEL, "1", 0.0, ALICE, "v2 looks wrong", settings)
                return self.client.set_registered_model_alias
            return getattr(self.client, name)

    monkeypatch.setattr(tracking, "client_for", lambda s: RolloutsClient(real_client_for(s)))
    with pytest.raises(RolloutEnded, match="ended by alice"):  # the task is skipped, not reported as done
        make_v2_champion()
    state = state_of(settings)
    assert state.route(MODEL).champion_version == "1"
    assert (aliases(settings)["champion"], aliases(settings)["previous"]) == ("1", "2")  # the registry follows
    record = rollout_flow.fail(rollout_id, AUTO, settings)  # a clean-up afterwards leaves it all as it is
    assert record["ended_by"] == ALICE and state.route(MODEL).champion_version == "1"
    assert aliases(settings)["champion"] == "1"


@pytest.mark.parametrize("mode", ["canary", "bluegreen"])
def test_a_pin_the_route_refuses_ends_nothing(settings, mode):
    """Pinning the champion as its own canary is refused in words, and the running rollout goes on."""
    state = state_of(settings)
    prepared = rollout_flow.prepare(MODEL, "challenger", mode, AUTO, settings)
    if mode == "canary":
        rollout_flow.canary_step(prepared["rollout_id"], 0.05, AUTO, settings)
    else:  # after the switch v2 is the champion; its watch must not be ended by a refused pin
        rollout_flow.switch(prepared["rollout_id"], AUTO, settings)
    route, trail = state.route(MODEL), state.trail(MODEL, limit=100)
    with pytest.raises(actions.RolloutError, match=f"v{route.champion_version} already serves"):
        actions.apply("pin", MODEL, str(route.champion_version), 0.1, ALICE, "pin it", settings)
    record = state.rollout(prepared["rollout_id"])
    assert (record.status, record.ended_by) == ("running", None)
    assert state.route(MODEL) == route and state.trail(MODEL, limit=100) == trail
    if mode == "canary":  # the rollout's own next poke still judges its step
        assert rollout_flow.canary_step(prepared["rollout_id"], 0.05, AUTO, settings).status == "wait"
    else:
        assert rollout_flow.post_switch_watch(prepared["rollout_id"], AUTO, settings).status == "wait"


# --- the clean-up reverts only what the rollout wrote itself --------------------------------------


def test_the_clean_up_still_undoes_the_rollouts_own_canary(settings):
    prepared = rollout_flow.prepare(MODEL, "challenger", "canary", AUTO, settings)
    rollout_flow.canary_step(prepared["rollout_id"], 0.05, AUTO, settings)
    record = rollout_flow.fail(prepared["rollout_id"], AUTO, settings)
    route = state_of(settings).route(MODEL)
    assert (route.champion_version, route.canary_version) == ("1", None) and record["status"] == "failed"


def test_the_clean_up_still_switches_a_blue_green_rollout_back(settings):
    prepared = rollout_flow.prepare(MODEL, "challenger", "bluegreen", AUTO, settings)
    rollout_flow.switch(prepared["rollout_id"], AUTO, settings)
    rollout_flow.fail(prepared["rollout_id"], AUTO, settings)
    assert state_of(settings).route(MODEL).champion_version == "1" and aliases(settings)["champion"] == "1"


def test_a_change_by_another_writer_stops_the_rollout_and_the_clean_up_leaves_it(settings):
    state = state_of(settings)
    prepared = rollout_flow.prepare(MODEL, "challenger", "canary", AUTO, settings)
    rollout_flow.canary_step(prepared["rollout_id"], 0.05, AUTO, settings)
    current = state.route(MODEL)
    other = state.change(dataclasses.replace(current, canary_weight=0.3), "pin", "a script", "not via the DAG")
    with pytest.raises(RolloutStopped, match="changed by someone else"):
        rollout_flow.canary_step(prepared["rollout_id"], 0.05, AUTO, settings)
    rollout_flow.fail(prepared["rollout_id"], AUTO, settings)
    assert state.route(MODEL) == other and state.rollout(prepared["rollout_id"]).status == "aborted"


def test_a_write_on_behalf_of_an_ended_rollout_is_refused_in_the_same_transaction(settings):
    state = state_of(settings)
    prepared = rollout_flow.prepare(MODEL, "challenger", "canary", AUTO, settings)
    rollout = state.rollout(prepared["rollout_id"])
    state.end_by_person(MODEL, ALICE, "stop")
    stale = Route(MODEL, "1", "2", 0.05, revision=rollout.expected_revision)
    with pytest.raises(RolloutEnded):
        state.change(stale, "canary_step", AUTO, "late step", owner=rollout.id)
    assert state.route(MODEL).canary_version is None and len(state.trail(MODEL)) == 1


# --- queued automatic runs are dropped when overtaken ------------------------------------------------


def test_a_queued_automatic_run_is_dropped_after_a_person_acted(settings):
    queued_at = datetime.now(UTC) - timedelta(seconds=1)
    actions.apply("pin", MODEL, "2", 0.1, ALICE, "A/B test", settings)
    with pytest.raises(NothingToRollOut, match="alice .* changed traffic by hand"):
        rollout_flow.prepare(MODEL, "challenger", None, AUTO, settings, automatic=True, queued_at=queued_at)
    assert state_of(settings).running_rollout(MODEL) is None
    assert state_of(settings).route(MODEL).canary_weight == 0.1


def test_a_queued_run_is_dropped_after_a_person_ended_a_rollout_that_changed_nothing_yet(settings):
    queued_at = datetime.now(UTC) - timedelta(seconds=1)
    rollout_flow.prepare(MODEL, "challenger", None, "bob (dag:credit_risk_rollout/manual__1)", settings)
    actions.apply("abort", MODEL, "challenger", 0.0, ALICE, "not today", settings)
    with pytest.raises(NothingToRollOut, match="alice .* ended rollout"):
        rollout_flow.prepare(MODEL, "challenger", None, AUTO, settings, automatic=True, queued_at=queued_at)


def test_a_queued_run_for_an_older_candidate_is_dropped(settings):
    from loopline.core import tracking

    tracking.client_for(settings).set_registered_model_alias(MODEL, "challenger", "3")  # v3 passed the gate since
    with pytest.raises(NothingToRollOut, match="queued for v2, but the challenger is now v3"):
        rollout_flow.prepare(MODEL, "challenger", None, AUTO, settings, automatic=True, event_versions=["2"])
    prepared = rollout_flow.prepare(MODEL, "challenger", None, AUTO, settings, automatic=True, event_versions=["3"])
    assert prepared["candidate"] == "3"


def test_an_automatic_rollout_does_not_override_a_pin_but_a_person_may(settings):
    actions.apply("pin", MODEL, "3", 0.2, ALICE, "A/B test", settings)
    later = datetime.now(UTC) + timedelta(seconds=1)  # queued after the pin
    with pytest.raises(NothingToRollOut, match="v3 is pinned at 20% by hand"):
        rollout_flow.prepare(MODEL, "challenger", None, AUTO, settings, automatic=True, queued_at=later)
    bob = "bob (dag:credit_risk_rollout/manual__2)"
    assert rollout_flow.prepare(MODEL, "challenger", None, bob, settings)["candidate"] == "2"


def test_nothing_to_roll_out_says_why(settings):
    from loopline.core import tracking

    tracking.client_for(settings).delete_registered_model_alias(MODEL, "challenger")
    with pytest.raises(NothingToRollOut, match="no challenger"):
        rollout_flow.prepare(MODEL, "challenger", None, AUTO, settings)
    with pytest.raises(NothingToRollOut, match="already serves"):
        rollout_flow.prepare(MODEL, "1", None, AUTO, settings)


# --- the shadow phase ---------------------------------------------------------------------------------


def shadow_phases(settings, rollout_id: int) -> list[tuple[str, object]]:
    """A rollout with a shadow phase: shadow starts, is judged, hands over to the first canary step, promote."""
    return [
        ("shadow starts", lambda: rollout_flow.shadow_step(rollout_id, AUTO, settings)),
        ("shadow judges", lambda: rollout_flow.shadow_step(rollout_id, AUTO, settings)),
        ("canary 5%", lambda: rollout_flow.canary_step(rollout_id, 0.05, AUTO, settings)),
        ("promote", lambda: rollout_flow.promote(rollout_id, AUTO, settings)),
    ]


@pytest.mark.parametrize("action", list(MANUAL))
@pytest.mark.parametrize("before", range(3))
def test_a_manual_action_ends_a_shadow_phase_safely(settings, before, action):
    race(settings, "canary", shadow_phases, before, action)
    assert state_of(settings).route(MODEL).shadow_version is None  # whatever the person did, no shadow is left


def test_the_shadow_names_the_candidate_then_the_first_canary_step_replaces_it(settings):
    state = state_of(settings)
    rollout_id = rollout_flow.prepare(MODEL, "challenger", "canary", AUTO, settings)["rollout_id"]
    started = rollout_flow.shadow_step(rollout_id, AUTO, settings)
    assert (started.status, started.phase) == ("wait", "shadow")
    route = state.route(MODEL)
    assert (route.champion_version, route.shadow_version, route.canary_version) == ("1", "2", None)
    assert state.rollout(rollout_id).phase == "shadow" and state.trail(MODEL)[0].action == "shadow_start"
    judged = rollout_flow.shadow_step(rollout_id, AUTO, settings)  # no traffic, no metrics: it waits
    assert judged.status == "wait" and state.route(MODEL) == route
    rollout_flow.canary_step(rollout_id, 0.05, AUTO, settings)
    route = state.route(MODEL)
    assert (route.shadow_version, route.canary_version, route.canary_weight) == (None, "2", 0.05)
    assert state.rollout(rollout_id).phase == "canary"


def test_a_shadow_that_cannot_be_judged_in_time_fails_and_the_champion_serves_alone(settings):
    state = state_of(settings)
    rollout_id = rollout_flow.prepare(MODEL, "challenger", "canary", AUTO, settings)["rollout_id"]
    rollout_flow.shadow_step(rollout_id, AUTO, settings)
    long_ago = datetime.now(UTC) - timedelta(hours=2)  # past the spec's max_step_seconds
    state._update_rollout(rollout_id, {"step_started_at": long_ago})
    verdict = rollout_flow.shadow_step(rollout_id, AUTO, settings)
    assert verdict.status == "fail" and "not enough traffic" in verdict.reason
    route = state.route(MODEL)
    assert (route.champion_version, route.shadow_version, route.canary_version) == ("1", None, None)
    record = state.rollout(rollout_id)
    assert record.status == "failed" and record.gate_results[-1]["phase"] == "shadow"
    stop = state.trail(MODEL)[0]
    assert stop.action == "abort" and stop.details["stopped_shadow"] == "2"
    rollout_flow.fail(rollout_id, AUTO, settings)  # put_champion_back afterwards changes nothing
    assert state.route(MODEL) == route


def test_the_clean_up_still_stops_the_rollouts_own_shadow(settings):
    rollout_id = rollout_flow.prepare(MODEL, "challenger", "canary", AUTO, settings)["rollout_id"]
    rollout_flow.shadow_step(rollout_id, AUTO, settings)
    record = rollout_flow.fail(rollout_id, AUTO, settings)
    route = state_of(settings).route(MODEL)
    assert (route.champion_version, route.shadow_version) == ("1", None) and record["status"] == "failed"
