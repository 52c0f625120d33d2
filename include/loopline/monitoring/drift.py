"""Drift: is the live population still the one the champion learned from, and is the model still right?

Three questions, each answered by a small pure function the drift DAG calls:

- **Data drift** (``fit_detector`` / ``load_or_fit`` / ``check``): the live window of the
  prediction log against the champion's training data. Per feature, alibi-detect's
  ``TabularDrift`` runs a two-sample K-S test (numeric) or a chi-squared test (categorical),
  with the Benjamini-Hochberg FDR correction across features. Statistical significance
  alone is not enough: on large windows a K-S test finds differences nobody cares about,
  so a feature counts as *drifted* only if it is significant **and** its population
  stability index reaches ``policy.min_psi``. Drift is *confirmed* when the features that
  drifted carry at least ``policy.drift_share`` of the model's importance, or when the
  score distribution itself moved (K-S p < ``policy.p_value`` and PSI >= ``policy.score_psi``).
- **Concept drift** (``live_quality`` / ``concept_verdict``): once outcome labels arrive,
  the live AUC of the champion against its holdout AUC.
- **Retrain storms** (``decide_trigger``): a confirmed drift may start a retrain only
  outside the cooldown after the last trigger and within the weekly budget.

Encoding (what alibi-detect sees): a float matrix with the spec's raw features in spec
order. Categoricals become integer codes in the spec's level order; an unknown level or a
missing value gets one extra code (``len(levels)``), so "more missing values" or "a level
the spec does not know" shows up as drift instead of being dropped. A missing numeric value
becomes the **median of the reference sample** (the same median at fit and check time, so
imputation itself never looks like drift); a change in the missing rate then shows as a
spike at the median, which both K-S and PSI pick up.

alibi-detect and scipy.stats are imported inside the functions that need them: importing
them takes seconds, and the CLI and DAG files import this module's names cheaply.
"""

from __future__ import annotations

import html
import logging
import math
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from loopline.core.clock import as_utc
from loopline.core.errors import LooplineError
from loopline.core.features import derived_sources
from loopline.core.spec import DriftPolicy, ModelSpec
from loopline.monitoring.psi import EPSILON, psi

if TYPE_CHECKING:
    from alibi_detect.cd import TabularDrift

log = logging.getLogger(__name__)

# Why a bounded reference: the saved detector stores its reference matrix (20k rows x 15
# features is 2.4 MB per champion version, not the whole training set), K-S and chi-squared
# cost grows with it, and beyond ~10x the live window a larger reference adds almost no
# power: the test's effective size is n_ref*n_cur/(n_ref+n_cur), which for a 2k window is
# 1,818 with 20k reference rows against 2,000 with an infinite one. The sample is seeded,
# so the same reference always gives the same sample (and the same detector).
REFERENCE_MAX_ROWS = 20_000
REFERENCE_SEED = 20_240_601
# The live window is compared as a seeded sample beyond this many rows, for the same reason:
# against a 20k reference the effective size is 18.2k at 200k live rows and 19.6k at 1M, so
# the tests lose almost nothing while their cost (sorting for K-S, binning for PSI) stops
# growing with traffic. The report keeps the window's full row count (n_current) and says
# how many rows were compared (n_compared).
CURRENT_MAX_ROWS = 200_000
HISTOGRAM_BINS = 20
_RANGE = " to "  # numeric bin labels: "low to high" (a dash would clash with negative numbers)
MISSING_LABEL = "(missing/unknown)"


VERDICTS = ("drift", "no_drift", "insufficient")


class DriftError(LooplineError, ValueError):
    """The drift inputs cannot be compared (missing columns, empty reference, stale detector, bad labels)."""


# ---------------------------------------------------------------------------------------------
# Encoding and the detector
# ---------------------------------------------------------------------------------------------


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DriftError(f"{what} lacks columns {missing}; it has {sorted(map(str, frame.columns))}")


def reference_sample(reference: pd.DataFrame, max_rows: int = REFERENCE_MAX_ROWS) -> pd.DataFrame:
    """At most ``max_rows`` rows of the reference, seeded (see REFERENCE_MAX_ROWS for why bounded)."""
    if len(reference) <= max_rows:
        return reference.reset_index(drop=True)
    return reference.sample(n=max_rows, random_state=REFERENCE_SEED).reset_index(drop=True)


def reference_medians(reference: pd.DataFrame, spec: ModelSpec) -> dict[str, float]:
    """Median of each numeric feature (NaN ignored); an all-missing column falls back to 0."""
    medians = {}
    for name in spec.features.numeric:
        value = pd.to_numeric(reference[name], errors="coerce").median()
        medians[name] = float(value) if pd.notna(value) else 0.0
    return medians


def category_codes(values: pd.Series, levels: Sequence[str]) -> np.ndarray:
    """Codes in the spec's level order; unknown levels and missing values get ``len(levels)``."""
    codes = pd.Categorical(values.astype("object").where(values.notna(), None), categories=list(levels)).codes
    return np.where(codes < 0, len(levels), codes).astype("float64")


def encode(frame: pd.DataFrame, spec: ModelSpec, medians: Mapping[str, float]) -> np.ndarray:
    """The float matrix alibi-detect takes: spec features in spec order (see the module docstring)."""
    _require_columns(frame, spec.features.names, "the data to encode")
    columns = []
    for name in spec.features.numeric:
        values = pd.to_numeric(frame[name], errors="coerce").astype("float64")
        columns.append(values.fillna(medians[name]).to_numpy())
    for name, levels in spec.features.categorical.items():
        columns.append(category_codes(frame[name], levels))
    if not columns:
        raise DriftError("the spec declares no features")
    return np.column_stack(columns).astype("float64") if len(frame) else np.empty((0, len(columns)))


def _prepared_reference(reference: pd.DataFrame, spec: ModelSpec) -> tuple[pd.DataFrame, dict[str, float], np.ndarray]:
    _require_columns(reference, spec.features.names, "the reference")
    if reference.empty:
        raise DriftError("the reference (the champion's training data) is empty; nothing to compare with")
    sample = reference_sample(reference)
    medians = reference_medians(sample, spec)
    return sample, medians, encode(sample, spec, medians)


def _categories_per_feature(x_ref: np.ndarray, spec: ModelSpec) -> dict[int, list[int]]:
    """Spec codes (levels + the missing code) that the reference actually shows, per categorical column.

    A code with zero count on both sides cannot be tested (scipy's chi-squared refuses a zero
    expected frequency), so codes absent from the reference are left out here; should one
    appear in the live window, alibi-detect adds it from the union of both sides and the test
    sees a category the reference never had, which is drift.
    """
    offset = len(spec.features.numeric)
    out = {}
    for i, levels in enumerate(spec.features.categorical.values()):
        present = set(np.unique(x_ref[:, offset + i]).astype(int).tolist())
        out[offset + i] = [code for code in range(len(levels) + 1) if code in present]
    return out


def fit_detector(reference: pd.DataFrame, spec: ModelSpec, p_value: float) -> TabularDrift:
    """A TabularDrift on a bounded, seeded sample of the reference (K-S numeric, chi-squared categorical, FDR)."""
    from alibi_detect.cd import TabularDrift

    _, _, x_ref = _prepared_reference(reference, spec)
    return TabularDrift(
        x_ref,
        p_val=p_value,
        categories_per_feature=_categories_per_feature(x_ref, spec),
        correction="fdr",
    )


def save_detector(detector: TabularDrift, path: Path) -> Path:
    """Save with alibi_detect.saving, atomically: a half-written detector is never visible at ``path``."""
    from alibi_detect.saving import save_detector as alibi_save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    alibi_save(detector, tmp)
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    try:
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except OSError:
        if not (path / "config.toml").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # a concurrent task saved its (identical) detector first
    shutil.rmtree(old, ignore_errors=True)
    return path


def load_detector(path: Path) -> TabularDrift:
    from alibi_detect.saving import load_detector as alibi_load

    try:
        return alibi_load(Path(path))
    except Exception as err:  # alibi-detect raises many types for a broken or foreign folder
        raise DriftError(f"cannot load the drift detector at {path}: {err}") from err


def _stale_reason(detector: Any, x_ref: np.ndarray, spec: ModelSpec, p_value: float) -> str | None:
    """Why a detector does not match this reference, spec and significance level (None: it matches)."""
    if type(detector).__name__ != "TabularDrift":
        return f"it is a {type(detector).__name__}, not a TabularDrift"
    if not math.isclose(float(detector.p_val), p_value, rel_tol=0, abs_tol=1e-12):
        return f"it was fitted at p={detector.p_val}, the policy says p={p_value}"
    stored = np.asarray(detector.x_ref)
    if stored.shape != x_ref.shape or not np.array_equal(stored, x_ref):
        return f"its reference ({stored.shape[0]} rows x {stored.shape[1]}) is not this reference's sample"
    expected = _categories_per_feature(x_ref, spec)
    stored_categories = {int(k): [int(v) for v in vals] for k, vals in detector.x_ref_categories.items()}
    if stored_categories != expected:
        return "its categorical levels differ from the spec's"
    if getattr(detector, "correction", "fdr") != "fdr":
        return f"it uses correction={detector.correction!r}, not 'fdr'"
    return None


def load_or_fit(path: Path, reference: pd.DataFrame, spec: ModelSpec, p_value: float) -> TabularDrift:
    """The detector saved at ``path`` if it matches this reference, spec and p-value; otherwise fit and save one.

    The caller keys ``path`` on the champion version (``<monitoring_dir>/detectors/<model>/v<N>/``),
    so a detector is fitted once per champion; a stale or broken one is refitted, never trusted.
    """
    path = Path(path)
    _, _, x_ref = _prepared_reference(reference, spec)
    if (path / "config.toml").is_file():
        try:
            detector = load_detector(path)
        except DriftError as err:
            log.warning("%s; refitting", err)
        else:
            reason = _stale_reason(detector, x_ref, spec, p_value)
            if reason is None:
                return detector
            log.warning("drift detector at %s is stale (%s); refitting", path, reason)
    detector = fit_detector(reference, spec, p_value)
    save_detector(detector, path)
    return detector


# ---------------------------------------------------------------------------------------------
# Effect sizes, importances and histograms
# ---------------------------------------------------------------------------------------------


def categorical_psi(reference: Sequence[Any] | np.ndarray, current: Sequence[Any] | np.ndarray) -> float:
    """PSI over category shares (the union of both sides' categories; missing values are a category).

    Same epsilon floor as ``loopline.monitoring.psi``, so a category that is new in the current window
    gives a large but finite value.
    """
    ref_share, cur_share = _category_shares(reference), _category_shares(current)
    if ref_share.empty or cur_share.empty:
        raise ValueError("PSI needs non-empty reference and current samples")
    index = ref_share.index.union(cur_share.index)
    r = np.maximum(ref_share.reindex(index, fill_value=0).to_numpy(dtype="float64"), EPSILON)
    c = np.maximum(cur_share.reindex(index, fill_value=0).to_numpy(dtype="float64"), EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


def _category_shares(values: Sequence[Any] | np.ndarray) -> pd.Series:
    arr = np.asarray(values)
    if arr.dtype.kind in "biu" or (arr.dtype.kind == "f" and not np.isnan(arr).any()):
        series = pd.Series(arr)  # codes: the fast path (no Python objects for a million rows)
    else:
        series = pd.Series(arr, dtype=object)
        series = series.where(series.notna(), MISSING_LABEL).astype(str)
    return series.value_counts(normalize=True)


def feature_weights(importances: Mapping[str, float], spec: ModelSpec) -> dict[str, float]:
    """Importance per raw feature, normalised to sum 1.

    Accepts the booster's importances as logged (``feature_importance.json``): derived
    features are shared among the raw inputs their model's features.py declares, unknown names are ignored,
    negative or non-finite values count as 0. Without any usable importance every feature
    weighs the same.
    """
    names = spec.features.names
    weights = dict.fromkeys(names, 0.0)
    sources = derived_sources(spec)
    for key, value in importances.items():
        value = float(value)
        if not math.isfinite(value) or value <= 0:
            continue
        if key in weights:
            weights[key] += value
        elif key in sources:
            inputs = [n for n in sources[key] if n in weights]
            for name in inputs:
                weights[name] += value / len(inputs)
    total = sum(weights.values())
    if total <= 0:
        return dict.fromkeys(names, 1.0 / len(names))
    return {name: w / total for name, w in weights.items()}


@dataclass(frozen=True)
class Histogram:
    """Shares per bin on both sides (each sums to 1 over the non-missing values), for the report's charts."""

    labels: tuple[str, ...]
    reference: tuple[float, ...]
    current: tuple[float, ...]


def _numeric_histogram(ref: np.ndarray, cur: np.ndarray, bins: int = HISTOGRAM_BINS) -> Histogram:
    ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    both = [a for a in (ref, cur) if len(a)]
    if not both:
        return Histogram((), (), ())
    lo = min(float(np.quantile(a, 0.005)) for a in both)
    hi = max(float(np.quantile(a, 0.995)) for a in both)
    if not hi > lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)

    def shares(a: np.ndarray) -> tuple[float, ...]:
        if not len(a):
            return tuple(0.0 for _ in range(bins))
        counts = np.histogram(np.clip(a, lo, hi), bins=bins, range=(lo, hi))[0]  # uniform bins: no sort
        return tuple(round(float(x), 6) for x in counts / len(a))

    labels = tuple(f"{_fmt_num(a)}{_RANGE}{_fmt_num(b)}" for a, b in zip(edges[:-1], edges[1:], strict=True))
    return Histogram(labels, shares(ref), shares(cur))


def _categorical_histogram(ref_codes: np.ndarray, cur_codes: np.ndarray, levels: Sequence[str]) -> Histogram:
    k = len(levels) + 1

    def shares(codes: np.ndarray) -> tuple[float, ...]:
        if not len(codes):
            return tuple(0.0 for _ in range(k))
        counts = np.bincount(codes.astype(int), minlength=k)[:k]
        return tuple(round(float(x), 6) for x in counts / len(codes))

    return Histogram((*levels, MISSING_LABEL), shares(ref_codes), shares(cur_codes))


def _fmt_num(x: float) -> str:
    if x == 0 or 0.01 <= abs(x) < 1e6:
        return f"{x:,.4g}" if abs(x) < 1000 else f"{x:,.0f}"
    return f"{x:.3g}"


def bh_adjusted(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), for display next to the detector's decision."""
    p = np.asarray(p_values, dtype="float64")
    n = len(p)
    if n == 0:
        return p
    order = np.argsort(p)
    scaled = p[order] * n / np.arange(1, n + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(adjusted, 1.0)
    return out


# ---------------------------------------------------------------------------------------------
# The data-drift report
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    kind: str  # "numeric" | "categorical"
    importance: float  # share of the model's importance (all features sum to 1)
    test: str  # "K-S" | "chi-squared"
    statistic: float  # K-S D, or the chi-squared statistic
    p_value: float  # the test's own p-value
    q_value: float  # Benjamini-Hochberg adjusted p-value (display)
    significant: bool  # the detector's FDR decision at policy.p_value
    psi: float  # effect size
    drifted: bool  # significant and psi >= policy.min_psi
    missing_reference: float  # share of missing (numeric) or missing/unknown (categorical) values
    missing_current: float
    histogram: Histogram = field(repr=False)


@dataclass(frozen=True)
class ScoreDrift:
    ks_statistic: float
    p_value: float
    psi: float
    shifted: bool  # p < policy.p_value and psi >= policy.score_psi
    n_reference: int
    n_current: int
    histogram: Histogram = field(repr=False)


@dataclass(frozen=True)
class DriftReport:
    model: str
    verdict: str  # "drift" | "no_drift" | "insufficient"
    confirmed: bool
    reasons: tuple[str, ...]
    n_reference: int  # reference rows compared (a seeded sample of at most REFERENCE_MAX_ROWS)
    n_current: int  # live rows in the window
    n_compared: int  # live rows compared (a seeded sample of at most CURRENT_MAX_ROWS)
    drift_share: float  # importance of the drifted features (0..1)
    fdr_threshold: float | None  # p-values below this are significant (None: none were)
    features: tuple[FeatureDrift, ...]
    score: ScoreDrift | None
    policy: dict[str, Any]

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    @property
    def score_psi(self) -> float | None:
        return self.score.psi if self.score else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (the DAG stores it beside the HTML report and in the state store)."""
        return _jsonable(asdict(self))

    def feature_rows(self) -> list[dict[str, Any]]:
        """The per-feature table without histograms (compact; for ``loopline_drift_checks.features``)."""
        keep = ("name", "kind", "importance", "statistic", "p_value", "q_value", "significant", "psi", "drifted")
        return [_jsonable({k: getattr(f, k) for k in keep}) for f in self.features]

    def summary(self) -> str:
        head = {
            "drift": "DRIFT confirmed",
            "no_drift": "no drift",
            "insufficient": "no verdict (too little data)",
        }[self.verdict]
        parts = [f"{self.model}: {head}"]
        if self.features:
            drifted = self.drifted_features
            listed = ", ".join(drifted[:4]) + (", ..." if len(drifted) > 4 else "")
            parts.append(
                f"drifted features {len(drifted)}/{len(self.features)} ({listed or 'none'})"
                f", importance share {self.drift_share:.2f} (confirms at {self.policy['drift_share']:.2f})"
            )
        if self.score is not None:
            parts.append(f"score PSI {self.score.psi:.3f}, K-S p={_fmt_p(self.score.p_value)}")
        parts.append(f"{self.n_current:,} live rows vs {self.n_reference:,} reference rows")
        return "; ".join(parts)

    def to_html(self, title: str | None = None, context: Mapping[str, Any] | None = None) -> str:
        """A self-contained page: inline CSS and SVG, no scripts, no external assets."""
        return _render_html(self, title or f"Drift report: {self.model}", context or {})


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _fmt_p(p: float) -> str:
    if p == 0:  # alibi-detect returns float32 p-values: anything this small underflows to 0
        return "< 1e-38"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def _score_drift(ref_scores: np.ndarray, cur_scores: np.ndarray, policy: DriftPolicy) -> ScoreDrift:
    from scipy.stats import ks_2samp

    ref = np.asarray(ref_scores, dtype="float64")
    cur = np.asarray(cur_scores, dtype="float64")
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    rng = np.random.default_rng(REFERENCE_SEED)  # same bounds, same reasons as for the features
    if len(ref) > REFERENCE_MAX_ROWS:
        ref = rng.choice(ref, REFERENCE_MAX_ROWS, replace=False)
    if len(cur) > CURRENT_MAX_ROWS:
        cur = rng.choice(cur, CURRENT_MAX_ROWS, replace=False)
    result = ks_2samp(ref, cur)
    p_value, statistic = float(result.pvalue), float(result.statistic)
    effect = psi(ref, cur)
    return ScoreDrift(
        ks_statistic=statistic,
        p_value=p_value,
        psi=effect,
        shifted=bool(p_value < policy.p_value and effect >= policy.score_psi),
        n_reference=len(ref),
        n_current=len(cur),
        histogram=_numeric_histogram(ref, cur),
    )


def _bounded(current: pd.DataFrame) -> pd.DataFrame:
    """The live rows to compare: all of them, or a seeded sample of CURRENT_MAX_ROWS (see there for why)."""
    if len(current) <= CURRENT_MAX_ROWS:
        return current
    return current.sample(n=CURRENT_MAX_ROWS, random_state=REFERENCE_SEED)


def _usable_scores(scores: Sequence[float] | np.ndarray | None) -> bool:
    if scores is None:
        return False
    arr = np.asarray(scores, dtype="float64")
    return bool(np.isfinite(arr).any())


def check(
    detector: TabularDrift,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    spec: ModelSpec,
    importances: Mapping[str, float],
    ref_scores: Sequence[float] | np.ndarray | None,
    cur_scores: Sequence[float] | np.ndarray | None,
    policy: DriftPolicy,
) -> DriftReport:
    """Compare the live window with the reference the detector was fitted on; see the module docstring.

    ``reference`` must be the frame the detector was fitted on (checked: a detector fitted on
    other data raises DriftError). ``current`` may carry extra columns (score, model_version,
    logged_at...); an empty window is "insufficient", a window lacking a feature raises.
    Scores are optional: without both sides the score channel is skipped and says so.
    """
    sample, medians, x_ref = _prepared_reference(reference, spec)
    stale = _stale_reason(detector, x_ref, spec, policy.p_value)
    if stale is not None:
        raise DriftError(f"the drift detector does not fit this check: {stale}; rebuild it with load_or_fit")
    n_current = len(current)
    policy_dict = policy.model_dump()
    if n_current == 0:
        return DriftReport(
            model=spec.name,
            verdict="insufficient",
            confirmed=False,
            reasons=(f"no predictions in the window; the policy needs at least {policy.min_window} to judge",),
            n_reference=len(sample),
            n_current=0,
            n_compared=0,
            drift_share=0.0,
            fdr_threshold=None,
            features=(),
            score=None,
            policy=policy_dict,
        )
    _require_columns(current, spec.features.names, "the live window")
    current = _bounded(current)
    x_cur = encode(current, spec, medians)
    prediction = detector.predict(x_cur, drift_type="batch", return_p_val=True, return_distance=True)["data"]
    p_values = np.asarray(prediction["p_val"], dtype="float64")
    statistics = np.asarray(prediction["distance"], dtype="float64")
    threshold = float(prediction["threshold"]) if prediction["is_drift"] else None
    q_values = bh_adjusted(p_values)
    weights = feature_weights(importances, spec)

    features = []
    n_numeric = len(spec.features.numeric)
    for i, name in enumerate(spec.features.names):
        numeric = i < n_numeric
        ref_col, cur_col = x_ref[:, i], x_cur[:, i]
        if numeric:
            effect = psi(ref_col, cur_col)
            ref_raw = pd.to_numeric(sample[name], errors="coerce").to_numpy(dtype="float64")
            cur_raw = pd.to_numeric(current[name], errors="coerce").to_numpy(dtype="float64")
            missing_ref, missing_cur = float(np.isnan(ref_raw).mean()), float(np.isnan(cur_raw).mean())
            histogram = _numeric_histogram(ref_raw, cur_raw)
        else:
            levels = spec.features.categorical[name]
            effect = categorical_psi(ref_col, cur_col)
            missing_ref = float(np.mean(ref_col == len(levels)))
            missing_cur = float(np.mean(cur_col == len(levels)))
            histogram = _categorical_histogram(ref_col, cur_col, levels)
        significant = threshold is not None and bool(p_values[i] < threshold)
        features.append(
            FeatureDrift(
                name=name,
                kind="numeric" if numeric else "categorical",
                importance=weights[name],
                test="K-S" if numeric else "chi-squared",
                statistic=float(statistics[i]),
                p_value=float(p_values[i]),
                q_value=float(q_values[i]),
                significant=significant,
                psi=effect,
                drifted=bool(significant and effect >= policy.min_psi),
                missing_reference=missing_ref,
                missing_current=missing_cur,
                histogram=histogram,
            )
        )
    drift_share = float(sum(f.importance for f in features if f.drifted))
    score = (
        _score_drift(ref_scores, cur_scores, policy)
        if _usable_scores(ref_scores) and _usable_scores(cur_scores)
        else None
    )

    by_data = drift_share >= policy.drift_share
    by_score = score is not None and score.shifted
    enough = n_current >= policy.min_window
    reasons = _reasons(features, drift_share, score, policy, n_current, enough, by_data, by_score)
    if len(current) < n_current:
        reasons.append(
            f"the window's {n_current:,} rows were compared as a seeded sample of {len(current):,}"
            f" (against {len(sample):,} reference rows more would add almost no power)"
        )
    verdict = "insufficient" if not enough else ("drift" if by_data or by_score else "no_drift")
    return DriftReport(
        model=spec.name,
        verdict=verdict,
        confirmed=verdict == "drift",
        reasons=tuple(reasons),
        n_reference=len(sample),
        n_current=n_current,
        n_compared=len(current),
        drift_share=drift_share,
        fdr_threshold=threshold,
        features=tuple(features),
        score=score,
        policy=policy_dict,
    )


def _reasons(
    features: list[FeatureDrift],
    drift_share: float,
    score: ScoreDrift | None,
    policy: DriftPolicy,
    n_current: int,
    enough: bool,
    by_data: bool,
    by_score: bool,
) -> list[str]:
    reasons = []
    if not enough:
        reasons.append(
            f"only {n_current:,} predictions in the window; the policy needs at least {policy.min_window:,}"
            " before it judges (the statistics below are for information)"
        )
    drifted = sorted((f for f in features if f.drifted), key=lambda f: -f.importance)
    if drifted:
        listed = ", ".join(f"{f.name} (PSI {f.psi:.2f}, importance {f.importance:.2f})" for f in drifted)
        reasons.append(
            f"{len(drifted)} of {len(features)} features drifted (FDR q < {policy.p_value} and PSI >= "
            f"{policy.min_psi}): {listed}; they carry {drift_share:.2f} of the model's importance, "
            f"{'at or above' if by_data else 'below'} the {policy.drift_share:.2f} that confirms drift"
        )
    else:
        reasons.append(f"no feature drifted (FDR q < {policy.p_value} and PSI >= {policy.min_psi})")
    small = [f.name for f in features if f.significant and not f.drifted]
    if small:
        reasons.append(
            f"{len(small)} feature(s) differ significantly but with an effect below PSI {policy.min_psi}"
            f" (not counted): {', '.join(small)}"
        )
    if score is None:
        reasons.append("score drift not checked: no scores given for both the reference and the window")
    elif by_score:
        reasons.append(
            f"the score distribution shifted: K-S p={_fmt_p(score.p_value)} < {policy.p_value}"
            f" and PSI {score.psi:.3f} >= {policy.score_psi}"
        )
    else:
        reasons.append(
            f"score distribution stable enough: K-S p={_fmt_p(score.p_value)}, PSI {score.psi:.3f}"
            f" (confirms at p < {policy.p_value} and PSI >= {policy.score_psi})"
        )
    return reasons


# ---------------------------------------------------------------------------------------------
# The HTML page (inline SVG, no JS)
# ---------------------------------------------------------------------------------------------

_REF_COLOUR, _CUR_COLOUR = "#8c8c8c", "#e4572e"
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#222;max-width:1100px}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em}
.verdict{display:inline-block;padding:.3em .8em;border-radius:4px;font-weight:600;color:#fff}
.drift{background:#c0392b}.no_drift{background:#27ae60}.insufficient{background:#7f8c8d}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border-bottom:1px solid #ddd;padding:.35em .7em;text-align:right}
th:first-child,td:first-child{text-align:left} tr.drifted td{background:#fdecea;font-weight:600}
.ctx td,.ctx th{text-align:left;border:none;padding:.1em .8em .1em 0}
.grid{display:flex;flex-wrap:wrap;gap:1.2em} .chart{width:330px} .chart h3{font-size:.95em;margin:.2em 0}
.legend span{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 1em;vertical-align:middle}
.muted{color:#777;font-size:.88em}
"""


def _svg_histogram(hist: Histogram, width: int = 320, height: int = 130) -> str:
    if not hist.labels:
        return '<p class="muted">no data</p>'
    top, bottom, left = 8, 24, 4
    plot_h = height - top - bottom
    n = len(hist.labels)
    slot = (width - 2 * left) / n
    peak = max(max(hist.reference, default=0), max(hist.current, default=0)) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - left}" y2="{top + plot_h}" stroke="#999"/>',
    ]
    bar = max(slot / 2 - 0.5, 0.5)
    for i, label in enumerate(hist.labels):
        x0 = left + i * slot
        for j, (share, colour, side) in enumerate(
            ((hist.reference[i], _REF_COLOUR, "reference"), (hist.current[i], _CUR_COLOUR, "current"))
        ):
            h = plot_h * share / peak
            tip = html.escape(f"{label}: {side} {share:.1%}")
            parts.append(
                f'<rect x="{x0 + j * bar + 0.25:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{tip}</title></rect>'
            )
    if n <= 8:  # categories: name each bar
        for i, label in enumerate(hist.labels):
            text = html.escape(label if len(label) <= 11 else label[:10] + "…")
            x = left + (i + 0.5) * slot
            parts.append(f'<text x="{x:.1f}" y="{height - 8}" font-size="8" text-anchor="middle">{text}</text>')
    else:  # bins: the range
        low, high = hist.labels[0].split(_RANGE)[0], hist.labels[-1].split(_RANGE)[-1]
        parts.append(f'<text x="{left}" y="{height - 8}" font-size="9">{html.escape(low)}</text>')
        parts.append(
            f'<text x="{width - left}" y="{height - 8}" font-size="9" text-anchor="end">{html.escape(high)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _render_html(report: DriftReport, title: str, context: Mapping[str, Any]) -> str:
    e = html.escape
    policy = report.policy
    rows = []
    for f in sorted(report.features, key=lambda f: (not f.drifted, -f.importance)):
        rows.append(
            f'<tr class="{"drifted" if f.drifted else ""}"><td>{e(f.name)}</td><td>{e(f.kind)}</td>'
            f"<td>{f.importance:.3f}</td><td>{e(f.test)} {f.statistic:.3g}</td><td>{_fmt_p(f.p_value)}</td>"
            f"<td>{_fmt_p(f.q_value)}</td><td>{f.psi:.3f}</td>"
            f"<td>{f.missing_reference:.1%} → {f.missing_current:.1%}</td>"
            f"<td>{'yes' if f.significant else 'no'}</td><td>{'DRIFTED' if f.drifted else 'no'}</td></tr>"
        )
    table = (
        '<table class="features"><thead><tr><th>feature</th><th>kind</th><th>importance</th><th>statistic</th>'
        "<th>p-value</th><th>q-value (FDR)</th><th>effect size (PSI)</th><th>missing ref → live</th>"
        "<th>significant</th><th>drifted</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        if rows
        else '<p class="muted">no live rows: nothing to compare</p>'
    )
    charts = []
    if report.score is not None:
        s = report.score
        charts.append(
            f'<div class="chart"><h3>score (model output)</h3>{_svg_histogram(s.histogram)}'
            f'<div class="muted">K-S p={_fmt_p(s.p_value)}, PSI {s.psi:.3f}</div></div>'
        )
    for f in report.features:
        charts.append(
            f'<div class="chart"><h3>{e(f.name)}{" — drifted" if f.drifted else ""}</h3>'
            f'{_svg_histogram(f.histogram)}<div class="muted">p={_fmt_p(f.p_value)}, PSI {f.psi:.3f}, '
            f"importance {f.importance:.3f}</div></div>"
        )
    ctx_rows = "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in context.items())
    verdict_text = {
        "drift": "DRIFT CONFIRMED",
        "no_drift": "NO DRIFT",
        "insufficient": "NO VERDICT: TOO LITTLE DATA",
    }[report.verdict]
    score_line = (
        f"score PSI {report.score.psi:.3f} (K-S p={_fmt_p(report.score.p_value)})" if report.score else "score: n/a"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{e(title)}</h1>
<p><span class="verdict {e(report.verdict)}">{verdict_text}</span>
&nbsp; importance-weighted drift share {report.drift_share:.2f} (confirms at {policy["drift_share"]:.2f}),
{score_line}; {report.n_current:,} live rows vs {report.n_reference:,} reference rows</p>
<table class="ctx">{ctx_rows}</table>
<h2>Why</h2>
<ul>{"".join(f"<li>{e(r)}</li>" for r in report.reasons)}</ul>
<h2>Features</h2>
<p class="muted">A feature drifted if the FDR-corrected test is significant at q &lt; {policy["p_value"]}
and its PSI is at least {policy["min_psi"]}. Numeric: two-sample K-S; categorical: chi-squared over the
spec's levels plus one code for missing/unknown. Missing numeric values are compared as the reference median.</p>
{table}
<h2>Distributions</h2>
<p class="legend"><span style="background:{_REF_COLOUR}"></span>reference (champion's training data)
<span style="background:{_CUR_COLOUR}"></span>live window</p>
<div class="grid">{"".join(charts)}</div>
<p class="muted">Policy: {e(", ".join(f"{k}={v}" for k, v in policy.items()))}</p>
</body></html>
"""


# ---------------------------------------------------------------------------------------------
# Concept drift from labels
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveQuality:
    model_version: str
    n: int  # labelled predictions
    positives: int
    auc: float | None  # None if the window has a single class
    brier: float
    mean_score: float  # calibration: the mean predicted probability ...
    observed_rate: float  # ... against the observed default rate

    @property
    def calibration_gap(self) -> float:
        return self.mean_score - self.observed_rate

    def to_dict(self) -> dict[str, Any]:
        return _jsonable({**asdict(self), "calibration_gap": self.calibration_gap})


def live_quality(labelled: pd.DataFrame) -> dict[str, LiveQuality]:
    """AUC, Brier and calibration per model version, over predictions whose outcome has arrived.

    ``labelled`` has columns score, outcome (the spec's target: 1 or 0; missing = not yet
    known, skipped) and model_version.
    """
    from sklearn.metrics import brier_score_loss, roc_auc_score

    _require_columns(labelled, ("score", "outcome", "model_version"), "the labelled predictions")
    frame = labelled[labelled["outcome"].notna()]
    outcome = pd.to_numeric(frame["outcome"], errors="coerce")
    if outcome.isna().any() or not outcome.isin([0, 1]).all():
        bad = sorted(map(str, frame.loc[~outcome.isin([0, 1]), "outcome"].unique()[:5]))
        raise DriftError(f"outcome must be 0 or 1, got {bad}")
    score = pd.to_numeric(frame["score"], errors="coerce")
    if score.isna().any() or ((score < 0) | (score > 1)).any():
        raise DriftError("score must be a probability in [0, 1] on every labelled row")
    out = {}
    for version, idx in frame.groupby(frame["model_version"].astype(str)).groups.items():
        y, s = outcome.loc[idx].to_numpy(dtype=int), score.loc[idx].to_numpy(dtype="float64")
        out[str(version)] = LiveQuality(
            model_version=str(version),
            n=len(y),
            positives=int(y.sum()),
            auc=float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else None,
            brier=float(brier_score_loss(y, s, pos_label=1)),
            mean_score=float(s.mean()),
            observed_rate=float(y.mean()),
        )
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class ConceptVerdict:
    verdict: str  # "concept_drift" | "no_concept_drift" | "insufficient"
    confirmed: bool
    reason: str
    n: int
    live_auc: float | None
    holdout_auc: float

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


def concept_verdict(quality: LiveQuality | None, holdout_auc: float, policy: DriftPolicy) -> ConceptVerdict:
    """Concept drift if enough labelled live rows show an AUC more than ``max_auc_drop`` below the holdout AUC."""
    floor = holdout_auc - policy.max_auc_drop
    if quality is None or quality.n < policy.min_labelled:
        n = quality.n if quality else 0
        return ConceptVerdict(
            "insufficient",
            False,
            f"{n} labelled live predictions; the policy needs {policy.min_labelled} before judging live AUC",
            n,
            quality.auc if quality else None,
            holdout_auc,
        )
    if quality.auc is None:
        return ConceptVerdict(
            "insufficient",
            False,
            f"{quality.n} labelled live predictions of a single class; AUC is undefined",
            quality.n,
            None,
            holdout_auc,
        )
    if quality.auc < floor:
        reason = (
            f"live AUC {quality.auc:.3f} on {quality.n} labelled predictions is below the holdout AUC"
            f" {holdout_auc:.3f} minus {policy.max_auc_drop} (= {floor:.3f}): what predicts default has changed"
        )
        return ConceptVerdict("concept_drift", True, reason, quality.n, quality.auc, holdout_auc)
    reason = (
        f"live AUC {quality.auc:.3f} on {quality.n} labelled predictions is within {policy.max_auc_drop}"
        f" of the holdout AUC {holdout_auc:.3f}"
    )
    return ConceptVerdict("no_concept_drift", False, reason, quality.n, quality.auc, holdout_auc)


# ---------------------------------------------------------------------------------------------
# The storm guard
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TriggerDecision:
    trigger: bool
    reason: str
    next_allowed: datetime | None = None  # when a confirmed drift could trigger again (None: now, or n/a)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


def _fmt_at(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M} UTC"


def decide_trigger(
    confirmed: bool, now: datetime, past_triggers: Sequence[datetime], policy: DriftPolicy
) -> TriggerDecision:
    """Whether a (confirmed) drift may start a retrain now.

    Not within ``cooldown_hours`` after the last trigger, and at most ``max_retrains_per_week``
    triggers in any trailing 7 days (the window (now - 7 days, now], this one included).
    Triggers after ``now`` (a re-run of an older interval) are ignored: ``now`` is the check's
    own time, e.g. the end of its data interval.
    """
    if not confirmed:
        return TriggerDecision(False, "no confirmed drift: nothing to retrain")
    now = as_utc(now)
    past = sorted(t for t in map(as_utc, past_triggers) if t <= now)
    week = timedelta(days=7)
    if policy.max_retrains_per_week == 0:
        return TriggerDecision(False, "drift confirmed but drift-triggered retraining is off (max_retrains_per_week 0)")
    if past and now - past[-1] < timedelta(hours=policy.cooldown_hours):
        until = past[-1] + timedelta(hours=policy.cooldown_hours)
        return TriggerDecision(
            False,
            f"drift confirmed but in cooldown until {_fmt_at(until)} (last retrain trigger {_fmt_at(past[-1])},"
            f" cooldown {policy.cooldown_hours:g} h)",
            until,
        )
    recent = [t for t in past if t > now - week]
    if len(recent) >= policy.max_retrains_per_week:
        # The slot frees up when enough of the recent triggers leave the 7-day window.
        until = recent[len(recent) - policy.max_retrains_per_week] + week
        return TriggerDecision(
            False,
            f"drift confirmed but {len(recent)} retrains were already triggered in the last 7 days"
            f" (at most {policy.max_retrains_per_week}); next possible at {_fmt_at(until)}",
            until,
        )
    return TriggerDecision(
        True,
        f"drift confirmed: triggering a retrain ({len(recent) + 1} of at most {policy.max_retrains_per_week}"
        f" in the last 7 days; {f'last trigger {_fmt_at(past[-1])}' if past else 'no earlier trigger'})",
    )
