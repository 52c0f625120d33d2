"""The drift-check history on real databases: SQLite (embedded) and Postgres (the stack).

The Postgres variant gets a fresh database on 127.0.0.1:5432 (user postgres), dropped
afterwards, and is skipped only when Postgres is unreachable.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from loopline.core.errors import LooplineError
from loopline.core.serving_state import Route, ServingState
from loopline.monitoring.monitoring_state import MonitoringState, MonitoringStateError
from tests.conftest import throwaway_postgres

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    yield from throwaway_postgres("loopline_monitoring")


@pytest.fixture
def state(url):
    state = MonitoringState(url)
    yield state
    state.engine.dispose()  # release connections before the database is dropped


def _record(state, at, triggered=False, verdict="stable", model="m", dag_run=None, **kw):
    return state.record(
        at=at,
        model=model,
        champion_version="3",
        n_rows=2_000,
        verdict=verdict,
        confirmed=triggered or verdict in ("performance_risk", "concept_drift"),
        triggered=triggered,
        trigger_reason=kw.pop("trigger_reason", "x"),
        dag_run=dag_run,
        **kw,
    )


def test_a_check_is_stored_with_every_field(state):
    features = [{"name": "age", "p_value": 0.2, "psi": 0.01, "drifted": False}]
    check = state.record(
        at=T0,
        model="credit_risk",
        champion_version=3,
        n_rows=2_345,
        verdict="performance_risk",
        confirmed=True,
        triggered=True,
        trigger_reason="drift confirmed: triggering a retrain",
        drift_share=0.42,
        score_psi=0.21,
        report_uri="file:///x/report.html",
        features=features,
        dag_run="scheduled__2026-03-02T09:00:00+00:00",
    )
    assert check.id == 1 and check.at == T0 and check.champion_version == "3" and check.features == features
    [stored] = state.latest("credit_risk")
    assert stored == check and stored.at.tzinfo is not None
    assert stored.to_dict()["at"] == "2026-03-02T09:00:00+00:00"
    assert "TRIGGERED" in stored.line() and "share 0.42" in stored.line()


def test_latest_is_newest_first_per_model_and_limited(state):
    for hour in range(5):
        _record(state, T0 + timedelta(hours=hour))
    _record(state, T0 + timedelta(hours=9), model="other")
    latest = state.latest("m", limit=3)
    assert [c.at for c in latest] == [T0 + timedelta(hours=h) for h in (4, 3, 2)]
    assert state.latest("nobody") == []


def test_triggers_since_lists_only_triggered_checks_in_utc(state):
    _record(state, T0 - timedelta(days=8), triggered=True)
    _record(state, T0 - timedelta(days=2), triggered=True)
    _record(state, T0 - timedelta(days=1), verdict="performance_risk")  # confirmed, held back by the guard
    _record(state, T0 - timedelta(hours=3), triggered=True, model="other")
    eastern = timezone(timedelta(hours=-5))
    _record(state, (T0 - timedelta(hours=1)).astimezone(eastern), triggered=True, verdict="concept_drift")
    since = state.triggers_since("m", T0 - timedelta(days=7))
    assert since == [T0 - timedelta(days=2), T0 - timedelta(hours=1)]
    assert all(t.tzinfo is not None and t.utcoffset() == timedelta(0) for t in since)
    assert state.triggers_since("m", (T0 - timedelta(hours=1)).replace(tzinfo=None)) == [T0 - timedelta(hours=1)]


def test_the_same_dag_run_records_once(state):
    _record(state, T0, verdict="performance_risk", dag_run="run-1", trigger_reason="first try")
    again = _record(state, T0, triggered=True, verdict="performance_risk", dag_run="run-1", trigger_reason="retry")
    assert [c.trigger_reason for c in state.latest("m")] == ["retry"] and again.id == 1
    _record(state, T0, dag_run="run-1", model="other")  # same run id, other model: its own row
    _record(state, T0)
    _record(state, T0)  # no run id (a CLI check): always a new row
    assert len(state.latest("m")) == 3 and len(state.triggers_since("m", T0)) == 1


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"verdict": "maybe"}, "verdict must be one of"),
        ({"n_rows": -1}, "n_rows"),
        ({"confirmed": False, "triggered": True}, "confirmed drift"),
    ],
)
def test_invalid_records_are_refused(state, kwargs, message):
    values = {"at": T0, "model": "m", "champion_version": "1", "n_rows": 10, "verdict": "performance_risk"}
    values["confirmed"] = True
    values.update({"triggered": False, **kwargs})
    with pytest.raises(MonitoringStateError, match=message) as info:
        state.record(**values)
    assert isinstance(info.value, LooplineError)
    assert state.latest("m") == []


def test_create_all_is_idempotent_and_shares_the_serving_state_database(url):
    serving = ServingState(url)
    serving.change(Route("m", champion_version="1"), "promote", "test", "first")
    first = MonitoringState(url)
    _record(first, T0, triggered=True, verdict="performance_risk")
    second = MonitoringState(url)  # a second process / task on the same database
    ServingState(url)
    assert len(second.latest("m")) == 1 and serving.route("m").champion_version == "1"
    assert len(serving.trail("m")) == 1
    for store in (serving, first, second):
        store.engine.dispose()
