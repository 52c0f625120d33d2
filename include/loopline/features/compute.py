"""A feature view's rows, computed from its source's events: what the feature pipeline hands to the store.

One output row per source event: the view's join key(s), its ``source.event_time`` and every
declared feature, as of that event's time. Two ways, as the view declares:

- **window aggregates**, per entity key, over the events in ``(t - window, t]``: an event exactly
  one window before ``t`` is out, one at ``t`` is in, and so is every other event at the very same
  instant (ties see each other: all rows at ``t`` of a key get the same values, whatever the
  order they arrived in). ``sum``/``mean``/``min``/``max`` skip null values of ``of`` (a window
  without one gives null); ``count`` counts events, null ``of`` or not. ``last`` is the latest
  non-null value of ``of`` at or before ``t`` (no window; the view's ttl bounds its age when it
  is served); among events at the same instant the latest is the one with the latest
  ``source.created_time`` if the view has one, else the one further down the source.
- **a pure function** in the feature repo (``compute: file.py:function``), imported by path
  like a model's ``features.py`` (``loopline.core.features.import_by_path``): it gets a copy of
  the events and returns rows; the keys, the event time and every declared feature must be there,
  each feature of its declared dtype, or the view is refused naming the column.

Rows whose key or event time is null cannot be placed on any entity's timeline. They are
**set aside and counted, not silently dropped**: the output leaves them out and says how many
in ``frame.attrs["set_aside"]`` (``{"null_key": n, "null_event_time": m}``), which the pipeline
puts in its report and log. A missing source column is an error naming the view and column.

Vectorised: one stable sort by (key, time), each window's bounds found by one merge of the
window starts into the sorted times (``np.lexsort``), then pandas' rolling kernels over those
explicit bounds (``BaseIndexer``): no Python loop over keys, about a second per million events.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pandas.api.indexers import BaseIndexer

from loopline.features.definitions import DefinitionError

if TYPE_CHECKING:
    from loopline.features.definitions import Definitions, FeatureViewDef

log = logging.getLogger(__name__)

SET_ASIDE = "set_aside"  # frame.attrs key: rows left out, by reason


class _Bounds(BaseIndexer):
    """Explicit window bounds [start, end) per row, for pandas' rolling kernels."""

    def __init__(self, start: np.ndarray, end: np.ndarray) -> None:
        super().__init__()
        self.start, self.end = start, end

    def get_window_bounds(self, num_values=0, min_periods=None, center=None, closed=None, step=None):
        return self.start, self.end


def event_times(values: pd.Series, view: str, column: str) -> pd.Series:
    """The event time as UTC instants (text is read as ISO 8601, no offset meaning UTC); errors name the column."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values.dt.tz_localize("UTC")
    try:
        return pd.to_datetime(values, utc=True, format="ISO8601")
    except (ValueError, TypeError) as err:
        raise DefinitionError(f"feature view {view}: source column {column!r} is not a time: {err}") from None


def _ns(times: pd.Series) -> np.ndarray:
    """UTC instants as int64 nanoseconds (NaT: the smallest int64)."""
    return pd.DatetimeIndex(times).as_unit("ns").asi8


def _dtype_ok(values: pd.Series, dtype: str) -> bool:
    kind = values.dtype
    if dtype == "int64":
        return pd.api.types.is_integer_dtype(kind)
    if dtype == "float64":
        return pd.api.types.is_float_dtype(kind)
    if dtype == "bool":
        return pd.api.types.is_bool_dtype(kind)
    if dtype == "unix_timestamp":
        return pd.api.types.is_datetime64_any_dtype(kind)
    if pd.api.types.is_string_dtype(kind):
        return values.dropna().map(lambda v: isinstance(v, str)).all()
    return False


def _as_dtype(values: pd.Series, dtype: str) -> pd.Series:
    """A ``last`` column in its declared dtype; null where no earlier value exists (nullable Int64/boolean)."""
    if dtype == "float64":
        return values.astype("float64")
    if dtype == "int64":
        return values.astype("Int64") if values.isna().any() else values.astype("int64")
    if dtype == "bool":
        return values.astype("boolean") if values.isna().any() else values.astype(bool)
    if dtype == "unix_timestamp":
        return pd.to_datetime(values, utc=True)
    return values.astype(object).where(values.notna(), None)


def _set_aside(view: FeatureViewDef, events: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, dict[str, int]]:
    """The events that can be placed on a timeline, and how many were left out and why."""
    time_col = view.source.event_time
    null_key = events[keys].isna().any(axis=1)
    null_time = events[time_col].isna() & ~null_key
    counts = {"null_key": int(null_key.sum()), "null_event_time": int(null_time.sum())}
    if counts["null_key"] or counts["null_event_time"]:
        log.warning(
            "feature view %s: %d event(s) with a null key %s and %d with a null %s set aside (not computed)",
            view.name, counts["null_key"], keys, counts["null_event_time"], time_col,
        )  # fmt: skip
        events = events[~(null_key | null_time)]
    return events, counts


def _aggregate(view: FeatureViewDef, events: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    time_col, n = view.source.event_time, len(events)
    times = event_times(events[time_col], view.name, time_col)
    t = _ns(times)
    group = events.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
    position = np.arange(n)
    tie_break = [position]
    if view.source.created_time is not None:
        created = event_times(events[view.source.created_time], view.name, view.source.created_time)
        tie_break.append(_ns(created))  # NaT is the smallest int64: sorts as the earliest
    order = np.lexsort((*tie_break, t, group))  # by key, then time, then the tie-break
    g, ts = group[order], t[order]

    # end: one past the last event of the same key at the same instant (ties see each other).
    change = np.ones(n, dtype=bool)
    change[1:] = (g[1:] != g[:-1]) | (ts[1:] != ts[:-1])
    tie_first = np.flatnonzero(change)
    tie_end = np.append(tie_first[1:], n)
    end = tie_end[np.cumsum(change) - 1].astype(np.int64)

    out = pd.DataFrame(index=events.index[order])
    for key in keys:
        out[key] = events[key].to_numpy()[order]
    out[time_col] = times.array[order]
    starts: dict[int, np.ndarray] = {}
    for feature in view.features:
        if feature.agg == "last":
            values = pd.Series(events[feature.of].to_numpy()[order])
            latest = values.groupby(g).ffill()  # the latest non-null value at or before each row, per key
            out[feature.name] = _as_dtype(pd.Series(latest.to_numpy()[end - 1]), feature.dtype or "string").to_numpy()
            continue
        width = int(feature.window_delta.total_seconds() * 1e9)
        if width not in starts:
            # start: the first event of the key later than t - window. Merge each row's t - window
            # into the sorted (key, time) order; at equal (key, time) the event sorts first, so
            # an event exactly at t - window counts as before the window: (t - window, t].
            all_g = np.concatenate([g, g])
            all_t = np.concatenate([ts, ts - width])
            is_query = np.concatenate([np.zeros(n, dtype=np.int8), np.ones(n, dtype=np.int8)])
            merged = np.lexsort((is_query, all_t, all_g))
            rank = np.empty(2 * n, dtype=np.int64)
            rank[merged] = np.arange(2 * n)
            starts[width] = (rank[n:] - np.arange(n)).astype(np.int64)  # events at or before t - window
        start = starts[width]
        if feature.agg == "count":
            out[feature.name] = (end - start).astype("int64")
            continue
        values = pd.to_numeric(pd.Series(events[feature.of].to_numpy()[order]), errors="coerce").astype("float64")
        rolling = values.rolling(_Bounds(start, end), min_periods=1)
        out[feature.name] = getattr(rolling, feature.agg)().to_numpy()
    back = np.empty(n, dtype=np.int64)
    back[order] = np.arange(n)
    return out.iloc[back]  # the events' own order (and index)


def _compute_file(view: FeatureViewDef, defs: Definitions) -> str:
    file, _ = (view.compute or "").split(":")
    origin = defs.origin.get(f"view:{view.name}")
    base = defs.repo / os.path.relpath(origin, defs.repo.name) if origin else defs.repo / file
    return os.fspath(base.parent / file)


def _by_function(view: FeatureViewDef, events: pd.DataFrame, keys: list[str], defs: Definitions) -> pd.DataFrame:
    from loopline.core.features import import_by_path

    path = _compute_file(view, defs)
    function = (view.compute or "").split(":")[1]
    module = import_by_path(path, prefix="loopline_feature_view")
    fn = getattr(module, function, None)
    if not callable(fn):
        raise DefinitionError(f"feature view {view.name}: {view.compute}: {path} defines no function {function}")
    try:
        result = fn(events.copy())
    except Exception as err:
        raise DefinitionError(f"feature view {view.name}: {view.compute} raised {type(err).__name__}: {err}") from err
    if not isinstance(result, pd.DataFrame):
        raise DefinitionError(f"feature view {view.name}: {view.compute} returned {type(result).__name__}, not rows")
    time_col = view.source.event_time
    missing = [c for c in [*keys, time_col, *view.feature_names] if c not in result.columns]
    if missing:
        raise DefinitionError(f"feature view {view.name}: {view.compute} returned no column(s) {missing}")
    for feature in view.features:
        if not _dtype_ok(result[feature.name], feature.dtype or ""):
            raise DefinitionError(
                f"feature view {view.name}: {view.compute}: column {feature.name!r} is {result[feature.name].dtype},"
                f" declared {feature.dtype}"
            )
    result, counts = _set_aside(view, result, keys)
    out = result[[*keys, time_col, *view.feature_names]].copy()
    out[time_col] = event_times(out[time_col], view.name, time_col)
    out.attrs[SET_ASIDE] = counts
    return out


def compute_view(view: FeatureViewDef, events: pd.DataFrame, defs: Definitions) -> pd.DataFrame:
    """The view's rows from its source's events: keys, event time (UTC) and every feature.

    Declared aggregates give one row per event with a key and a time, in the events' order
    (their index kept, so a row can be traced to its event); a ``compute`` function's rows are
    its own. Rows with a null key or time are set aside and counted in ``attrs["set_aside"]``.
    """
    keys = defs.join_keys(view.name)
    time_col = view.source.event_time
    needed = [*keys, time_col]
    if view.compute is None:
        needed += [f.of for f in view.features if f.of is not None]
        if view.source.created_time is not None:
            needed.append(view.source.created_time)
    missing = [c for c in dict.fromkeys(needed) if c not in events.columns]
    if missing:
        raise DefinitionError(
            f"feature view {view.name}: source has no column(s) {missing}; it has {sorted(map(str, events.columns))}"
        )
    if view.compute is not None:
        return _by_function(view, events, keys, defs)
    placed, counts = _set_aside(view, events, keys)
    if placed.empty:
        out = pd.DataFrame({c: pd.Series(dtype=object) for c in keys})
        out[time_col] = pd.Series(dtype="datetime64[ns, UTC]")
        for f in view.features:
            out[f.name] = pd.Series(dtype="int64" if f.agg == "count" else "float64" if f.agg != "last" else object)
    else:
        out = _aggregate(view, placed, keys)
    out.attrs[SET_ASIDE] = counts
    return out
