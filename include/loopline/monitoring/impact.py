"""Is the model still doing its job? Its quality estimated before labels arrive, and its output mix.

Both compare the live window with the champion's **unseen** rows (its validation and
holdout splits, scored by the champion): training rows would not do, the model has
fitted them and scores them more confidently than anything it meets live.

Estimated quality, per task (``fit_estimator`` then ``QualityEstimator.estimate``):

- binary, CBPE-style (NannyML's confidence-based performance estimation): each row is a
  positive with its calibrated probability ``q``, so the expected AUC is the expected share
  of (positive, negative) pairs the score ranks right, and the expected precision and
  recall at the decision threshold come from expected confusion counts;
- multiclass: the expected accuracy is the mean calibrated probability of the answered class;
- regression, DLE-style (direct loss estimation, as NannyML's DLE): small LightGBM models of the
  champion's per-row loss from the inputs and the prediction, fitted on both unseen splits and
  averaged over the window: the sMAPE term (the live metric the verdict judges) and the absolute
  error (the MAE, in the target's units: what NannyML's DLE estimates, and what a user reads).

Calibration (``loopline.training.calibration``) is measured on the holdout at training time
(expected calibration error over ten equal-count bins) and recorded with the model version (a
champion trained before that gets the same measurement at check time, limit ``CALIBRATION_LIMIT``);
the report names it. The classifiers' estimate reads its probabilities from a map fitted on all the
champion's unseen rows at check time (``calibration.fit_probability_map``: a logistic curve cubic in
the score's logit), not from the recorded one: a small ECE does not mean the spread of the scores is
right, and the expected AUC depends on nothing else (a champion "well calibrated (ECE 0.017)" was
estimated 0.03 AUC high on its own unseen rows with its raw scores). The same estimator is applied
to the reference rows, and the verdict judges the *drop* between the two estimates.

Missing inputs (``missing_what_if``): neither estimator sees what a missing input costs. The
champion never met a row without it, so its scores for such rows are not calibrated, and the DLE's
loss model never saw one either (measured: 30 % of a regressor's second input blanked, its sMAPE
rose 0.06 while the DLE estimate rose 0.01). So where an input is missing significantly more often
in the window than on the unseen rows, the cost is measured instead of estimated: the unseen rows,
whose labels are known, get the window's share of missing values (the extra rows blanked at random),
are re-scored by the champion, and their live metric is compared with theirs as they are.

Output mix (``output_mix``): the share of each decision (binary) or answered class
(multiclass), or the 10/50/90 % quantiles of the prediction (regression), against the
reference. A share has moved when it changed by more than ``max_mix_shift`` (absolute)
and a two-proportion z-test finds it significant at ``p_value`` (Bonferroni over the
shares); a quantile when it moved by more than ``max_quantile_shift`` of the reference's
10-90 % range and the K-S test on the predictions agrees.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from loopline.core.spec import DriftPolicy, ModelSpec
from loopline.core.tasks import task_of
from loopline.monitoring.detection import encode, jsonable, reference_medians
from loopline.training import calibration as calib
from loopline.training.calibration import calibration_error  # noqa: F401 (re-exported)

CALIBRATION_LIMIT = calib.DEFAULT_LIMIT  # older champions (no recorded calibration): the check-time limit
QUANTILES = (0.1, 0.5, 0.9)
MIN_SHARE_CHANGE = 0.01  # below this a share "moved" by rounding, whatever the test says
# The loss models: a per-row loss is mostly noise around its conditional mean, so large leaves (at least
# 200 rows) and few shallow trees; few trees also keep the per-window prediction cheap (it runs per check).
DLE_PARAMS = {
    "objective": "regression",
    "learning_rate": 0.2,
    "num_leaves": 7,
    "min_data_in_leaf": 200,
    "num_threads": 1,
    "deterministic": True,
    "seed": 7,
    "verbose": -1,
}
DLE_ROUNDS = 30
MIN_MISSING_RISE = 0.02  # a missing share rising less than this (absolute) is not re-scored
WHAT_IF_SEED = 11  # the blanked rows are drawn the same way at every check
DLE_LOSSES = ("smape", "mae")  # what the regressor's estimate holds: the live metric, then the MAE


def expected_auc(scores: np.ndarray, probabilities: np.ndarray) -> float | None:
    """The AUC expected when row i is a positive with probability ``probabilities[i]`` (ranked by ``scores``).

    Pairs of a row with itself are left out; tied scores count half, as in the AUC itself.
    """
    s, q = np.asarray(scores, float), np.clip(np.asarray(probabilities, float), 0.0, 1.0)
    if len(s) < 2:
        return None
    _, group = np.unique(s, return_inverse=True)
    pos = np.bincount(group, weights=q)
    neg = np.bincount(group, weights=1.0 - q)
    below = np.cumsum(neg) - neg  # expected negatives ranked strictly lower, per score level
    self_pairs = float(np.sum(q * (1.0 - q)))
    right = float(np.sum(pos * below)) + 0.5 * (float(np.sum(pos * neg)) - self_pairs)
    pairs = float(q.sum() * (1.0 - q).sum()) - self_pairs
    return right / pairs if pairs > 0 else None


def expected_confusion(scores: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, float]:
    """Expected precision and recall of "score >= threshold" (NaN where undefined)."""
    s, q = np.asarray(scores, float), np.asarray(probabilities, float)
    flagged = s >= threshold
    tp, fp, fn = float(q[flagged].sum()), float((1 - q[flagged]).sum()), float(q[~flagged].sum())
    return {
        "precision_at_threshold": tp / (tp + fp) if tp + fp > 0 else float("nan"),
        "recall_at_threshold": tp / (tp + fn) if tp + fn > 0 else float("nan"),
    }


def loss_terms(metric: str, truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """The per-row loss whose mean is ``metric`` ("smape" or "mae")."""
    if metric == "smape":
        return smape_terms(truth, predicted)
    if metric == "mae":
        return np.abs(np.asarray(predicted, float) - np.asarray(truth, float))
    raise ValueError(f"no per-row loss for {metric!r}")


LOSS_RANGE = {"smape": (0.0, 2.0), "mae": (0.0, np.inf)}


def smape_terms(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Per row 2|y - ŷ| / (|y| + |ŷ|) (0 where both are 0): the mean of these is the sMAPE."""
    truth, predicted = np.asarray(truth, float), np.asarray(predicted, float)
    denominator = np.abs(truth) + np.abs(predicted)
    return np.divide(2 * np.abs(predicted - truth), denominator, out=np.zeros_like(denominator), where=denominator > 0)


@dataclass
class QualityEstimator:
    """The champion's label-free quality estimator, fitted on its unseen rows (see the module docstring)."""

    spec: ModelSpec
    method: str  # "CBPE" | "expected accuracy" | "DLE"
    calibration_error: float | None  # on the holdout, before any calibration (classifiers)
    calibrated: bool
    reference_quality: float = float("nan")  # the estimate on the reference rows
    reference_estimates: dict[str, float] = field(default_factory=dict)  # all of them (e.g. the regressor's MAE)
    calibration: calib.Calibration | None = None  # classifiers: the champion's recorded calibration (lineage)
    probability_map: calib.ProbabilityMap | None = None  # classifiers: what the estimate reads as probabilities
    _loss_models: dict[str, Any] = field(default_factory=dict, repr=False)  # DLE: metric -> LightGBM booster
    _medians: dict[str, float] = field(default_factory=dict, repr=False)
    missing_rates: dict[str, float] = field(default_factory=dict, repr=False)  # on the rows it was fitted on
    reference_rows: int = 0

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """What the estimate reads as probabilities: the map fitted on the unseen rows where they reject the raw
        scores, else the raw scores (``calibration.fit_probability_map``); the recorded map only without rows to
        fit one on."""
        scores = np.asarray(scores, float)
        if self.probability_map is not None:
            return self.probability_map.probabilities(scores) if self.probability_map.needed else scores
        return self.calibration.probabilities(scores) if self.calibration is not None else scores

    def estimate(self, window: pd.DataFrame) -> dict[str, float]:
        """The task's live metric (and, for a binary model, precision/recall at the threshold), expected on ``window``.

        ``window``: the logged answers (``score``; the raw features for a regressor). A regressor's holds its
        live metric (sMAPE) and the MAE.
        """
        task = task_of(self.spec)
        scores = window["score"].to_numpy(float)
        if self.method == "DLE":
            if not len(scores):
                return {metric: float("nan") for metric in self._loss_models}
            x = np.column_stack([encode(window, self.spec, self._medians), scores])
            out = {}
            for metric, booster in self._loss_models.items():
                terms = np.clip(booster.predict(x, num_threads=1), *LOSS_RANGE[metric])
                out[metric] = float(terms.mean())
            return out
        q = self.probabilities(scores)
        if self.method == "CBPE":
            auc = expected_auc(scores, q)
            threshold = self.spec.training.decision_threshold
            return {task.live_metric: float("nan") if auc is None else auc, **expected_confusion(scores, q, threshold)}
        return {task.live_metric: float(q.mean()) if len(q) else float("nan")}


def fit_estimator(
    spec: ModelSpec, valid: pd.DataFrame, holdout: pd.DataFrame, calibration: calib.Calibration | None = None
) -> QualityEstimator:
    """Fit on the champion's unseen answers, estimate on them as the reference.

    Classifiers: the calibration is fitted on validation and judged on the holdout; the DLE loss
    models of a regressor are fitted on both splits (nothing judges them there, and they need rows).

    ``valid`` / ``holdout``: the raw rows with the champion's answers (``score``, ``decision``) and the
    task's label as ``outcome`` (0/1, a number, or a class index into ``dataset.classes``).
    ``calibration``: the one recorded with the champion at training time; without it (an older
    champion) it is measured here the same way (holdout ECE, isotonic on validation above the limit).
    """
    task = task_of(spec)
    reference = pd.concat([valid, holdout], ignore_index=True)
    if task.name == "regression":
        import lightgbm as lgb

        medians = reference_medians(reference, spec)
        scores = reference["score"].to_numpy(float)
        x = np.column_stack([encode(reference, spec, medians), scores])
        truth = reference["outcome"].to_numpy(float)
        models = {
            metric: lgb.train(DLE_PARAMS, lgb.Dataset(x, loss_terms(metric, truth, scores)), num_boost_round=DLE_ROUNDS)
            for metric in DLE_LOSSES
        }
        estimator = QualityEstimator(spec, "DLE", None, False, _loss_models=models, _medians=medians)
    else:
        if calibration is None:
            calibration = calib.measure(spec, valid, holdout, CALIBRATION_LIMIT, source="fitted at check time")
        method = "CBPE" if task.name == "binary" else "expected accuracy"
        mapped = calib.fit_probability_map(reference["score"].to_numpy(float), calib.hits(reference, spec))
        estimator = QualityEstimator(
            spec, method, calibration.holdout_ece, calibration.calibrated, calibration=calibration,
            probability_map=mapped,
        )  # fmt: skip
    estimator.missing_rates, estimator.reference_rows = missing_rates(reference, spec), len(reference)
    estimator.reference_estimates = estimator.estimate(reference)
    estimator.reference_quality = estimator.reference_estimates[task.live_metric]
    return estimator


# ---------------------------------------------------------------------------------------------
# Output mix
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MixChange:
    label: str  # "decline share", "class high share", "prediction p90"
    reference: float
    current: float
    p_value: float
    moved: bool

    @property
    def change(self) -> float:
        return self.current - self.reference

    def describe(self) -> str:
        if self.label.endswith("share"):
            return f"{self.label} {self.reference:.1%} → {self.current:.1%} ({self.change * 100:+.1f} points)"
        return f"{self.label} {self.reference:.4g} → {self.current:.4g} ({self.change:+.3g})"


def output_mix(reference: pd.DataFrame, current: pd.DataFrame, spec: ModelSpec, policy: DriftPolicy) -> list[MixChange]:
    """How the answers' mix moved between the reference and the window (see the module docstring)."""
    if current.empty or reference.empty:
        return []
    if spec.task == "regression":
        return _quantile_changes(reference["score"].to_numpy(float), current["score"].to_numpy(float), policy)
    ref = reference["decision"].astype(str).value_counts(normalize=True)
    cur = current["decision"].astype(str).value_counts(normalize=True)
    levels = sorted(set(ref.index) | set(cur.index))
    changes = []
    for level in levels:
        a, b = float(ref.get(level, 0.0)), float(cur.get(level, 0.0))
        p = _two_proportion_p(a, len(reference), b, len(current))
        moved = abs(b - a) > max(policy.max_mix_shift, MIN_SHARE_CHANGE) and p < policy.p_value / len(levels)
        label = f"{level} share" if spec.task == "binary" else f"class {level} share"
        changes.append(MixChange(label, a, b, p, bool(moved)))
    return changes


def _two_proportion_p(a: float, n: int, b: float, m: int) -> float:
    pooled = (a * n + b * m) / (n + m)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / m))
    if se == 0:
        return 1.0 if a == b else 0.0
    return math.erfc(abs(b - a) / se / math.sqrt(2))


def _quantile_changes(ref: np.ndarray, cur: np.ndarray, policy: DriftPolicy) -> list[MixChange]:
    from scipy.stats import ks_2samp

    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if not len(ref) or not len(cur):
        return []
    # Asymptotic: scipy's default computes the exact distribution up to 10,000 rows a side, which costs tens of
    # milliseconds at 2,000 against 10,000 rows and differs from the asymptotic p-value by about 1%.
    p = float(ks_2samp(ref, cur, method="asymp").pvalue)
    ref_q, cur_q = np.quantile(ref, [0.1, 0.9, *QUANTILES]), np.quantile(cur, QUANTILES)
    spread = float(ref_q[1] - ref_q[0]) or 1.0
    out = []
    for q, a, b in zip(QUANTILES, ref_q[2:], cur_q, strict=True):
        a, b = float(a), float(b)
        moved = abs(b - a) / spread > policy.max_quantile_shift and p < policy.p_value
        out.append(MixChange(f"prediction p{round(q * 100)}", a, b, p, bool(moved)))
    return out


# ---------------------------------------------------------------------------------------------
# Missing inputs: measured on the labelled unseen rows
# ---------------------------------------------------------------------------------------------

Answerer = Callable[[pd.DataFrame], pd.DataFrame]  # raw rows -> the rows with the champion's answers and outcome


@dataclass(frozen=True)
class MissingWhatIf:
    shares: dict[str, tuple[float, float]]  # input -> (missing share on the unseen rows, in the window)
    quality: float  # the live metric on the unseen rows with the window's missing shares, re-scored
    reference: float  # ... on the unseen rows as they are
    drop: float  # how much worse (positive = worse)

    def describe(self, label: str, tolerance: float) -> str:
        inputs = ", ".join(f"{name} {w:.0%} missing against {r:.0%}" for name, (r, w) in self.shares.items())
        how = "worse" if self.drop > 0 else "better"
        return (
            f"with the window's missing values ({inputs}) the champion's {label} on its labelled unseen rows"
            f" is {self.quality:.3f} against {self.reference:.3f}: {abs(self.drop):.3f} {how}"
            f" ({'beyond' if self.drop > tolerance else 'within'} the {tolerance} tolerated; the same shares"
            " blanked there and re-scored): check the systems that send these inputs"
        )


def missing_rates(frame: pd.DataFrame, spec: ModelSpec) -> dict[str, float]:
    """Each input's share of missing values; a categorical level the spec does not know counts as missing
    (the champion scores it as one), an absent column as all missing."""
    return {
        name: float(_missing(frame, name, spec).mean()) if name in frame.columns else 1.0
        for name in spec.features.names
    }


def missing_shares(
    reference: dict[str, float], n_reference: int, window: pd.DataFrame, spec: ModelSpec, policy: DriftPolicy
) -> dict[str, tuple[float, float]]:
    """Inputs missing significantly more often in the window: (share on the reference, in the window).

    ``reference``: ``missing_rates`` of the reference's ``n_reference`` rows.
    """
    out = {}
    for name, cur in missing_rates(window, spec).items():
        ref = reference[name]
        p = _two_proportion_p(ref, n_reference, cur, len(window))
        if cur - ref > MIN_MISSING_RISE and p < policy.p_value / len(reference):
            out[name] = (ref, cur)
    return out


def _missing(frame: pd.DataFrame, name: str, spec: ModelSpec) -> np.ndarray:
    values = frame[name]
    levels = spec.features.categorical.get(name)
    missing = values.isna().to_numpy()
    return missing if levels is None else missing | ~values.isin(levels).to_numpy()


def missing_what_if(
    reference: pd.DataFrame,
    window: pd.DataFrame,
    spec: ModelSpec,
    policy: DriftPolicy,
    answer: Answerer,
    rates: dict[str, float] | None = None,
) -> MissingWhatIf | None:
    """The champion's live metric on ``reference`` (labelled, answered) with ``window``'s extra missing values.

    ``rates``: ``missing_rates(reference)`` when the caller holds it (the estimator, fitted on these rows).
    None when no input is missing more often, or the metric cannot be computed on the reference.
    """
    if window.empty or reference.empty:
        return None
    shares = missing_shares(rates or missing_rates(reference, spec), len(reference), window, spec, policy)
    if not shares:
        return None
    task = task_of(spec)
    rng = np.random.default_rng(WHAT_IF_SEED)
    blanked = reference.copy()
    for name, (ref, cur) in shares.items():
        present = ~_missing(blanked, name, spec)
        extra = present & (rng.uniform(size=len(blanked)) < (cur - ref) / (1 - ref))
        blanked[name] = blanked[name].where(~extra)
    before, after = task.live_quality(reference, spec), task.live_quality(answer(blanked), spec)
    if before is None or after is None:
        return None
    return MissingWhatIf(shares, float(after), float(before), float(task.quality_drop(after, before)))


# ---------------------------------------------------------------------------------------------
# The impact judgement
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Impact:
    metric: str  # the task's live metric
    method: str
    estimated: float | None  # on the window
    reference: float  # the same estimate on the reference rows
    drop: float | None  # how much worse the estimate is than the reference (positive = worse)
    extra: dict[str, float]  # binary: expected precision / recall at the threshold; regression: the MAE
    calibration_error: float | None
    calibrated: bool
    mix: tuple[MixChange, ...]
    quality_at_risk: bool
    mix_moved: bool
    calibration: str | None = None  # which calibration the estimate uses, in words, and where it comes from
    extra_reference: dict[str, float] = field(default_factory=dict)  # ``extra``'s estimates on the reference
    missing: MissingWhatIf | None = None  # inputs missing more often than on the unseen rows: what that costs

    @property
    def at_risk(self) -> bool:
        return self.quality_at_risk or self.mix_moved

    def reasons(self, policy: DriftPolicy) -> list[str]:
        label = self.metric.upper() if self.metric in ("auc", "smape") else self.metric
        out = []
        if self.estimated is not None:
            how = "worse" if (self.drop or 0) > 0 else "better"
            calibration = f"; calibration: {self.calibration}" if self.calibration else ""
            beyond = "beyond" if (self.drop or 0) > policy.max_estimated_drop else "within"
            out.append(
                f"estimated {label} ({self.method}, no labels needed) {self.estimated:.3f} against {self.reference:.3f}"
                f" on the champion's unseen rows: {abs(self.drop or 0):.3f} {how}"
                f" ({beyond} the {policy.max_estimated_drop} tolerated){calibration}"
            )
        if self.extra.get("mae") is not None and math.isfinite(self.extra["mae"]):
            ref = self.extra_reference.get("mae")
            against = f" against {ref:.3g} on the unseen rows" if ref is not None else ""
            out.append(f"estimated MAE {self.extra['mae']:.3g}{against} (in the target's units; not judged)")
        if self.missing is not None:
            out.append(self.missing.describe(label, policy.max_estimated_drop))
        moved = [c for c in self.mix if c.moved]
        if moved:
            out.append("the answers' mix moved: " + "; ".join(c.describe() for c in moved))
        elif self.mix:
            biggest = max(self.mix, key=lambda c: abs(c.change))
            out.append(f"the answers' mix held (largest change: {biggest.describe()})")
        return out

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mix"] = [{**asdict(c), "change": c.change, "text": c.describe()} for c in self.mix]
        return jsonable(out)


def judge(
    estimator: QualityEstimator,
    reference: pd.DataFrame,
    window: pd.DataFrame,
    spec: ModelSpec,
    policy: DriftPolicy,
    answer: Answerer | None = None,
) -> Impact:
    """The estimated quality and the output mix of ``window`` against the reference answers.

    ``answer``: the champion's answers for raw rows (``drift_flow.Reference.answer``); with it, inputs missing more
    often in the window are costed on the reference rows (``missing_what_if``).
    """
    task = task_of(spec)
    estimates = estimator.estimate(window) if not window.empty else {}
    value = estimates.get(task.live_metric)
    estimated = None if value is None or not math.isfinite(value) else float(value)
    drop = None if estimated is None else task.quality_drop(estimated, estimator.reference_quality)
    mix = tuple(output_mix(reference, window, spec, policy))
    missing = None
    if answer is not None:
        rates = estimator.missing_rates if len(reference) == estimator.reference_rows else None
        missing = missing_what_if(reference, window, spec, policy, answer, rates)
    estimated_risk = drop is not None and drop > policy.max_estimated_drop
    return Impact(
        metric=task.live_metric,
        method=estimator.method,
        estimated=estimated,
        reference=float(estimator.reference_quality),
        drop=drop,
        extra={k: v for k, v in estimates.items() if k != task.live_metric},
        calibration_error=estimator.calibration_error,
        calibrated=estimator.calibrated,
        mix=mix,
        quality_at_risk=bool(estimated_risk or (missing is not None and missing.drop > policy.max_estimated_drop)),
        mix_moved=any(c.moved for c in mix),
        calibration=_calibration_text(estimator),
        extra_reference={k: v for k, v in estimator.reference_estimates.items() if k != task.live_metric},
        missing=missing,
    )


def _calibration_text(estimator: QualityEstimator) -> str | None:
    calibration, mapped = estimator.calibration, estimator.probability_map
    if calibration is None:
        return None
    recorded = f"{calibration.describe()}, {calibration.source}"
    return recorded if mapped is None else f"{recorded}; probabilities from {mapped.describe()}"
