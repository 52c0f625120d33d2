"""Concept drift: once outcome labels arrive, is the champion still as good live as on its holdout?

The live metric is the task's (``loopline.core.tasks``): AUC for a binary classifier,
accuracy for a multiclass one, sMAPE for a regressor, each judged against the same
metric on the champion's holdout with the policy's ``max_quality_drop``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from loopline.core.spec import DriftPolicy, ModelSpec
from loopline.core.tasks import LabelError, task_of
from loopline.monitoring.detection import DriftError, jsonable

LABELLED_COLUMNS = ("score", "decision", "outcome", "model_version")


@dataclass(frozen=True)
class LiveQuality:
    model_version: str
    n: int  # labelled predictions
    metric: str  # the task's live metric
    value: float | None  # None if not computable (e.g. a single class)
    mean_score: float  # the mean answer (probability or prediction) ...
    observed_mean: float  # ... against the mean outcome (binary: the observed positive rate)

    @property
    def calibration_gap(self) -> float:
        return self.mean_score - self.observed_mean

    def to_dict(self) -> dict[str, Any]:
        return jsonable({**asdict(self), "calibration_gap": self.calibration_gap})


def live_quality(labelled: pd.DataFrame, spec: ModelSpec) -> dict[str, LiveQuality]:
    """The task's live metric per model version, over predictions whose outcome has arrived.

    ``labelled`` has columns score, decision, outcome (as stored by ``loopline.monitoring.outcomes``:
    0/1, a number, or a class index; missing = not yet known, skipped) and model_version.
    """
    missing = [c for c in LABELLED_COLUMNS if c not in labelled.columns]
    if missing:
        raise DriftError(f"the labelled predictions lack columns {missing}")
    task = task_of(spec)
    frame = labelled[labelled["outcome"].notna()]
    try:
        if task.name == "binary":
            task.labels(frame["outcome"], spec)
    except LabelError as err:
        raise DriftError(f"outcome: {err}") from err
    score = pd.to_numeric(frame["score"], errors="coerce")
    if score.isna().any():
        raise DriftError("score must be a number on every labelled row")
    out = {}
    for version, idx in frame.groupby(frame["model_version"].astype(str)).groups.items():
        rows = frame.loc[idx]
        outcome = pd.to_numeric(rows["outcome"], errors="coerce").to_numpy(dtype="float64")
        out[str(version)] = LiveQuality(
            model_version=str(version),
            n=len(rows),
            metric=task.live_metric,
            value=task.live_quality(rows, spec),
            mean_score=float(score.loc[idx].mean()),
            observed_mean=float(np.nanmean(outcome)) if task.name != "multiclass" else float("nan"),
        )
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class ConceptVerdict:
    verdict: str  # "concept_drift" | "no_concept_drift" | "insufficient"
    confirmed: bool
    reason: str
    n: int
    metric: str
    live: float | None
    holdout: float

    def to_dict(self) -> dict[str, Any]:
        return jsonable(asdict(self))


def concept_verdict(
    quality: LiveQuality | None, holdout: float, policy: DriftPolicy, spec: ModelSpec
) -> ConceptVerdict:
    """Concept drift if enough labelled live rows are worse than the holdout by more than ``max_quality_drop``."""
    task = task_of(spec)
    metric, label = task.live_metric, task.live_metric.replace("_", " ")
    label = label.upper() if label in ("auc", "smape") else label
    if quality is None or quality.n < policy.min_labelled:
        n = quality.n if quality else 0
        reason = f"{n} labelled live predictions; the policy needs {policy.min_labelled} before judging live {label}"
        return ConceptVerdict("insufficient", False, reason, n, metric, quality.value if quality else None, holdout)
    if quality.value is None:
        reason = f"{quality.n} labelled live predictions, but live {label} is undefined on them (a single class?)"
        return ConceptVerdict("insufficient", False, reason, quality.n, metric, None, holdout)
    drop = task.quality_drop(quality.value, holdout)
    if drop > policy.max_quality_drop:
        reason = (
            f"live {label} {quality.value:.3f} on {quality.n} labelled predictions is worse than the holdout's"
            f" {holdout:.3f} by {drop:.3f} (more than {policy.max_quality_drop}): what predicts"
            f" {spec.dataset.target} has changed"
        )
        return ConceptVerdict("concept_drift", True, reason, quality.n, metric, quality.value, holdout)
    reason = (
        f"live {label} {quality.value:.3f} on {quality.n} labelled predictions is within {policy.max_quality_drop}"
        f" of the holdout's {holdout:.3f}"
    )
    return ConceptVerdict("no_concept_drift", False, reason, quality.n, metric, quality.value, holdout)
