"""Scores, decisions and reason codes: one implementation for the online service and batch scoring.

Reason codes are the features that pushed this row's answer the most, from LightGBM's per-row
SHAP-style contributions (``pred_contrib``): towards the positive decision (binary), towards
the predicted class (multiclass), or in either direction (regression).
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd

from loopline.core.features import build_features
from loopline.core.spec import ModelSpec
from loopline.core.tasks import task_of

TOP_REASONS = 3
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
    names = np.array(features.columns)
    top_idx = np.argsort(-explained, axis=1, kind="stable")[:, :top]
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
