"""Scores, decisions and reason codes: one implementation for the online service and batch scoring.

Reason codes are the request fields that pushed this row's answer the most, from LightGBM's
per-row SHAP-style contributions (``pred_contrib``): towards the positive decision (binary),
towards the predicted class (multiclass), or in either direction (regression). A derived
input's contribution is shared among the raw fields it is built from.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import lightgbm as lgb
import numpy as np
import pandas as pd

from loopline.core.features import Columns, FeatureSet, feature_set
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

# Objectives whose prediction is a known function of the raw score (the row sum of ``pred_contrib``).
_IDENTITY = frozenset({"regression", "regression_l1", "huber", "fair", "quantile", "mape"})


@lru_cache(maxsize=32)
def _output_of_raw(booster: lgb.Booster) -> tuple[str, float] | None:
    """How this booster turns its raw score into ``predict``'s output, or None where it is not known here.

    ``pred_contrib`` sums, per row (and class), to the raw score: TreeSHAP's contributions plus the bias
    add up to the model's output. So one ``pred_contrib`` call gives the prediction too, and the online
    path makes one booster call instead of two. Only gbdt with these objectives; anything else (rf's
    averaging, poisson's exp, custom objectives) keeps the second ``predict`` call.
    """
    params = booster.params or {}
    objective = str(params.get("objective") or "").partition(" ")[0]  # "binary sigmoid:1" in a model file
    if str(params.get("boosting", "gbdt")) != "gbdt":
        return None
    if objective == "binary":
        return "sigmoid", float(params.get("sigmoid", 1.0))
    if objective == "multiclass":
        return "softmax", 1.0
    if objective in _IDENTITY:
        return "identity", 1.0
    return None


def _predicted(
    booster: lgb.Booster, matrix: np.ndarray, contributions: np.ndarray, iteration: int | None, num_threads: int
) -> np.ndarray:
    """``booster.predict(matrix)``, from the contributions where the objective allows (see ``_output_of_raw``)."""
    transform = _output_of_raw(booster)
    if transform is None:
        return booster.predict(matrix, num_iteration=iteration, num_threads=num_threads)
    kind, scale = transform
    if kind == "softmax":
        raw = contributions.reshape(len(matrix), booster.num_model_per_iteration(), -1).sum(axis=2)
        raw = np.exp(raw - raw.max(axis=1, keepdims=True))
        return raw / raw.sum(axis=1, keepdims=True)
    raw = contributions.sum(axis=1)
    return 1.0 / (1.0 + np.exp(-scale * raw)) if kind == "sigmoid" else raw


@dataclass(frozen=True)
class Answers:
    """Per row, in input order: what ``score_arrays`` made of the rows (numpy and lists, no pandas)."""

    score: np.ndarray  # (n,) float
    decision: np.ndarray  # (n,) object: labels, or None per row (regression decides nothing)
    reasons: list[list[str]]
    probabilities: list[dict[str, float]] | None = None  # multiclass

    def __len__(self) -> int:
        return len(self.score)

    def fields(self, spec: ModelSpec) -> dict[str, list]:
        """The answer in the fields a client reads (``Task.answer``): the HTTP answer's and the scored file's."""
        return task_of(spec).answer(self.score, self.decision, self.probabilities)

    def frame(self, index=None) -> pd.DataFrame:
        columns: dict[str, object] = {"score": self.score, "decision": self.decision, "reasons": self.reasons}
        if self.probabilities is not None:
            columns["probabilities"] = self.probabilities
        return pd.DataFrame(columns, index=index)

    @staticmethod
    def merge(n: int, parts: list[tuple[np.ndarray, Answers]]) -> Answers:
        """Parts scored on row subsets (``positions`` into the n rows) back in the rows' order."""
        score = np.empty(n)
        decision = np.empty(n, dtype=object)
        reasons: list = [None] * n
        probabilities: list | None = [None] * n if any(p.probabilities is not None for _, p in parts) else None
        for positions, part in parts:
            score[positions] = part.score
            decision[positions] = part.decision
            for i, pos in enumerate(positions):
                reasons[pos] = part.reasons[i]
                if probabilities is not None and part.probabilities is not None:
                    probabilities[pos] = part.probabilities[i]
        return Answers(score, decision, reasons, probabilities)


def score_arrays(
    booster: lgb.Booster,
    cols: Columns,
    spec: ModelSpec,
    top: int = TOP_REASONS,
    num_threads: int | None = None,
    features: FeatureSet | None = None,
) -> Answers:
    """score, decision, reasons and, for multiclass, probabilities, per row of raw column arrays.

    ``cols`` maps each raw feature to a float64 array (categoricals as the spec's codes:
    ``FeatureSet.raw_arrays``, or ``FeatureSet.codes`` per request). No DataFrame on this
    path: one online application costs little more than the booster's ``pred_contrib`` call, which gives
    the prediction too (``_predicted``).
    What score and decision mean depends on the model's task (``loopline.core.tasks``).

    By default the row count picks the threads: one below ``PARALLEL_ROWS`` (an online
    request, where OpenMP's thread start-up and spin-waiting cost more than they save:
    measured 3x slower on a busy 2-core host), all cores from there on (requests merged
    into one call, files). ``num_threads`` overrides it (0: all cores). ``features``: the
    spec's feature set when the caller holds it already (the service: looked up once, not per request).
    """
    features = features or feature_set(spec)
    built = features.build_arrays(cols)
    names = features.columns
    n = len(built[names[0]])
    matrix = np.empty((n, len(names)))  # filled column by column: a third of column_stack's cost for one row
    for j, name in enumerate(names):
        matrix[:, j] = built[name]
    if num_threads is None:
        num_threads = 0 if n >= PARALLEL_ROWS else 1
    task = task_of(spec)
    iteration = booster.best_iteration or None
    contributions = booster.predict(matrix, num_iteration=iteration, pred_contrib=True, num_threads=num_threads)
    predicted = _predicted(booster, matrix, contributions, iteration, num_threads)
    explained = task.explained(contributions, predicted, spec)
    to_raw, raw_names = _reason_matrix(*features.reason_key)
    top_idx = np.argsort(-(explained @ to_raw), axis=1, kind="stable")[:, :top]
    out = task.outputs(predicted, spec)
    decision = np.array(out.decision.tolist() if out.decision is not None else [None] * n, dtype=object)
    probabilities = None
    if out.probabilities is not None:
        classes = spec.dataset.classes
        probabilities = [dict(zip(classes, map(float, p), strict=True)) for p in out.probabilities]
    return Answers(out.score, decision, raw_names[top_idx].tolist(), probabilities)


def score_frame(
    booster: lgb.Booster, raw: pd.DataFrame, spec: ModelSpec, top: int = TOP_REASONS, num_threads: int | None = None
) -> pd.DataFrame:
    """``score_arrays`` for a DataFrame of raw rows (files, drift, rollouts): the answers with the rows' index."""
    cols = feature_set(spec).raw_arrays(raw)
    return score_arrays(booster, cols, spec, top, num_threads).frame(raw.index)
