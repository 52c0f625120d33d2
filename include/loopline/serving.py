"""Online scoring behind the BentoML service: champion + canary, routed per entity, hot-swapped.

A background thread polls the serving state store. When the route's revision
changes it first loads every version the new route needs, then swaps one
reference, so a request sees either the old route or the new one, never a half
of each, and no request waits for a model to load. Until the store names a
champion (a Bento served on its own), the model baked into the Bento serves.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import lightgbm as lgb
import pandas as pd

from loopline.routing import choose_version
from loopline.scoring import score_frame
from loopline.serving_state import Route, ServingState
from loopline.spec import ModelSpec

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
        needed = [v for v in (route.champion_version, route.canary_version) if v]
        boosters = {v: live.boosters[v] if v in live.boosters else self.load(v) for v in needed}
        self._live = LiveRoute(route, boosters)
        log.info("serving route revision %s: %s", route.revision, route.to_dict())
        return True

    def watch(self, every_seconds: float) -> threading.Thread:
        def loop() -> None:
            while not self._stop.wait(every_seconds):
                try:
                    self.refresh()
                except Exception:  # a store or registry hiccup must never stop serving the current route
                    log.exception("route refresh failed; keeping revision %s", self._live.route.revision)

        thread = threading.Thread(target=loop, name="loopline-route-watch", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def score(self, raw: pd.DataFrame) -> pd.DataFrame:
        """score, decision, reasons, model_version and arm for each row, in the input order."""
        live = self._live  # one snapshot for the whole request
        entity = self.spec.dataset.entity_id
        assigned = [choose_version(live.route, str(e)) for e in raw[entity]]
        versions = pd.Series([v for v, _ in assigned], index=raw.index)
        parts = []
        for version, rows in raw.groupby(versions, sort=False):
            scored = score_frame(live.boosters[version], rows, self.spec)
            parts.append(scored.assign(model_version=version))
        out = pd.concat(parts).loc[raw.index]
        out["arm"] = [arm for _, arm in assigned]
        return out
