"""Time-based splits, LightGBM training and evaluation. No MLflow, no Airflow: pure and testable.

Splits follow time, never random rows: the model is validated (early stopping)
on the weeks right after its training data and judged on a later holdout
window it never saw, which is how it will meet production data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from loopline.core.errors import LooplineError
from loopline.core.features import build_features, categorical_columns
from loopline.core.spec import ModelSpec
from loopline.core.tasks import LabelError, task_of


class TrainingError(LooplineError, ValueError):
    """The data cannot produce a trustworthy model (too few weeks, rows or classes; unusable labels)."""


@dataclass
class Split:
    train: pd.DataFrame
    valid: pd.DataFrame
    holdout: pd.DataFrame

    def describe(self, timestamp: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for part in ("train", "valid", "holdout"):
            frame = getattr(self, part)
            out[f"{part}_rows"] = len(frame)
            out[f"{part}_start"] = str(frame[timestamp].min())
            out[f"{part}_end"] = str(frame[timestamp].max())
        return out


@dataclass
class TrainedModel:
    booster: lgb.Booster
    params: dict[str, Any]
    best_iteration: int


def labelled(df: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """Rows whose outcome is known; unlabelled rows (label delay) cannot train or evaluate."""
    return df[df[spec.dataset.target].notna()].reset_index(drop=True)


def time_split(df: pd.DataFrame, spec: ModelSpec) -> Split:
    """Split by ISO week of the application timestamp: train | valid | holdout, in time order."""
    ts = pd.to_datetime(df[spec.dataset.timestamp])
    if ts.isna().any():
        raise TrainingError(f"{int(ts.isna().sum())} rows have no {spec.dataset.timestamp}; cannot place them in time")
    week = ts.dt.to_period("W-SUN").dt.start_time
    weeks = sorted(week.unique())
    t = spec.training
    needed = t.valid_weeks + t.holdout_weeks + 1
    if len(weeks) < needed:
        raise TrainingError(f"need at least {needed} weeks of labelled data for a time split, have {len(weeks)}")
    holdout_start = weeks[-t.holdout_weeks]
    valid_start = weeks[-(t.holdout_weeks + t.valid_weeks)]
    split = Split(
        train=df[week < valid_start].reset_index(drop=True),
        valid=df[(week >= valid_start) & (week < holdout_start)].reset_index(drop=True),
        holdout=df[week >= holdout_start].reset_index(drop=True),
    )
    if len(split.train) < t.min_train_rows:
        raise TrainingError(f"only {len(split.train)} training rows; the spec asks for at least {t.min_train_rows}")
    task = task_of(spec)
    for part in ("train", "valid", "holdout"):
        if not task.enough_variety(target(getattr(split, part), spec)):
            what = "a single target value" if task.name == "regression" else "a single class"
            raise TrainingError(f"the {part} window has {what}; cannot train or evaluate")
    return split


def target(frame: pd.DataFrame, spec: ModelSpec) -> np.ndarray:
    """The target as the model's task learns it (0/1; numbers; class indices in dataset.classes order)."""
    try:
        return task_of(spec).labels(frame[spec.dataset.target], spec)
    except LabelError as err:
        raise TrainingError(str(err)) from err


def _dataset(frame: pd.DataFrame, spec: ModelSpec, reference: lgb.Dataset | None = None) -> lgb.Dataset:
    return lgb.Dataset(
        build_features(frame, spec),
        label=target(frame, spec),
        categorical_feature=categorical_columns(spec),
        reference=reference,
        free_raw_data=False,
    )


def train(split: Split, spec: ModelSpec, params: dict[str, Any]) -> TrainedModel:
    """Train with early stopping on the validation window; deterministic for the given params (incl. seed)."""
    params = dict(params)
    rounds = int(params.pop("num_boost_round"))
    params.update(task_of(spec).lgb_params(spec))
    params.update(deterministic=True, force_row_wise=True, num_threads=1, verbosity=-1)
    train_set = _dataset(split.train, spec)
    valid_set = _dataset(split.valid, spec, reference=train_set)
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=rounds,
        valid_sets=[valid_set],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(spec.training.early_stopping_rounds, verbose=False)],
    )
    params["num_boost_round"] = rounds
    return TrainedModel(booster=booster, params=params, best_iteration=booster.best_iteration or rounds)


def predict_scores(booster: lgb.Booster, raw: pd.DataFrame, spec: ModelSpec) -> np.ndarray:
    """The booster's raw answer: probabilities (binary: of the positive class; multiclass: per class) or values."""
    return booster.predict(build_features(raw, spec), num_iteration=booster.best_iteration or None)


def evaluate(booster: lgb.Booster, frame: pd.DataFrame, spec: ModelSpec) -> dict[str, float]:
    return evaluate_scores(frame, predict_scores(booster, frame, spec), spec)


def evaluate_scores(frame: pd.DataFrame, scores: np.ndarray, spec: ModelSpec) -> dict[str, float]:
    """The task's holdout metrics of answers already computed for the labelled rows of ``frame``."""
    return task_of(spec).holdout_metrics(target(frame, spec), scores, spec)


def feature_importance(booster: lgb.Booster) -> dict[str, float]:
    """Gain importance, normalised to sum to 1 (comparable across models)."""
    gains = booster.feature_importance(importance_type="gain")
    total = float(gains.sum()) or 1.0
    return {name: float(g) / total for name, g in zip(booster.feature_name(), gains, strict=True)}


def fit_and_evaluate(
    frame: pd.DataFrame, spec: ModelSpec, params: dict[str, Any]
) -> tuple[TrainedModel, dict[str, float]]:
    """The whole recipe on one dataset: labelled rows → time split → train → holdout metrics."""
    split = time_split(labelled(frame, spec), spec)
    model = train(split, spec, params)
    return model, evaluate(model.booster, split.holdout, spec)


def answers(booster: lgb.Booster, frame: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """The model's answers on labelled rows as the drift check sees them: score, decision and the label as outcome."""
    out = task_of(spec).outputs(predict_scores(booster, frame, spec), spec)
    decision = out.decision if out.decision is not None else np.full(len(frame), None, dtype=object)
    return pd.DataFrame({"score": out.score, "decision": decision, "outcome": target(frame, spec).astype(float)})


def calibration_of(booster: lgb.Booster, split: Split, spec: ModelSpec):
    """The classifier's calibration (``loopline.training.calibration``): ECE on the holdout, isotonic on validation
    above ``training.max_calibration_error``; None for a regressor."""
    from loopline.training.calibration import measure

    if spec.task == "regression":
        return None
    valid, holdout = answers(booster, split.valid, spec), answers(booster, split.holdout, spec)
    return measure(spec, valid, holdout, spec.training.max_calibration_error)
