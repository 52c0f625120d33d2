"""The estimate's error over time (loopline.monitoring.estimate_error): each window's estimate against the
quality its labels show once they arrive, stored in the real drift history, shown on the page and the report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from loopline.core.spec import load_spec
from loopline.monitoring import estimate_error
from loopline.monitoring.monitoring_state import MonitoringState
from loopline.monitoring.report_page import history_html
from loopline.ops import ui

SPEC = load_spec("credit_risk", Path(__file__).resolve().parents[2] / "models")
T0 = datetime(2026, 3, 2, tzinfo=UTC)
HOURS = 24.0


def logged(window_end: datetime, n: int, seed: int, version: str = "1", flip: float = 0.2) -> pd.DataFrame:
    """``n`` answers logged in the 24 hours before ``window_end``, their outcome known (``flip`` of them wrong)."""
    rng = np.random.default_rng(seed)
    score = rng.uniform(0, 1, n)
    outcome = (score > 0.5).astype(float)
    wrong = rng.uniform(0, 1, n) < flip
    outcome[wrong] = 1 - outcome[wrong]
    at = window_end.timestamp() - rng.uniform(1, HOURS * 3600 - 1, n)
    return pd.DataFrame(
        {"score": score, "decision": "x", "outcome": outcome, "model_version": version, "logged_at": at}
    )


def _check(store: MonitoringState, at: datetime, estimated: float | None, run: str, version: str = "1"):
    impact = {"metric": "auc", "estimated": estimated, "window_start": (at - timedelta(hours=HOURS)).isoformat()}
    return store.record(
        at=at, model="m", champion_version=version, n_rows=600, verdict="stable", confirmed=False, triggered=False,
        dag_run=run, impact=impact,
    )  # fmt: skip


@pytest.fixture
def store(tmp_path):
    state = MonitoringState(f"sqlite:///{tmp_path / 'state.db'}")
    yield state
    state.engine.dispose()


def test_the_realised_quality_is_the_windows_own_labels_only():
    day1, day2 = T0 + timedelta(days=1), T0 + timedelta(days=2)
    a, b = logged(day1, 400, seed=1, flip=0.1), logged(day2, 400, seed=2, flip=0.3)
    both = pd.concat([a, b], ignore_index=True)
    value, n = estimate_error.realised_in_window(both, "1", T0, day1, SPEC, min_labelled=300)
    assert n == 400 and value == pytest.approx(roc_auc_score(a["outcome"], a["score"]))
    assert estimate_error.realised_in_window(both, "2", T0, day1, SPEC, 300) is None  # another version's window
    assert estimate_error.realised_in_window(both, "1", T0, day1, SPEC, 401) is None  # too few labels yet
    unknown = both.assign(outcome=np.where(np.arange(len(both)) % 2 == 0, np.nan, both["outcome"]))
    assert estimate_error.realised_in_window(unknown, "1", T0, day1, SPEC, 300) is None  # half still unknown


def test_later_checks_fill_in_each_windows_realised_value_and_error(store):
    day1, day2, day3 = (T0 + timedelta(days=d) for d in (1, 2, 3))
    first, second = _check(store, day1, 0.90, "r1"), _check(store, day2, 0.70, "r2")
    store.record(at=day3, model="m", champion_version="1", n_rows=10, verdict="insufficient", confirmed=False,
                 triggered=False, dag_run="r3", impact={"metric": "auc", "estimated": None})  # fmt: skip
    labels = logged(day1, 400, seed=1, flip=0.1)  # only the first window's labels have arrived
    checks = store.latest("m")
    updates = estimate_error.window_realised(checks, labels, SPEC, HOURS, min_labelled=300)
    assert set(updates) == {first.id}
    for check_id, impact in updates.items():
        store.update_impact(check_id, impact)
    realised = roc_auc_score(labels["outcome"], labels["score"])
    stored = {c.id: c.impact for c in store.latest("m")}
    assert stored[first.id]["window_realised"] == pytest.approx(realised)
    assert stored[first.id]["estimate_error"] == pytest.approx(0.90 - realised)
    assert stored[first.id]["window_realised_n"] == 400 and "window_realised" not in stored[second.id]
    # nothing new: nothing to update; the second window's labels arrive: only it changes
    assert estimate_error.window_realised(store.latest("m"), labels, SPEC, HOURS, 300) == {}
    more = pd.concat([labels, logged(day2, 350, seed=2, flip=0.3)], ignore_index=True)
    assert set(estimate_error.window_realised(store.latest("m"), more, SPEC, HOURS, 300)) == {second.id}


def test_the_history_shows_the_last_windows_and_their_mean_absolute_error(store):
    for day, (estimated, flip) in enumerate([(0.9, 0.1), (0.8, 0.2), (0.7, 0.3), (0.6, 0.4)], start=1):
        at = T0 + timedelta(days=day)
        check = _check(store, at, estimated, f"r{day}")
        if day < 4:  # the newest window's labels are not in yet
            labels = logged(at, 400, seed=day, flip=flip)
            store.update_impact(check.id, estimate_error.with_realised(
                check.impact, estimate_error.realised_in_window(labels, "1", T0, at, SPEC, 300)))  # fmt: skip
    checks = store.latest("m")
    shown = estimate_error.history(checks, last=3)
    assert [w["estimated"] for w in shown["windows"]] == [0.6, 0.7, 0.8]  # newest first, the last three
    assert shown["windows"][0]["realised"] is None and shown["judged"] == 2
    errors = [abs(c.impact["estimate_error"]) for c in checks[1:3]]
    assert shown["mean_absolute_error"] == pytest.approx(sum(errors) / 2)
    page = history_html(shown)
    assert "mean absolute error" in page and f"{shown['mean_absolute_error']:.3f}" in page
    assert f"{checks[1].impact['estimate_error']:+.3f}" in page
    # the plugin page: the history under the drift table, over the last ten windows (three judged here)
    drift = ui.drift_verdicts(store.engine.url.render_as_string(hide_password=False), "m")
    everything = [abs(c.impact["estimate_error"]) for c in checks[1:]]
    html = ui._estimate_history_html(drift)
    assert f"mean absolute error {sum(everything) / 3:.3f} over the last 3 windows with labels" in html
    assert html.count("<tr>") == 1 + 4  # the header and the four windows
    cell = ui._estimated_vs_realised(checks[1].impact)
    assert f"realised on 400 labels (error {checks[1].impact['estimate_error']:+.3f})" in cell
    assert estimate_error.history([]) == {"windows": [], "mean_absolute_error": None, "judged": 0, "last": 10}
