"""Scores, decisions and reason codes: one implementation for the online service and batch scoring.

Reason codes are the features that pushed this applicant's score up the most,
from LightGBM's per-row SHAP-style contributions (``pred_contrib``).
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd

from loopline.core.features import build_features
from loopline.core.spec import ModelSpec

TOP_REASONS = 3
PARALLEL_ROWS = 100  # from this many rows in one call, LightGBM's threads pay for their start-up


def score_frame(
    booster: lgb.Booster, raw: pd.DataFrame, spec: ModelSpec, top: int = TOP_REASONS, num_threads: int | None = None
) -> pd.DataFrame:
    """score, decision and reasons (a list of feature names) for each row of raw applications.

    By default the row count picks the threads: one below ``PARALLEL_ROWS`` (an online
    request, where OpenMP's thread start-up and spin-waiting cost more than they save:
    measured 3x slower on a busy 2-core host), all cores from there on (requests merged
    by adaptive batching, files). ``num_threads`` overrides it (0: all cores).
    """
    if num_threads is None:
        num_threads = 0 if len(raw) >= PARALLEL_ROWS else 1
    features = build_features(raw, spec)
    iteration = booster.best_iteration or None
    scores = booster.predict(features, num_iteration=iteration, num_threads=num_threads)
    contributions = booster.predict(features, num_iteration=iteration, pred_contrib=True, num_threads=num_threads)
    contributions = contributions[:, :-1]  # the last column is the bias
    names = np.array(features.columns)
    top_idx = np.argsort(-contributions, axis=1)[:, :top]
    return pd.DataFrame(
        {
            "score": scores.astype("float64"),
            "decision": np.where(
                scores >= spec.training.decision_threshold,
                spec.training.decisions.at_or_above,
                spec.training.decisions.below,
            ),
            "reasons": [list(names[row]) for row in top_idx],
        },
        index=raw.index,
    )
