"""Scores, decisions and reason codes: one implementation for the online service and batch scoring.

Reason codes are the request fields that pushed this row's answer the most, from LightGBM's
per-row SHAP-style contributions (``pred_contrib``): towards the positive decision (binary),
towards the predicted class (multiclass), or in either direction (regression). A derived
input's contribution is shared among the raw fields it is built from.
"""

from __future__ import annotations

from functools import lru_cache

import lightgbm as lgb
import numpy as np
import pandas as pd

from loopline.core.features import build_features, derived_sources
from loopline.core.spec import ModelSpec
from loopline.core.tasks import task_of

TOP_REASONS = 3


@lru_cache(maxsize=64)
def _reason_matrix(
    columns: tuple[str, ...], sources: tuple[tuple[str, tuple[str, ...]], ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs -> the raw inputs a person can act on: a derived input's share goes to its sources.

    A derived input (``@derived(sources=...)`` in the model's features.py) passes its
    contribution to its declared raw sources in equal parts, the same rule drift uses for
    importance, so a reason code always names a field of the request.
    """
    declared = dict(sources)
    raw = [c for c in columns if c not in declared]
    for srcs in declared.values():
        raw += [s for s in srcs if s not in raw]
    index = {name: i for i, name in enumerate(raw)}
    matrix = np.zeros((len(columns), len(raw)))
    for row, column in enumerate(columns):
        targets = declared.get(column, (column,))
        for target in targets:
            matrix[row, index[target]] += 1 / len(targets)
    return matrix, np.array(raw)


PARALLEL_ROWS = 100  # from this many rows in one call, LightGBM's threads pay for their start-up


def score_frame(
    booster: lgb.Booster, raw: pd.DataFrame, spec: ModelSpec, top: int = TOP_REASONS, num_threads: int | None = None
) -> pd.DataFrame:
    """score, decision, reasons (feature names) and, for multiclass, probabilities, per row of raw inputs.

    What score and decision mean depends on the model's task (``loopline.core.tasks``).

    By default the row count picks the threads: one below ``PARALLEL_ROWS`` (an online
    request, where OpenMP's thread start-up and spin-waiting cost more than they save:
    measured 3x slower on a busy 2-core host), all cores from there on (requests merged
    by adaptive batching, files). ``num_threads`` overrides it (0: all cores).
    """
    if num_threads is None:
        num_threads = 0 if len(raw) >= PARALLEL_ROWS else 1
    task = task_of(spec)
    features = build_features(raw, spec)
    iteration = booster.best_iteration or None
    predicted = booster.predict(features, num_iteration=iteration, num_threads=num_threads)
    contributions = booster.predict(features, num_iteration=iteration, pred_contrib=True, num_threads=num_threads)
    explained = task.explained(contributions, predicted, spec)
    to_raw, names = _reason_matrix(tuple(features.columns), tuple(sorted(derived_sources(spec).items())))
    top_idx = np.argsort(-(explained @ to_raw), axis=1, kind="stable")[:, :top]
    out = task.outputs(predicted, spec)
    columns: dict[str, object] = {
        "score": out.score,
        "decision": out.decision if out.decision is not None else np.full(len(raw), None, dtype=object),
        "reasons": [list(names[row]) for row in top_idx],
    }
    if out.probabilities is not None:
        columns["probabilities"] = [
            dict(zip(spec.dataset.classes, map(float, p), strict=True)) for p in out.probabilities
        ]
    return pd.DataFrame(columns, index=raw.index)
