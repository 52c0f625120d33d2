"""Stored features at serving time: the model's ``features.stored`` read from the online store by the row's keys.

The service opens one ``FeatureStore`` per process (``StoredFeatures.open``, in the service's
``__init__``) and reads, per request, each view the model uses with the view's join keys taken
from the request row (the entity id or a ``dataset.keys`` column). The values arrive as the
columns ``<view>__<feature>`` the model was trained on (Feast's full feature names).

A row whose key the store does not know, or whose newest value is older than the view's ttl,
follows the spec's rule for that view (``features.stored_missing``):

- ``refuse`` (the default): the request is refused with a 422 naming the key and the view;
  never a 500, never a silent zero;
- ``missing``: the view's features are scored as missing (NaN, as LightGBM sees a missing
  value), and the answer and the prediction log flag the view (``stored_missing``), counted
  like unknown levels.

A model without stored features opens nothing: this module is not even imported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopline.core.errors import LooplineError

if TYPE_CHECKING:
    from datetime import datetime

    from loopline.core.settings import Settings
    from loopline.core.spec import ModelSpec
    from loopline.features.definitions import Definitions
    from loopline.features.freshness import Freshness

log = logging.getLogger(__name__)
PRESENT = "present"


class StoredFeatureRefused(LooplineError, ValueError):
    """A row's key has no (fresh) value in a view whose rule is ``refuse``: the request's 422, in one line."""

    def __init__(self, message: str, view: str, key: dict[str, object], status: str) -> None:
        super().__init__(message)
        self.view, self.key, self.status = view, key, status


class StoredFeaturesUnavailable(LooplineError, RuntimeError):
    """The model names stored features the feature repo cannot provide: the service does not start."""


@dataclass(frozen=True)
class Looked:
    """What the store gave for some rows: the model's stored columns and, per row, the views scored as missing."""

    columns: dict[str, list]  # "<view>__<feature>" -> one value per row (None: missing)
    missing: list[list[str]]  # per row, the views with no (fresh) value, scored as missing (rule "missing")

    def __len__(self) -> int:
        return len(self.missing)


def _describe(key: dict[str, object]) -> str:
    """``card_id='c9', paid_at='2026-...'``: python values, as a person reads them (no numpy or pandas reprs)."""

    def plain(value: object) -> object:
        if hasattr(value, "isoformat"):
            return value.isoformat()
        return value.item() if hasattr(value, "item") and hasattr(value, "dtype") else value

    return ", ".join(f"{k}={plain(v)!r}" for k, v in key.items())


def view_of(column: str) -> str:
    return column.split("__", 1)[0]


def apply_rule(
    view: str,
    rule: str,
    keys: list[dict[str, object]],
    columns: dict[str, list],
    status: dict[str, list[str]],
) -> tuple[dict[str, list], list[bool]]:
    """One view's online read under its rule: (its columns, per row whether it is scored as missing).

    A row is missing when any of the view's features is not ``present`` (``not_found``: the key is
    unknown; ``stale``: older than the view's ttl). ``refuse`` raises ``StoredFeatureRefused`` for the
    first such row; ``missing`` blanks every feature of the view on that row (one value without the
    others would be a row the model never saw in training).
    """
    n = len(keys)
    out = {name: list(values) for name, values in columns.items()}
    flagged = [False] * n
    for i in range(n):
        bad = next((s[i] for s in status.values() if s[i] != PRESENT), None)
        if bad is None:
            continue
        if rule != "missing":
            why = "is not in the store" if bad == "not_found" else f"has only a {bad} value (older than the view's ttl)"
            raise StoredFeatureRefused(
                f"row {i}: {_describe(keys[i])} {why} for feature view {view!r}; the model needs it"
                f" (features.stored_missing: refuse)",
                view,
                keys[i],
                bad,
            )
        flagged[i] = True
        for values in out.values():
            values[i] = None
    return out, flagged


def _as_number(value: object) -> float | None:
    """A stored value as the model takes it: a number, or None for missing (a bool is 0/1, a timestamp its epoch)."""
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"stored value {value!r} is not a number: only numeric stored features are served") from None
    return None if number != number else number  # NaN -> missing


class StoredFeatures:
    """The model's stored features through one ``FeatureStore`` (opened once per service process)."""

    def __init__(self, spec: ModelSpec, defs: Definitions, store: Any) -> None:
        self.spec, self.defs, self.store = spec, defs, store
        self.refs: dict[str, list[str]] = {}  # view -> its refs the model uses, in spec order
        for ref in spec.features.stored:
            self.refs.setdefault(ref.split(":", 1)[0], []).append(ref)
        self.join_keys = {view: defs.join_keys(view) for view in self.refs}
        self.key_types = {
            view: {defs.entities[e].join_key: defs.entities[e].value_type for e in defs.views[view].entities}
            for view in self.refs
        }
        self.rules = {view: spec.features.stored_missing.get(view, "refuse") for view in self.refs}

    @classmethod
    def open(cls, spec: ModelSpec, settings: Settings, repo: Path | None = None) -> StoredFeatures | None:
        """The model's stored features, or None when it has none (nothing is opened then)."""
        if not spec.features.stored:
            return None
        from loopline.features.definitions import check_model_uses, load_definitions
        from loopline.features.store import FeatureStore, StoreConfig  # Feast is imported here, never at parse time

        defs = load_definitions(repo or settings.feature_repo)
        problems = check_model_uses(defs, spec)
        if problems:
            raise StoredFeaturesUnavailable("; ".join(problems))
        return cls(spec, defs, FeatureStore.open(defs, StoreConfig.from_settings(settings)))

    @property
    def key_columns(self) -> list[str]:
        """The request columns the lookups read (every join key of every view the model uses)."""
        return list(dict.fromkeys(k for keys in self.join_keys.values() for k in keys))

    def _key(self, view: str, column: str, value: object) -> object:
        if self.key_types[view].get(column) == "int64" and not isinstance(value, int):
            try:
                return int(str(value))
            except ValueError:
                raise StoredFeatureRefused(
                    f"{column}={value!r} is not an integer, the key type of feature view {view!r}", view,
                    {column: value}, "bad_key",
                ) from None  # fmt: skip
        return value

    def lookup(self, keys: dict[str, list]) -> Looked:
        """Read every view for the rows whose key columns are ``keys`` (column -> one value per row).

        Raises ``StoredFeatureRefused`` (the caller answers 422) for a row without a key value or
        without a (fresh) stored value in a view whose rule is ``refuse``.
        """
        n = len(next(iter(keys.values()), []))
        columns: dict[str, list] = {}
        missing: list[list[str]] = [[] for _ in range(n)]
        for view, refs in self.refs.items():
            view_keys = []
            for i in range(n):
                row = {}
                for column in self.join_keys[view]:
                    value = keys.get(column, [None] * n)[i]
                    if value is None or value == "":
                        raise StoredFeatureRefused(
                            f"row {i}: {column} is needed to look up feature view {view!r}", view, {column: None},
                            "no_key",
                        )  # fmt: skip
                    row[column] = self._key(view, column, value)
                view_keys.append(row)
            read = self.store.online(refs, view_keys)
            values, flagged = apply_rule(view, self.rules[view], view_keys, read.columns, read.status)
            for column, vals in values.items():
                columns[column] = [_as_number(v) for v in vals]
            for i, f in enumerate(flagged):
                if f:
                    missing[i].append(view)
        return Looked({c: columns[c] for c in self.spec.features.stored_columns}, missing)

    def freshness(self, now: datetime) -> list[Freshness]:
        """Each view's freshness at ``now`` (``loopline.features.freshness``): the service's age gauges."""
        from loopline.features.freshness import view_freshness

        return view_freshness(self.store, self.defs, list(self.refs), now)

    def warm_up(self) -> None:
        """One lookup per view, so the first request does not pay the store's start-up (connections, registry)."""
        for view, refs in self.refs.items():
            key = {k: (0 if self.key_types[view][k] == "int64" else "loopline-warm-up") for k in self.join_keys[view]}
            self.store.online(refs, [key])


def offline_features(raw: Any, spec: ModelSpec, store: Any, defs: Definitions) -> tuple[Any, list[list[str]]]:
    """Batch scoring's stored features: the offline store's point-in-time values, under the same rule as online.

    ``raw`` needs the spec's ``dataset.timestamp`` and every join key; each row gets what the store held
    just before its time, as training joined them (``loopline.training.stored``: as of ``timestamp - 1 ms``);
    returns (``raw`` with the ``<view>__<feature>`` columns, per row the views scored as missing). A row
    with no value in any of a view's features had no value as of its time (an unknown key, or older than the
    ttl: the point-in-time join leaves both empty). Rule ``refuse`` raises ``StoredFeatureRefused`` naming
    how many rows and the first one's key; ``missing`` leaves them NaN and flags them.
    """
    import pandas as pd

    from loopline.training.stored import AS_OF_COLUMN, AS_OF_LAG_MS

    event_time = spec.dataset.timestamp
    joined = raw.copy()
    # Training's rule exactly (loopline.training.stored): what the store held just before the row's event.
    try:
        times = pd.to_datetime(raw[event_time])
    except (ValueError, TypeError) as err:
        raise StoredFeatureRefused(f"column {event_time!r} is not a time: {err}", "", {}, "bad_time") from None
    as_of = raw.assign(**{AS_OF_COLUMN: times - pd.Timedelta(milliseconds=AS_OF_LAG_MS)})
    missing: list[list[str]] = [[] for _ in range(len(joined))]
    for view in spec.features.stored_views:
        columns = [c for c in spec.features.stored_columns if view_of(c) == view]
        # One view at a time: a row without a value in one view is missing in that view only, whatever the
        # join does across views (Feast's own file store drops the row from every view; ours no longer does).
        refs = [r for r in spec.features.stored if r.split(":", 1)[0] == view]
        found = store.training_set(as_of, refs, event_time=AS_OF_COLUMN).frame
        for column in columns:
            joined[column] = found[column].to_numpy()
        empty = joined[columns].isna().all(axis=1).to_numpy()
        if not empty.any():
            continue
        if spec.features.stored_missing.get(view, "refuse") != "missing":
            first = int(empty.argmax())
            key = {k: joined[k].iloc[first] for k in defs.join_keys(view)}
            key[event_time] = joined[event_time].iloc[first]
            raise StoredFeatureRefused(
                f"{int(empty.sum())} row(s) have no value in feature view {view!r} as of their {event_time}"
                f" (first: row {first}, {_describe(key)}); features.stored_missing: refuse",
                view,
                key,
                "not_found",
            )
        for i in empty.nonzero()[0]:
            missing[i].append(view)
    return joined, missing


def open_store(settings: Settings, repo: Path | None = None) -> tuple[Any, Definitions]:
    """(the project's ``FeatureStore``, its definitions): for batch scoring and the skew check."""
    from loopline.features.definitions import load_definitions
    from loopline.features.store import FeatureStore, StoreConfig

    defs = load_definitions(repo or settings.feature_repo)
    return FeatureStore.open(defs, StoreConfig.from_settings(settings)), defs
