"""A model's rows joined with the stored features it names, through the feature store (issue 23).

A spec with ``features.stored: [view:feature, ...]`` trains on its dataset's rows plus one column
``<view>__<feature>`` per reference, each the value the store held for the row's join keys (its
``dataset.keys``) **just before** the row's own event: ``FeatureStore.training_set`` joined as of
``<dataset.timestamp> - 1 ms``. Why not as of the event itself: a view computed from the same
transactions the model learns from (``card_activity`` from the card_fraud batches) holds a value *at*
each transaction that already counts it (its ``count_1h`` includes itself, its ``spend_1h`` its own
amount). The service, asked about a transaction, reads what the online store held before it arrived;
training as of the event itself would teach the model a value it never gets when serving.

What is recorded (``lineage``): the store's own lineage of the set (each view's definition hash and
offline version, the references, the event time column, the rows), the as-of rule, the share of rows
each stored feature is missing for, and ``set_sha``: a hash of the joined columns row by row. The
offline versions go into the training fingerprint (``stored_versions``: other feature data, another
model); ``set_sha`` is what ``loopline reproduce`` rebuilds and compares, because a view's offline
version moves on with every feature pipeline run while the values as of the old rows stay the same.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any

from loopline.core.errors import LooplineError
from loopline.core.settings import Settings
from loopline.core.spec import ModelSpec

if TYPE_CHECKING:
    import pandas as pd

    from loopline.features.store import FeatureStore

log = logging.getLogger(__name__)

AS_OF_COLUMN = "loopline_as_of"  # the point in time handed to the store; dropped from the joined frame
AS_OF_LAG_MS = 1  # the join reads what the store held this long before the row's own event
LINEAGE_ARTIFACT = "features/training_set.json"
SET_SHA_TAG = "loopline.training_set_sha"
STORED_TAG = "loopline.stored_features"
_EMPTY_SHA = hashlib.sha256().hexdigest()  # offline_version of a view without a single part file

_STORES: dict[tuple, Any] = {}


class StoredFeaturesError(LooplineError, ValueError):
    """The stored features a model names cannot be joined: refused definitions, or no offline rows yet."""


def open_store(settings: Settings) -> FeatureStore:
    """The process's one feature store for these settings (definitions loaded from ``settings.feature_repo``)."""
    from loopline.features.definitions import load_definitions
    from loopline.features.store import FeatureStore, StoreConfig

    config = StoreConfig.from_settings(settings)
    key = (str(settings.feature_repo), config)
    store = _STORES.get(key)
    if store is None:
        store = _STORES[key] = FeatureStore.open(load_definitions(settings.feature_repo), config)
    return store


def _views(spec: ModelSpec) -> list[str]:
    return list(dict.fromkeys(ref.split(":", 1)[0] for ref in spec.features.stored))


def _checked_store(spec: ModelSpec, settings: Settings) -> FeatureStore:
    from loopline.features.definitions import check_model_uses

    store = open_store(settings)
    problems = check_model_uses(store.defs, spec)
    if problems:
        raise StoredFeaturesError("; ".join(problems))
    empty = [view for view in _views(spec) if store.offline_version(view) == _EMPTY_SHA]
    if empty:
        raise StoredFeaturesError(
            f"{spec.name}: the feature view(s) {empty} have no offline rows in {settings.feast_root}; run their"
            " feature pipeline first (a model trained on no history would learn nothing from its stored features)"
        )
    return store


def stored_versions(spec: ModelSpec, settings: Settings) -> dict[str, dict[str, str]]:
    """Per view the model reads, its definition hash and offline version; {} for a model without stored features."""
    if not spec.features.stored:
        return {}
    store = _checked_store(spec, settings)
    return {
        view: {"definition_sha": store.definition_sha(view), "offline_version": store.offline_version(view)}
        for view in _views(spec)
    }


def set_sha(frame: pd.DataFrame, spec: ModelSpec) -> str:
    """A hash of the joined set, row by row: the entity id, its time and every stored column's value."""
    import pandas as pd

    columns = [spec.dataset.entity_id, spec.dataset.timestamp, *spec.features.stored_columns]
    rows = pd.util.hash_pandas_object(frame[columns], index=False).to_numpy()
    return hashlib.sha256(rows.tobytes()).hexdigest()


def with_stored_features(frame: pd.DataFrame, spec: ModelSpec, settings: Settings) -> tuple[pd.DataFrame, dict | None]:
    """``frame`` (rows in their order) plus a ``<view>__<feature>`` column per stored feature, and its lineage.

    A spec without stored features gets its frame back untouched and None: nothing opens the store.
    """
    import pandas as pd

    if not spec.features.stored:
        return frame, None
    store = _checked_store(spec, settings)
    times = pd.to_datetime(frame[spec.dataset.timestamp])
    rows = frame.assign(**{AS_OF_COLUMN: times - pd.Timedelta(milliseconds=AS_OF_LAG_MS)})
    joined = store.training_set(rows, list(spec.features.stored), event_time=AS_OF_COLUMN)
    out = joined.frame.drop(columns=[AS_OF_COLUMN])
    missing = {c: round(float(out[c].isna().mean()), 6) if len(out) else 0.0 for c in spec.features.stored_columns}
    lineage = {
        **joined.lineage,
        "as_of": f"{spec.dataset.timestamp} - {AS_OF_LAG_MS} ms",
        "missing_share": missing,
        "set_sha": set_sha(out, spec),
    }
    log.info("%s: %d rows joined with %d stored features (missing: %s)", spec.name, len(out), len(missing), missing)
    return out, lineage


def check_same_set(recorded: dict | None, rebuilt: dict | None, model_name: str) -> None:
    """Refuse a reproduction whose rebuilt training set is not the recorded one, naming the views that moved."""
    if not recorded:
        return
    if rebuilt is None or rebuilt.get("set_sha") != recorded.get("set_sha"):
        moved = [
            f"{view} (offline {info.get('offline_version', '?')[:12]} then,"
            f" {(rebuilt or {}).get('views', {}).get(view, {}).get('offline_version', '?')[:12]} now)"
            for view, info in recorded.get("views", {}).items()
            if (rebuilt or {}).get("views", {}).get(view) != info
        ]
        raise StoredFeaturesError(
            f"{model_name}: the training set rebuilt from the feature store is not the recorded one (set_sha"
            f" {str(recorded.get('set_sha'))[:12]} then, {str((rebuilt or {}).get('set_sha'))[:12]} now);"
            f" views changed since: {moved or 'none (the same offline data joined otherwise)'}"
        )
