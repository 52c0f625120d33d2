"""Manual serving actions against a real state store (MLflow alias handling is covered end to end)."""

from __future__ import annotations

import pytest

from loopline.core.serving_state import Route, ServingState
from loopline.rollout.actions import RolloutError, abort, pin


@pytest.fixture
def state(tmp_path):
    store = ServingState(f"sqlite:///{tmp_path / 'state.db'}")
    store.change(Route("m", champion_version="1"), "first_champion", "t", "t")
    return store


def test_pin_then_abort(state):
    assert pin(state, "m", "2", 0.3, "admin", "A/B").canary_weight == 0.3
    assert pin(state, "m", "2", 0.3, "admin", "again").revision == 2  # idempotent: no second change
    route = abort(state, "m", "dag:x", "bad canary")
    assert route.canary_version is None and route.champion_version == "1"
    assert [r.action for r in state.trail("m")] == ["abort", "pin", "first_champion"]
    assert state.trail("m")[0].details == {"aborted_canary": "2"}


def test_abort_without_a_canary_changes_nothing(state):
    assert abort(state, "m", "a", "r").revision == 1 and len(state.trail("m")) == 1


def test_pin_needs_a_champion(tmp_path):
    empty = ServingState(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(RolloutError, match="no champion"):
        pin(empty, "m", "2", 0.1, "a", "r")
