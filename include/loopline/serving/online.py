"""Online scoring behind the BentoML service: champion + canary, routed per entity, hot-swapped.

A shadow version (a rollout's first phase) answers nothing: ``shadow`` scores a copy of
rows the champion already answered, after the answer, and compares its decisions with
the champion's. Whatever the shadow does (raise included), the answer is the champion's.

A background thread polls the serving state store. When the route's revision
changes it first loads every version the new route needs, then swaps one
reference, so a request sees either the old route or the new one, never a half
of each, and no request waits for a model to load. Until the store names a
champion (a Bento served on its own), the model baked into the Bento serves.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from loopline.core.features import FeatureSet, feature_set
from loopline.core.serving_state import Route, ServingState
from loopline.core.spec import ModelSpec
from loopline.serving.routing import choose_version
from loopline.serving.scoring import Answers, score_arrays

log = logging.getLogger(__name__)
Loader = Callable[[str], lgb.Booster]


@dataclass(frozen=True)
class LiveRoute:
    route: Route
    boosters: dict[str, lgb.Booster] = field(default_factory=dict)


class RoutedScorer:
    def __init__(
        self,
        spec: ModelSpec,
        load: Loader,
        state: ServingState | None,
        pinned_version: str,
        pinned_booster: lgb.Booster,
    ) -> None:
        self.spec = spec
        self.features = feature_set(spec)  # the served code is fixed for the process: looked up once, not per request
        self.load = load
        self.state = state
        fallback = Route(spec.name, champion_version=pinned_version, revision=-1)
        self._live = LiveRoute(fallback, {pinned_version: pinned_booster})
        self._stop = threading.Event()

    @property
    def route(self) -> Route:
        return self._live.route

    def refresh(self) -> bool:
        """Adopt the stored route if it changed; True when it did. Loading happens before the swap."""
        if self.state is None:
            return False
        route = self.state.route(self.spec.name)
        live = self._live
        if route.champion_version is None or route.revision == live.route.revision:
            return False
        needed = [v for v in (route.champion_version, route.canary_version, route.shadow_version) if v]
        boosters = {v: live.boosters[v] if v in live.boosters else self.load(v) for v in needed}
        self._live = LiveRoute(route, boosters)
        log.info("serving route revision %s: %s", route.revision, route.to_dict())
        return True

    def watch(self, every_seconds: float, on_change: Callable[[Route], None] | None = None) -> threading.Thread:
        """Poll the store every ``every_seconds``; ``on_change(route)`` runs on this thread after each swap."""

        def loop() -> None:
            while not self._stop.wait(every_seconds):
                try:
                    if self.refresh() and on_change is not None:
                        on_change(self._live.route)
                except Exception:  # a store or registry hiccup must never stop serving the current route
                    log.exception("route refresh failed; keeping revision %s", self._live.route.revision)

        thread = threading.Thread(target=loop, name="loopline-route-watch", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def score(self, rows: Rows | pd.DataFrame, num_threads: int | None = None) -> Scored:
        """Score each row with its assigned version, in the input order (``num_threads``: as ``score_arrays``).

        A canary that raises does not fail the request: its rows are scored by the
        champion instead (arm ``fallback``) and counted in ``failed``, which the
        rollout gates read as the canary's error rate. A champion that raises fails
        the request: there is nothing left to fall back to.
        """
        rows = rows if isinstance(rows, Rows) else Rows.from_frame(rows, self.spec)
        live = self._live  # one snapshot for the whole request
        route = live.route
        champion = str(route.champion_version)
        if not route.canary_version:  # fast path: one version, no per-row assignment
            started = time.perf_counter()
            answers = self._answers(live.boosters[champion], rows.columns, num_threads)
            n = len(answers)
            return Scored(
                answers, [champion] * n, ["champion"] * n, rows, route, {champion: time.perf_counter() - started}, {}
            )
        assigned = [choose_version(route, e) for e in rows.entities]
        versions = [v for v, _ in assigned]
        arms = [a for _, a in assigned]
        groups: dict[str, list[int]] = {}
        for i, version in enumerate(versions):
            groups.setdefault(version, []).append(i)
        parts, seconds, failed = [], {}, {}
        for version, positions in groups.items():
            idx = np.asarray(positions)
            subset = {name: column[idx] for name, column in rows.columns.items()}  # scoring needs the columns only
            started = time.perf_counter()
            try:
                answers = self._answers(live.boosters[version], subset, num_threads)
            except Exception:
                if version == champion:
                    raise
                log.exception("canary v%s failed on %d rows; the champion scores them", version, len(positions))
                failed[version] = failed.get(version, 0) + len(positions)
                for i in positions:
                    arms[i], versions[i] = "fallback", champion
                version = champion
                started = time.perf_counter()
                answers = self._answers(live.boosters[version], subset, num_threads)
            seconds[version] = seconds.get(version, 0.0) + time.perf_counter() - started
            parts.append((idx, answers))
        return Scored(Answers.merge(len(rows), parts), versions, arms, rows, route, seconds, failed)

    def _answers(self, booster: lgb.Booster, columns: dict[str, np.ndarray], num_threads: int | None) -> Answers:
        return score_arrays(booster, columns, self.spec, num_threads=num_threads, features=self.features)

    def shadow(self, rows: Rows | pd.DataFrame, answered: Scored) -> Shadowed | None:
        """The route's shadow version scores the rows ``answered`` answered; None when it has no shadow.

        Uses the boosters of the route the answer was scored under (``answered.route``), so a
        route change between answer and shadow never compares the wrong pair. Never raises
        for the shadow's own failure: it is returned as ``error`` (its rows count as failed).
        """
        rows = rows if isinstance(rows, Rows) else Rows.from_frame(rows, self.spec)
        route = answered.route
        version = route.shadow_version
        live = self._live
        if not version or live.route.revision != route.revision or version not in live.boosters:
            return None  # no shadow, or the route moved on since the answer (its booster may be gone)
        # One thread, timed in CPU seconds: behind the answer the shadow waits for the GIL and the
        # cores, and its wall time would measure that wait, not the model's cost as a future canary.
        started = time.thread_time()
        try:
            answers = self._answers(live.boosters[version], rows.columns, num_threads=1)
        except Exception as err:
            log.warning("shadow v%s failed on %d rows: %s", version, len(rows), err)
            return Shadowed(version, None, time.thread_time() - started, f"{type(err).__name__}: {err}", 0, 0)
        seconds = time.thread_time() - started
        n = len(answers)
        scored = Scored(answers, [version] * n, ["shadow"] * n, rows, route, {version: seconds}, {})
        mine, theirs = answers.decision, answered.answers.decision
        both = [i for i in range(n) if mine[i] is not None and theirs[i] is not None]  # regression decides nothing
        disagree = sum(1 for i in both if mine[i] != theirs[i])
        return Shadowed(version, scored, seconds, "", len(both), disagree)


@dataclass(frozen=True)
class Rows:
    """Rows to score as column arrays (``FeatureSet.raw_arrays`` coding), their entity ids and their raw values.

    ``values`` keeps each feature's values as sent (categoricals as strings) for the prediction log.
    """

    columns: dict[str, np.ndarray]
    entities: list[str]
    values: dict[str, list]
    index: Any = None  # the DataFrame index the rows came from, if any

    def __len__(self) -> int:
        return len(self.entities)

    @classmethod
    def from_values(
        cls, values: dict[str, list], entities: list[str], spec: ModelSpec, features: FeatureSet | None = None
    ) -> Rows:
        """Validated request values (``None`` = missing); ``features``: the spec's feature set, if already at hand."""
        return cls((features or feature_set(spec)).value_arrays(values), [str(e) for e in entities], values)

    @classmethod
    def from_frame(cls, raw: pd.DataFrame, spec: ModelSpec) -> Rows:
        entity = spec.dataset.entity_id
        entities = [str(e) for e in raw[entity]] if entity in raw.columns else [str(i) for i in raw.index]
        values = {name: raw[name].tolist() for name in spec.features.names if name in raw.columns}
        return cls(feature_set(spec).raw_arrays(raw), entities, values, raw.index)


@dataclass(frozen=True)
class Scored:
    answers: Answers  # score, decision, reasons (, probabilities) per row, in the rows' order
    versions: list[str]  # the model version that answered each row
    arms: list[str]  # champion | canary | fallback (| shadow)
    rows: Rows
    route: Route
    seconds: dict[str, float]  # scoring time per version that answered
    failed: dict[str, int]  # rows per version that raised and fell back to the champion

    @functools.cached_property
    def frame(self) -> pd.DataFrame:
        """The answers as a DataFrame (score, decision, reasons, model_version, arm) with the rows' index."""
        return self.answers.frame(self.rows.index).assign(model_version=self.versions, arm=self.arms)


@dataclass(frozen=True)
class Shadowed:
    """What the shadow version made of rows someone else answered: never sent to the client."""

    version: str
    scored: Scored | None  # its answers, arm "shadow" (None: it raised)
    seconds: float  # its scoring CPU time for these rows (one thread)
    error: str  # why it raised ("" when it scored)
    compared: int  # rows with a decision from both (0 for regression)
    disagreements: int  # of those, rows whose decision differs from the answer's
