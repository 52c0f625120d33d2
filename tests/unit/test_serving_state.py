"""The serving state store on a real database: SQLite here, Postgres in the stack."""

from __future__ import annotations

import pytest

from loopline.core.serving_state import Route, RoutingError, ServingState


@pytest.fixture
def state(tmp_path):
    return ServingState(f"sqlite:///{tmp_path / 'state.db'}")


def test_an_unknown_model_has_an_empty_route(state):
    assert state.route("m") == Route(model="m")


def test_every_change_is_stored_with_its_audit_record(state):
    first = state.change(Route("m", champion_version="1"), "promote", "dag:train/run1", "first model")
    assert first.revision == 1 and first.champion_version == "1"
    step = state.change(
        Route("m", "1", "2", 0.05, revision=1), "canary_step", "dag:rollout/run7", "step 1", {"gates": {"psi": 0.01}}
    )
    assert step.canary_weight == 0.05 and step.revision == 2
    trail = state.trail("m")
    assert [r.action for r in trail] == ["canary_step", "promote"]
    assert trail[0].before["canary_version"] is None and trail[0].after["canary_version"] == "2"
    assert trail[0].details == {"gates": {"psi": 0.01}} and trail[0].actor == "dag:rollout/run7"
    assert "v1 -> v1 + v2@5%" in trail[0].line()


def test_a_stale_writer_cannot_overwrite_a_newer_change(state):
    state.change(Route("m", champion_version="1"), "promote", "a", "x")
    with pytest.raises(RoutingError, match="changed meanwhile"):
        state.change(Route("m", champion_version="2", revision=0), "promote", "b", "stale")
    assert state.route("m").champion_version == "1" and len(state.trail("m")) == 1


@pytest.mark.parametrize(
    "route,message",
    [
        (Route("m", "1", "2", 1.5), "within"),
        (Route("m", "1", None, 0.2), "needs a canary version"),
        (Route("m", None, "2", 0.2), "needs a champion"),
        (Route("m", "1", "1", 0.2), "at once"),
        (Route("m", "1", mode="shadowy"), "mode"),
        (Route("m", None, shadow_version="2"), "shadow needs a champion"),
        (Route("m", "1", shadow_version="1"), "champion and shadow at once"),
        (Route("m", "1", "2", 0.05, shadow_version="3"), "shadow .* and a canary cannot serve at once"),
    ],
)
def test_invalid_routes_are_refused_and_nothing_is_written(state, route, message):
    with pytest.raises(RoutingError, match=message):
        state.change(route, "pin", "admin", "bad")
    assert state.trail("m") == []


def test_audit_times_come_back_in_utc(tmp_path):
    from datetime import UTC

    state = ServingState(f"sqlite:///{tmp_path / 'state.db'}")
    state.change(Route("m", champion_version="1"), "first_champion", "t", "t")
    assert state.trail("m")[0].at.tzinfo == UTC


def test_a_store_from_an_earlier_release_gets_the_new_rollout_columns(tmp_path):
    from sqlalchemy import create_engine, inspect, text

    url = f"sqlite:///{tmp_path / 'old.db'}"
    with create_engine(url).begin() as conn:  # the rollout table as the first release created it
        conn.execute(
            text(
                "CREATE TABLE loopline_rollouts (id INTEGER PRIMARY KEY, model VARCHAR(128), candidate_version"
                " VARCHAR(32), champion_version VARCHAR(32), mode VARCHAR(16), status VARCHAR(16), step FLOAT,"
                " step_started_at DATETIME, baseline JSON, started_at DATETIME, finished_at DATETIME,"
                " trigger VARCHAR(256), gate_results JSON, outcome VARCHAR(2000))"
            )
        )
    state = ServingState(url)
    columns = {c["name"] for c in inspect(state.engine).get_columns("loopline_rollouts")}
    assert {"base_revision", "route_revision", "ended_by"} <= columns
    rollout = state.start_rollout("m", "2", "1", "canary", "t", base_revision=3)
    assert rollout.expected_revision == 3 and rollout.ended_by is None
    ServingState(url)  # a second process opening the upgraded store changes nothing


def test_a_person_ends_the_running_rollout_once(state):
    state.change(Route("m", champion_version="1"), "first_champion", "t", "t")
    rollout = state.start_rollout("m", "2", "1", "canary", "asset", base_revision=1)
    ended = state.end_by_person("m", "alice (dag:c/manual__1)", "pinned by hand")
    assert ended.id == rollout.id and ended.status == "aborted" and ended.ended_by.startswith("alice")
    assert state.end_by_person("m", "bob", "again") is None
    assert state.finish_rollout(rollout.id, "failed", "late").status == "aborted"  # finished stays finished


def test_a_shadow_is_stored_audited_and_cleared(state):
    state.change(Route("m", champion_version="1"), "first_champion", "t", "t")
    shadow = state.change(Route("m", "1", revision=1, shadow_version="2"), "shadow_start", "dag:r/1", "shadow")
    assert shadow.shadow_version == "2" and shadow.canary_weight == 0.0
    assert "v1 -> v1 + shadow v2" in state.trail("m")[0].line()
    step = state.change(Route("m", "1", "2", 0.05, revision=2), "canary_step", "dag:r/1", "step 1")
    assert step.shadow_version is None and "v1 + shadow v2 -> v1 + v2@5%" in state.trail("m")[0].line()
    rollout = state.start_rollout("m", "2", "1", "canary", "t", base_revision=1)
    assert rollout.phase is None
    assert state.begin_step(rollout.id, 0.0, {}, phase="shadow").phase == "shadow"
    assert state.begin_step(rollout.id, 0.05, {}).phase == "canary"


def test_a_store_from_before_shadows_gets_the_column_and_keeps_its_routes(tmp_path):
    """The routes table as it was before shadow mode, with a route in it: upgraded in place."""
    from sqlalchemy import create_engine, inspect, text

    url = f"sqlite:///{tmp_path / 'old.db'}"
    with create_engine(url).begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE loopline_routes (model VARCHAR(128) PRIMARY KEY, champion_version VARCHAR(32),"
                " canary_version VARCHAR(32), canary_weight FLOAT NOT NULL, mode VARCHAR(16) NOT NULL,"
                " revision INTEGER NOT NULL, updated_at DATETIME NOT NULL)"
            )
        )
        conn.execute(
            text("INSERT INTO loopline_routes VALUES ('m', '1', '2', 0.2, 'canary', 7, '2026-01-01 00:00:00')")
        )
    state = ServingState(url)
    assert "shadow_version" in {c["name"] for c in inspect(state.engine).get_columns("loopline_routes")}
    assert state.route("m") == Route("m", "1", "2", 0.2, "canary", 7)  # no shadow
    state.change(Route("m", "1", revision=7, shadow_version="3"), "shadow_start", "t", "t")
    assert ServingState(url).route("m").shadow_version == "3"  # a second process opens it as it is


def test_the_audit_commands_header_names_only_the_arms_that_serve():
    from loopline.ops.cli import serving_line

    assert serving_line(Route("m", "2")) == "champion v2"  # not "canary vNone @ 0%"
    assert serving_line(Route("m", "1", "2", 0.2)) == "champion v1, canary v2 at 20%"
    shadow = serving_line(Route("m", "1", shadow_version="2"))
    assert shadow == "champion v1, shadow v2 (scores a copy, answers nothing)"
