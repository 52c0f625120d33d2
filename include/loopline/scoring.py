"""Scores, decisions and reason codes: one implementation for the online service and batch scoring.

Reason codes are the features that pushed this applicant's score up the most,
from LightGBM's per-row SHAP-style contributions (``pred_contrib``).
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd

from loopline.features import build_features
from loopline.spec import ModelSpec

TOP_REASONS = 3


def score_frame(booster: lgb.Booster, raw: pd.DataFrame, spec: ModelSpec, top: int = TOP_REASONS) -> pd.DataFrame:
    """score, decision and reasons (a list of feature names) for each row of raw applications."""
    features = build_features(raw, spec)
    iteration = booster.best_iteration or None
    scores = booster.predict(features, num_iteration=iteration)
    contributions = booster.predict(features, num_iteration=iteration, pred_contrib=True)[:, :-1]  # last: bias
    names = np.array(features.columns)
    top_idx = np.argsort(-contributions, axis=1)[:, :top]
    return pd.DataFrame(
        {
            "score": scores.astype("float64"),
            "decision": np.where(scores >= spec.training.decision_threshold, "decline", "approve"),
            "reasons": [list(names[row]) for row in top_idx],
        },
        index=raw.index,
    )
