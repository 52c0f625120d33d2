"""Concept drift: once outcome labels arrive, is the champion still right about the world?

Two questions, each judged on the champion's labelled live predictions:

- **Is it as good live as on its holdout?** The live metric is the task's
  (``loopline.core.tasks``): AUC for a binary classifier, accuracy for a multiclass one, sMAPE
  for a regressor. A drop counts when it is beyond the policy's ``max_quality_drop`` *and*
  beyond what sampling noise gives at the window's size: the one-sided ``p_value`` quantile of
  the difference between two estimates of the same metric, the live one on ``n`` labelled rows
  and the holdout's on its own rows (``metric_se``: Hanley and McNeil's standard error for an
  AUC at its positives and negatives, the binomial one for an accuracy, the standard error of
  the mean of the per-row terms for a sMAPE). A 600-row window with 90 positives has an AUC
  standard error of about 0.025, so a 0.05 drop is noise there; 20,000 rows need only the
  tolerance.
- **Did the outcomes move away from what it predicts?** (``outcome_shifts``) A base rate that
  moved with the inputs unchanged leaves the ranking, hence the AUC, as it was, and nothing in
  the inputs shows it. So the observed positive rate is compared with the mean predicted
  probability (binary), each class's observed share with its share of the answers
  (multiclass), the mean outcome with the mean prediction (regression); the gap is compared
  with the same gap on the champion's unseen rows (so its own calibration in the large cancels)
  with a two-sided z-test at ``p_value`` (Bonferroni over the classes), and counts when it is
  significant and beyond ``max_outcome_shift`` (a rate or a share, absolute; for a regressor, a
  share of the mean |outcome| on the unseen rows).

Either is ``concept_drift``: what predicts the target has changed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
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
    se: float | None = None  # the metric's sampling standard error at this many rows (``metric_se``)

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
        value = task.live_quality(rows, spec)
        out[str(version)] = LiveQuality(
            model_version=str(version),
            n=len(rows),
            metric=task.live_metric,
            value=value,
            mean_score=float(score.loc[idx].mean()),
            observed_mean=float(np.nanmean(outcome)) if task.name != "multiclass" else float("nan"),
            se=metric_se(task.live_metric, value, rows.assign(score=score.loc[idx])),
        )
    return dict(sorted(out.items()))


def hanley_mcneil(auc: float, positives: int, negatives: int) -> float:
    """The standard error of an AUC measured on ``positives`` and ``negatives`` (Hanley and McNeil, 1982)."""
    if positives < 1 or negatives < 1:
        return float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)) / (
        positives * negatives
    )
    return math.sqrt(max(variance, 0.0))


def metric_se(metric: str, value: float | None, rows: pd.DataFrame) -> float | None:
    """The sampling standard error of the live ``metric`` measured as ``value`` on ``rows`` (labelled answers)."""
    if value is None or not math.isfinite(value) or rows.empty:
        return None
    if metric == "auc":
        y = pd.to_numeric(rows["outcome"], errors="coerce").round()
        positives = int((y == 1).sum())
        return hanley_mcneil(value, positives, int((y == 0).sum()))
    if metric == "accuracy":
        return math.sqrt(value * (1 - value) / len(rows))
    if metric == "smape":
        from loopline.monitoring.impact import smape_terms

        terms = smape_terms(rows["outcome"].to_numpy(float), rows["score"].to_numpy(float))
        return float(np.std(terms, ddof=1) / math.sqrt(len(terms))) if len(terms) > 1 else None
    return None


def noise_allowance(live: LiveQuality, holdout_se: float | None, p_value: float) -> float | None:
    """How far live quality falls below the holdout's by sampling noise alone, at one-sided ``p_value``."""
    if live.se is None or not math.isfinite(live.se):
        return None
    both = math.sqrt(live.se**2 + (holdout_se or 0.0) ** 2)
    return NormalDist().inv_cdf(1 - p_value) * both


def holdout_se(holdout: pd.DataFrame | None, spec: ModelSpec) -> float | None:
    """The holdout metric's own standard error (``holdout``: the champion's answered holdout rows with outcomes)."""
    if holdout is None or holdout.empty:
        return None
    quality = live_quality(holdout.assign(model_version="holdout"), spec).get("holdout")
    return quality.se if quality is not None else None


# ---------------------------------------------------------------------------------------------
# Outcomes against predictions: a moved base rate
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutcomeShift:
    label: str  # "positive rate", "class high share", "mean outcome"
    predicted: float  # live: the mean predicted probability, the class's share of the answers, the mean prediction
    observed: float  # live: the observed rate, share or mean
    reference_gap: float  # observed - predicted on the champion's unseen rows
    shift: float  # (observed - predicted) live, minus reference_gap
    size: float  # the shift in the unit the tolerance reads (absolute; regression: a share of the mean |outcome|)
    p_value: float
    moved: bool

    def describe(self) -> str:
        if self.label == "mean outcome":
            return (
                f"mean outcome {self.observed:.4g} against a mean prediction of {self.predicted:.4g}"
                f" ({self.shift:+.4g} beyond the unseen rows' gap of {self.reference_gap:+.4g}, {self.size:+.1%}"
                f" of the mean outcome; p={self.p_value:.2g})"
            )
        predicted = "the mean predicted probability" if self.label == "positive rate" else "its share of the answers"
        return (
            f"observed {self.label} {self.observed:.1%} against {predicted} {self.predicted:.1%}"
            f" ({self.shift * 100:+.1f} points beyond the unseen rows' gap of {self.reference_gap * 100:+.1f};"
            f" p={self.p_value:.2g})"
        )


def _two_sided_p(difference: float, se: float) -> float:
    if se <= 0:
        return 1.0 if difference == 0 else 0.0
    return math.erfc(abs(difference) / se / math.sqrt(2))


def _per_row(rows: pd.DataFrame, spec: ModelSpec) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, predicted, observed) per row, for each quantity the outcomes are compared on."""
    outcome = pd.to_numeric(rows["outcome"], errors="coerce").to_numpy(float)
    score = rows["score"].to_numpy(float)
    if spec.task == "binary":
        return [("positive rate", score, outcome)]
    if spec.task == "regression":
        return [("mean outcome", score, outcome)]
    classes = list(spec.dataset.classes or ())
    truth = np.array([classes[int(i)] if 0 <= int(i) < len(classes) else None for i in outcome], dtype=object)
    decided = rows["decision"].to_numpy(dtype=object)
    return [(f"class {c} share", (decided == c).astype(float), (truth == c).astype(float)) for c in classes]


def outcome_shifts(
    labelled: pd.DataFrame, reference: pd.DataFrame, spec: ModelSpec, policy: DriftPolicy
) -> list[OutcomeShift]:
    """Did the outcomes move away from what the champion predicts? See the module docstring.

    ``labelled``: the champion's labelled live answers (score, decision, outcome); ``reference``: its unseen rows,
    answered, with the label as outcome. The gap's standard error is the spread of the per-row gap (outcome minus
    prediction) on the reference rows, at both sides' sizes. Empty when either side has no labelled rows.
    """
    labelled = labelled[labelled["outcome"].notna()]
    reference = reference[reference["outcome"].notna()]
    n, m = len(labelled), len(reference)
    if not n or m < 2:
        return []
    live, ref = _per_row(labelled, spec), _per_row(reference, spec)
    scale = float(np.mean(np.abs(reference["outcome"].to_numpy(float)))) if spec.task == "regression" else 1.0
    out = []
    for (label, predicted, observed), (_, ref_predicted, ref_observed) in zip(live, ref, strict=True):
        reference_gap = float(np.mean(ref_observed - ref_predicted))
        shift = float(np.mean(observed - predicted)) - reference_gap
        se = float(np.std(ref_observed - ref_predicted, ddof=1)) * math.sqrt(1 / n + 1 / m)
        size = shift / (scale or 1.0)
        p = _two_sided_p(shift, se)
        moved = abs(size) > policy.max_outcome_shift and p < policy.p_value / len(live)
        out.append(
            OutcomeShift(label, float(predicted.mean()), float(observed.mean()), reference_gap, shift, size, p, moved)
        )
    return out


@dataclass(frozen=True)
class ConceptVerdict:
    verdict: str  # "concept_drift" | "no_concept_drift" | "insufficient"
    confirmed: bool
    reason: str
    n: int
    metric: str
    live: float | None
    holdout: float
    noise: float | None = None  # the drop sampling noise alone reaches at one-sided p_value (None: not known)
    outcomes: tuple[OutcomeShift, ...] = field(default_factory=tuple)  # outcomes against predictions
    quality_dropped: bool = False  # the live metric dropped beyond the tolerance and the noise
    outcomes_moved: bool = False  # an outcome rate, share or mean moved away from the predictions

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["outcomes"] = [{**asdict(o), "text": o.describe()} for o in self.outcomes]
        return jsonable(out)


def concept_verdict(
    quality: LiveQuality | None,
    holdout: float,
    policy: DriftPolicy,
    spec: ModelSpec,
    outcomes: Sequence[OutcomeShift] = (),
    holdout_se: float | None = None,
) -> ConceptVerdict:
    """Concept drift if enough labelled live rows are worse than the holdout by more than ``max_quality_drop`` and
    than sampling noise, or their outcomes moved away from the predictions (``outcomes``: ``outcome_shifts``).

    ``holdout_se``: the holdout metric's own standard error (``holdout_se``); None counts the live window's alone.
    """
    task = task_of(spec)
    metric, label = task.live_metric, task.live_metric.replace("_", " ")
    label = label.upper() if label in ("auc", "smape") else label
    if quality is None or quality.n < policy.min_labelled:
        n = quality.n if quality else 0
        reason = f"{n} labelled live predictions; the policy needs {policy.min_labelled} before judging live {label}"
        return ConceptVerdict("insufficient", False, reason, n, metric, quality.value if quality else None, holdout)
    outcomes = tuple(outcomes)
    moved = [o for o in outcomes if o.moved]
    moved_text = (
        f"; the outcomes moved away from the predictions: {'; '.join(o.describe() for o in moved)}" if moved else ""
    )
    if quality.value is None:
        reason = f"{quality.n} labelled live predictions, but live {label} is undefined on them (a single class?)"
        verdict = "concept_drift" if moved else "insufficient"
        return ConceptVerdict(
            verdict, bool(moved), reason + moved_text, quality.n, metric, None, holdout, None, outcomes, False,
            bool(moved),
        )  # fmt: skip
    drop = task.quality_drop(quality.value, holdout)
    noise = noise_allowance(quality, holdout_se, policy.p_value)
    floor = max(policy.max_quality_drop, noise or 0.0)
    noise_text = (
        f" and the {noise:.3f} sampling noise gives at {quality.n} labelled rows (one-sided p {policy.p_value})"
        if noise is not None
        else ""
    )
    dropped = drop > floor
    if dropped:
        reason = (
            f"live {label} {quality.value:.3f} on {quality.n} labelled predictions is worse than the holdout's"
            f" {holdout:.3f} by {drop:.3f}, beyond both the {policy.max_quality_drop} tolerated{noise_text}:"
            f" what predicts {spec.dataset.target} has changed"
        )
    else:
        reason = (
            f"live {label} {quality.value:.3f} on {quality.n} labelled predictions is {abs(drop):.3f}"
            f" {'below' if drop > 0 else 'above'} the holdout's {holdout:.3f}: within the {policy.max_quality_drop}"
            f" tolerated{noise_text.replace(' and the', ' or the')}"
        )
    if outcomes and not moved:
        biggest = max(outcomes, key=lambda o: abs(o.size))
        reason += f"; outcomes match the predictions (largest gap: {biggest.describe()})"
    reason += moved_text
    confirmed = dropped or bool(moved)
    return ConceptVerdict(
        "concept_drift" if confirmed else "no_concept_drift", confirmed, reason, quality.n, metric, quality.value,
        holdout, noise, outcomes, dropped, bool(moved),
    )  # fmt: skip
