"""The serving state store on Postgres, as the stack runs it: round trip, JSON columns, optimistic locking.

Each test gets a fresh database on 127.0.0.1:5432 (user postgres), dropped afterwards;
the module skips only when Postgres is unreachable.
"""

from __future__ import annotations

import threading
from datetime import datetime

import pytest
from sqlalchemy import event

from loopline.core.serving_state import Route, RoutingError, ServingState
from tests.conftest import throwaway_postgres


@pytest.fixture
def url():
    yield from throwaway_postgres("loopline_state")


@pytest.fixture
def state(url):
    store = ServingState(url)
    yield store
    store.engine.dispose()


def test_it_really_runs_on_postgres(state):
    assert state.engine.dialect.name == "postgresql"
    assert state.route("m") == Route(model="m")


def test_change_route_and_trail_round_trip(state):
    first = state.change(Route("m", champion_version="1"), "promote", "dag:train/run1", "first model")
    assert first == Route("m", champion_version="1", revision=1)
    step = state.change(Route("m", "1", "2", 0.25, revision=1), "pin", "user:ana", "A/B test")
    assert step == Route("m", "1", "2", 0.25, "canary", revision=2)
    assert state.route("m") == step
    assert state.route("other") == Route(model="other")  # rows are per model

    trail = state.trail("m")
    assert [(r.action, r.actor, r.reason) for r in trail] == [
        ("pin", "user:ana", "A/B test"),
        ("promote", "dag:train/run1", "first model"),
    ]
    assert trail[0].id > trail[1].id
    assert isinstance(trail[0].at, datetime) and trail[0].at.tzinfo is not None  # timestamptz
    assert trail[0].before == first.to_dict() and trail[0].after == step.to_dict()
    assert "v1 -> v1 + v2@25%" in trail[0].line()
    assert [r.action for r in state.trail("m", limit=1)] == ["pin"]


def test_json_columns_keep_nested_values_and_stringify_the_rest(state):
    when = datetime(2026, 6, 1, 12, 30)
    details = {"gates": {"psi": 0.012, "auc_drop": -0.003, "passed": True}, "steps": [0.05, 0.25], "note": None}
    state.change(Route("m", champion_version="1"), "promote", "a", "first", {**details, "at": when})
    stored = state.trail("m")[0].details
    assert stored == {**details, "at": str(when)}  # json.dumps(default=str): a datetime becomes text
    assert state.trail("m")[0].before == Route(model="m").to_dict()


def test_a_stale_writer_is_refused_and_nothing_is_written(state):
    state.change(Route("m", champion_version="1"), "promote", "a", "first")
    state.change(Route("m", "1", "2", 0.05, revision=1), "canary_step", "b", "step 1")
    with pytest.raises(RoutingError, match=r"changed meanwhile \(revision 2, expected 1\)"):
        state.change(Route("m", champion_version="3", revision=1), "rollback", "c", "stale")
    assert state.route("m") == Route("m", "1", "2", 0.05, revision=2)
    assert len(state.trail("m")) == 2


@pytest.mark.parametrize("first_route", [False, True], ids=["update", "insert"])
def test_two_concurrent_writers_exactly_one_wins(url, state, first_route):
    """Two writers read the same revision, then both write at once: one commits, the other is refused.

    Each writer pauses just before its write to ``loopline_routes`` until the other has
    reached the same point (or 5 s passed, for a store that locks on read), so the
    interleaving is forced rather than left to chance.
    """
    if not first_route:
        state.change(Route("m", champion_version="1"), "promote", "setup", "first")
    revision = 0 if first_route else 1
    barrier = threading.Barrier(2, timeout=5)

    def before_write(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith(("UPDATE LOOPLINE_ROUTES", "INSERT INTO LOOPLINE_ROUTES")):
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass

    outcomes: dict[str, Route | Exception] = {}

    def write(version: str) -> None:
        store = ServingState(url)
        event.listen(store.engine, "before_cursor_execute", before_write)
        try:
            route = Route("m", "1", version, 0.1, revision=revision)
            outcomes[version] = store.change(route, "pin", f"w{version}", "race")
        except Exception as err:  # kept for the assertion: a loser must get a RoutingError, nothing else
            outcomes[version] = err
        finally:
            store.engine.dispose()

    threads = [threading.Thread(target=write, args=(v,)) for v in ("2", "3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    winners = [v for v, o in outcomes.items() if isinstance(o, Route)]
    assert len(winners) == 1 and len(outcomes) == 2, outcomes
    loser = next(o for o in outcomes.values() if not isinstance(o, Route))
    assert isinstance(loser, RoutingError) and "changed meanwhile" in str(loser), repr(loser)
    assert state.route("m") == Route("m", "1", winners[0], 0.1, revision=revision + 1)
    actors = [r.actor for r in state.trail("m")]
    assert actors == [f"w{winners[0]}"] + ([] if first_route else ["setup"])  # no audit record for the loser
