"""Data drift: is the live population still the one the champion learned from?

The live window of the prediction log against the champion's training data
(``fit_detector`` / ``load_or_fit`` / ``check``). Per feature, alibi-detect's
``TabularDrift`` runs a two-sample K-S test (numeric) or a chi-squared test (categorical),
with the Benjamini-Hochberg FDR correction across features. Statistical significance
alone is not enough: on large windows a test finds differences nobody cares about, so a
feature counts as *drifted* only if it is significant **and** its effect size reaches a floor
that knows the window's size (``effect_floor``):

- numeric inputs: the normalised Wasserstein distance, i.e. how far the values moved in
  reference standard deviations (a mean shift of 0.2 SD scores 0.2; Evidently's default for
  reference samples over 1,000 rows). Floor: ``policy.min_shift`` (what is worth telling anyone
  however many rows show it) or ``policy.noise_multiple`` times the distance sampling noise
  alone gives, on average, between a reference of m rows and a window of n, whichever is
  larger. That noise is known in closed form: the two empirical CDFs differ by
  sqrt(1/n + 1/m) times a Brownian bridge B(F(x)), and E|B(t)| = sqrt(2/pi) sqrt(t(1-t)), so
  E[W1] = sqrt(2/pi) sqrt(1/n + 1/m) integral sqrt(F(1-F)) dx, read off the reference sample
  (``expected_null_shift``). A 2,000-row window against 20,000 reference rows has noise about
  0.025 SD, so three times that (0.075 SD) is the floor there: a 0.1 SD move is caught, noise is
  not; a 200-row window needs 0.25 SD; a million rows need ``min_shift``.
- categorical inputs: the PSI over the levels, with the same rule: ``policy.min_psi`` or
  ``noise_multiple`` times PSI's expectation under no shift, (k - 1)(1/n + 1/m) for k levels.

One drifted feature makes the verdict ``feature_drift``; the report says how much of the
model's importance the drifted features
carry. The score distribution is compared too (K-S p < ``policy.p_value`` and PSI >=
``policy.score_psi`` = *shifted*): the score is the task's (``loopline.core.tasks``): a
probability, a predicted value, or the predicted class's probability.

Whether moved inputs matter to the model is judged beside it, in ``impact`` (estimated
quality and the answers' mix); ``concept`` judges live quality once labels arrive,
``verdicts`` grades the check, ``retrain_policy`` is the storm guard and ``report_page``
renders the report as a self-contained HTML page (it depends on this module, never the reverse).

Each input also carries what a person reads first: a numeric one its mean and median on both
sides and the *signed* shift (the mean's move in reference SDs: + is up), a categorical one each
level's share on both sides (its histogram); the effect size the rule judges stays the unsigned
distance.

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

import logging
import math
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from loopline.core.errors import LooplineError
from loopline.core.features import derived_sources
from loopline.core.psi import EPSILON, psi
from loopline.core.spec import DriftPolicy, ModelSpec

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
RANGE = " to "  # numeric bin labels: "low to high" (a dash would clash with negative numbers)
MISSING_LABEL = "(missing/unknown)"


VERDICTS = ("feature_drift", "stable", "insufficient")  # of the input data alone


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
    codes = pd.Index(list(levels), dtype=object).get_indexer(values.to_numpy(dtype=object))
    return np.where(codes < 0, len(levels), codes).astype("float64")


def numeric_values(values: pd.Series, fill: float) -> np.ndarray:
    """The column as float64, anything not a number (or missing) as ``fill``; no pandas round trip for numbers."""
    if pd.api.types.is_numeric_dtype(values.dtype):
        out = values.to_numpy(dtype="float64", na_value=np.nan)
    else:
        out = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return np.where(np.isnan(out), fill, out)


def encode(frame: pd.DataFrame, spec: ModelSpec, medians: Mapping[str, float]) -> np.ndarray:
    """The float matrix alibi-detect takes: spec features in spec order (see the module docstring)."""
    _require_columns(frame, spec.features.names, "the data to encode")
    columns = []
    for name in spec.features.numeric:
        columns.append(numeric_values(frame[name], medians[name]))
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

    Same epsilon floor as ``loopline.core.psi``, so a category that is new in the current window
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

    labels = tuple(f"{_fmt_num(a)}{RANGE}{_fmt_num(b)}" for a, b in zip(edges[:-1], edges[1:], strict=True))
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


def expected_null_shift(reference: np.ndarray, n: int) -> float:
    """E[normalised Wasserstein distance] between ``reference`` and an n-row sample of the same distribution.

    sqrt(2/pi) sqrt(1/n + 1/m) integral sqrt(F(1-F)) dx / sd (see the module docstring), with F the
    reference's empirical CDF and m its size: what sampling noise alone makes the distance, on average.
    """
    ref = np.sort(np.asarray(reference, dtype="float64"))
    ref = ref[~np.isnan(ref)]
    m = len(ref)
    sd = float(ref.std()) if m else 0.0
    if m < 2 or n < 1 or sd == 0:
        return 0.0
    f = np.arange(1, m) / m
    spread = float(np.sum(np.sqrt(f * (1 - f)) * np.diff(ref)))
    return math.sqrt(2 / math.pi) * math.sqrt(1 / n + 1 / m) * spread / sd


def normalised_wasserstein(reference: np.ndarray, current: np.ndarray) -> float:
    """Wasserstein-1 distance between the samples in reference SDs (inf if only the reference is constant)."""
    from scipy.stats import wasserstein_distance

    ref, cur = np.asarray(reference, dtype="float64"), np.asarray(current, dtype="float64")
    ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    if not len(ref) or not len(cur):
        return 0.0
    distance = float(wasserstein_distance(ref, cur))
    sd = float(ref.std())
    if sd == 0:
        return 0.0 if distance == 0 else math.inf
    return distance / sd


def effect_floor(
    kind: str, policy: DriftPolicy, n_reference: int, n_current: int, null_shift: float = 0.0, levels: int = 2
) -> float:
    """The effect size a significant input must reach to count as drifted, for this window's size.

    Numeric (``null_shift``: ``expected_null_shift`` for this window): max(``min_shift``,
    ``noise_multiple`` x null_shift). Categorical with ``levels`` categories: max(``min_psi``,
    ``noise_multiple`` x (levels - 1)(1/n + 1/m)), PSI's expectation under no shift.
    """
    if kind == "numeric":
        return max(policy.min_shift, policy.noise_multiple * null_shift)
    noise = max(levels - 1, 1) * (1 / max(n_current, 1) + 1 / max(n_reference, 1))
    return max(policy.min_psi, policy.noise_multiple * noise)


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
    psi: float  # population stability index (the effect size of a categorical input; shown for all)
    shift: float | None  # numeric: normalised Wasserstein distance, in reference SDs (the effect size); else None
    effect_floor: float  # the effect size (shift, or PSI for a categorical) needed here: see effect_floor()
    drifted: bool  # significant and the effect size >= effect_floor
    missing_reference: float  # share of missing (numeric) or missing/unknown (categorical) values
    missing_current: float
    histogram: Histogram = field(repr=False)  # categorical: each level's share on both sides
    # numeric: where the values are, on both sides (missing values left out), and the signed move of the mean
    reference_mean: float | None = None
    current_mean: float | None = None
    reference_median: float | None = None
    current_median: float | None = None
    signed_shift: float | None = None  # (live mean - reference mean) / reference SD: + up, - down

    def level_shares(self) -> list[tuple[str, float, float]]:
        """A categorical input's (level, reference share, live share), largest move first (empty: numeric)."""
        if self.kind != "categorical":
            return []
        rows = zip(self.histogram.labels, self.histogram.reference, self.histogram.current, strict=True)
        return sorted(rows, key=lambda r: -abs(r[2] - r[1]))


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
    verdict: str  # "feature_drift" | "stable" | "insufficient" (the inputs alone; see verdicts for the check's)
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
        return jsonable(asdict(self))

    def feature_rows(self) -> list[dict[str, Any]]:
        """The per-feature table without histograms (compact; for ``loopline_drift_checks.features``)."""
        keep = (
            "name", "kind", "importance", "statistic", "p_value", "q_value", "significant", "psi", "shift",
            "effect_floor", "drifted", "signed_shift", "reference_mean", "current_mean", "reference_median",
            "current_median",
        )  # fmt: skip
        return [jsonable({k: getattr(f, k) for k in keep}) for f in self.features]

    def summary(self) -> str:
        head = {
            "feature_drift": "inputs moved",
            "stable": "inputs stable",
            "insufficient": "no verdict (too little data)",
        }[self.verdict]
        parts = [f"{self.model}: {head}"]
        if self.features:
            drifted = self.drifted_features
            listed = ", ".join(drifted[:4]) + (", ..." if len(drifted) > 4 else "")
            parts.append(
                f"drifted features {len(drifted)}/{len(self.features)} ({listed or 'none'})"
                f", carrying {self.drift_share:.2f} of the model's importance"
            )
        if self.score is not None:
            parts.append(f"score PSI {self.score.psi:.3f}, K-S p={fmt_p(self.score.p_value)}")
        parts.append(f"{self.n_current:,} live rows vs {self.n_reference:,} reference rows")
        return "; ".join(parts)


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def fmt_p(p: float) -> str:
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
    result = ks_2samp(ref, cur, method="asymp")  # scipy's exact p-value costs tens of ms at these sizes
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


def _located(ref: np.ndarray, cur: np.ndarray) -> dict[str, float | None]:
    """Mean and median on both sides (missing values left out) and the mean's signed move in reference SDs."""
    ref, cur = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    if not len(ref) or not len(cur):
        return {}
    ref_mean, cur_mean, sd = float(ref.mean()), float(cur.mean()), float(ref.std())
    signed = (
        (cur_mean - ref_mean) / sd
        if sd > 0
        else (0.0 if cur_mean == ref_mean else math.copysign(math.inf, cur_mean - ref_mean))
    )
    return {
        "reference_mean": ref_mean, "current_mean": cur_mean, "reference_median": float(np.median(ref)),
        "current_median": float(np.median(cur)), "signed_shift": signed,
    }  # fmt: skip


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
            shift = normalised_wasserstein(ref_col, cur_col)
            floor = effect_floor(
                "numeric", policy, len(ref_col), len(cur_col), expected_null_shift(ref_col, len(cur_col))
            )
            ref_raw = pd.to_numeric(sample[name], errors="coerce").to_numpy(dtype="float64")
            cur_raw = pd.to_numeric(current[name], errors="coerce").to_numpy(dtype="float64")
            missing_ref, missing_cur = float(np.isnan(ref_raw).mean()), float(np.isnan(cur_raw).mean())
            histogram = _numeric_histogram(ref_raw, cur_raw)
            located = _located(ref_raw, cur_raw)
        else:
            levels = spec.features.categorical[name]
            effect = categorical_psi(ref_col, cur_col)
            shift = None
            seen = len(np.union1d(np.unique(ref_col), np.unique(cur_col)))
            floor = effect_floor("categorical", policy, len(ref_col), len(cur_col), levels=seen)
            missing_ref = float(np.mean(ref_col == len(levels)))
            missing_cur = float(np.mean(cur_col == len(levels)))
            histogram = _categorical_histogram(ref_col, cur_col, levels)
            located = {}
        significant = threshold is not None and bool(p_values[i] < threshold)
        size = shift if shift is not None else effect
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
                shift=shift,
                effect_floor=floor,
                drifted=bool(significant and size >= floor),
                missing_reference=missing_ref,
                missing_current=missing_cur,
                histogram=histogram,
                **located,
            )
        )
    drift_share = float(sum(f.importance for f in features if f.drifted))
    score = (
        _score_drift(ref_scores, cur_scores, policy)
        if _usable_scores(ref_scores) and _usable_scores(cur_scores)
        else None
    )

    by_data = any(f.drifted for f in features)
    by_score = score is not None and score.shifted
    enough = n_current >= policy.min_window
    reasons = _reasons(features, drift_share, score, policy, n_current, enough, by_score)
    if len(current) < n_current:
        reasons.append(
            f"the window's {n_current:,} rows were compared as a seeded sample of {len(current):,}"
            f" (against {len(sample):,} reference rows more would add almost no power)"
        )
    verdict = "insufficient" if not enough else ("feature_drift" if by_data else "stable")
    return DriftReport(
        model=spec.name,
        verdict=verdict,
        confirmed=verdict == "feature_drift",
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
    by_score: bool,
) -> list[str]:
    reasons = []
    if not enough:
        reasons.append(
            f"only {n_current:,} predictions in the window; the policy needs at least {policy.min_window:,}"
            " before it judges (the statistics below are for information)"
        )
    drifted = sorted((f for f in features if f.drifted), key=lambda f: -f.importance)
    rule = (
        f"FDR q < {policy.p_value} and an effect beyond both min_shift {policy.min_shift} SD (numeric) or"
        f" min_psi {policy.min_psi} (categorical) and {policy.noise_multiple:g}x what noise gives at this window size"
    )
    if drifted:
        listed = ", ".join(f"{f.name} ({effect_text(f)}, importance {f.importance:.2f})" for f in drifted)
        reasons.append(
            f"{len(drifted)} of {len(features)} features drifted ({rule}): {listed};"
            f" they carry {drift_share:.2f} of the model's importance"
        )
    else:
        reasons.append(f"no feature drifted ({rule})")
    small = [f for f in features if f.significant and not f.drifted]
    if small:
        reasons.append(
            f"{len(small)} feature(s) differ significantly but with an effect below the floor (not counted): "
            + ", ".join(f"{f.name} ({effect_text(f)})" for f in small)
        )
    if score is None:
        reasons.append("score drift not checked: no scores given for both the reference and the window")
    elif by_score:
        reasons.append(
            f"the score distribution shifted: K-S p={fmt_p(score.p_value)} < {policy.p_value}"
            f" and PSI {score.psi:.3f} >= {policy.score_psi}"
        )
    else:
        reasons.append(
            f"score distribution stable enough: K-S p={fmt_p(score.p_value)}, PSI {score.psi:.3f}"
            f" (confirms at p < {policy.p_value} and PSI >= {policy.score_psi})"
        )
    return reasons


def effect_text(feature: FeatureDrift) -> str:
    """A feature's move in words, signed, with where it was and is, and its effect size against the floor:
    "mean +0.31 SD (mean 41.2 → 45.1, median 40 → 44), shift 0.312 SD, floor 0.075" or, for a categorical,
    "south 25% → 50% (+25 points), PSI 0.150, floor 0.100"."""
    if feature.shift is not None:
        where = ""
        if feature.signed_shift is not None:
            where = (
                f"mean {feature.signed_shift:+.2f} SD (mean {_fmt_num(feature.reference_mean)} →"
                f" {_fmt_num(feature.current_mean)}, median {_fmt_num(feature.reference_median)} →"
                f" {_fmt_num(feature.current_median)}), "
            )
        return f"{where}shift {feature.shift:.3f} SD, floor {feature.effect_floor:.3f}"
    moved = feature.level_shares()[:1]
    where = "".join(f"{level} {a:.0%} → {b:.0%} ({(b - a) * 100:+.0f} points), " for level, a, b in moved)
    return f"{where}PSI {feature.psi:.3f}, floor {feature.effect_floor:.3f}"
