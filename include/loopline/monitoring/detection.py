"""Data drift: is the live population still the one the champion learned from?

The live window of the prediction log against the champion's training data
(``run_detector`` / ``check``). Per feature, alibi-detect's
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

alibi-detect does not live in this environment: it pins numpy<2, the stack (Feast) needs numpy>=2.
Its one call (fit, save, load, staleness check, predict of the TabularDrift) runs in
``.venv-drift`` through ``drift_worker.py``, one subprocess per check: float matrices in (npz),
p-values and distances out (JSON), the detector folder in alibi-detect's own format
(``run_detector``; ARCHITECTURE.md, "Two Python environments"). Everything else stays here.
scipy.stats is imported inside the functions that need it: the CLI and DAG files import this
module's names cheaply.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loopline.core.errors import LooplineError
from loopline.core.features import derived_sources
from loopline.core.psi import EPSILON, psi
from loopline.core.spec import DriftPolicy, ModelSpec

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


# What the worker may take, at most: fitting reads a 20k-row reference, the window is bounded by
# CURRENT_MAX_ROWS; almost all of the time is the worker importing alibi-detect (10-20 s at load 9).
WORKER_TIMEOUT_SECONDS = 600.0
WORKER_SCRIPT = Path(__file__).with_name("drift_worker.py")
STDERR_LINES = 15  # of the worker's stderr, in a DriftError
WORKER_PROTOCOL = 1  # drift_worker.PROTOCOL


@dataclass(frozen=True)
class WindowDetection:
    """The TabularDrift's batch prediction for one window: FDR decision, per-feature p-values and statistics."""

    is_drift: bool
    p_values: tuple[float, ...]
    distances: tuple[float, ...]  # K-S statistic (numeric) / chi-squared statistic (categorical)
    threshold: float | None  # the FDR threshold the p-values passed (None: no drift)


@dataclass(frozen=True)
class Detection:
    """What one call of the drift worker answered: how it got the detector, and one prediction per window."""

    detector_dir: Path
    fitted: bool  # this call fitted (and saved) the detector
    stale_reason: str | None  # why the saved detector was not used (None: it was, or there was none)
    windows: tuple[WindowDetection, ...]
    versions: dict[str, str] = field(default_factory=dict)  # numpy and alibi-detect in .venv-drift


def drift_python(python: Path | str | None = None) -> Path:
    """The interpreter of ``.venv-drift``: ``python`` if given, else the setting ``LOOPLINE_DRIFT_PYTHON``."""
    if python is not None:
        return Path(python)
    from loopline.core.settings import get_settings

    return get_settings().drift_python


def run_detector(
    detector_dir: Path,
    reference: pd.DataFrame,
    spec: ModelSpec,
    p_value: float,
    windows: Sequence[pd.DataFrame] = (),
    *,
    python: Path | str | None = None,
    timeout: float = WORKER_TIMEOUT_SECONDS,
) -> Detection:
    """One call of the drift worker: load or fit the TabularDrift at ``detector_dir``, predict each window.

    The detector is fitted on a bounded, seeded sample of ``reference`` (K-S numeric, chi-squared
    categorical, FDR) and saved at ``detector_dir`` in alibi-detect's format; a saved one is reused
    while it matches this reference sample, spec and p-value, and refitted (never trusted) when it
    does not. The caller keys ``detector_dir`` on the champion version, so a detector is fitted once
    per champion. Each window (none: fit only; each non-empty, with the spec's features) is bounded
    and encoded as ``check`` does, so ``check(..., detection=...)`` can take one of the answers.
    Raises DriftError naming the interpreter when ``.venv-drift`` is missing, and with the worker's
    last stderr lines when it fails or takes longer than ``timeout`` seconds.
    """
    _, medians, x_ref = _prepared_reference(reference, spec)
    encoded = []
    for i, window in enumerate(windows):
        _require_columns(window, spec.features.names, f"live window {i}")
        if not len(window):
            raise DriftError(f"live window {i} is empty; the detector predicts non-empty windows only")
        encoded.append(encode(_bounded(window), spec, medians))
    categories = _categories_per_feature(x_ref, spec)
    return _call_worker(Path(detector_dir), x_ref, categories, p_value, encoded, python, timeout)


def _call_worker(
    detector_dir: Path,
    x_ref: np.ndarray,
    categories: Mapping[int, list[int]],
    p_value: float,
    windows: Sequence[np.ndarray],
    python: Path | str | None,
    timeout: float,
) -> Detection:
    import json
    import subprocess
    import tempfile

    interpreter = drift_python(python)
    if not interpreter.is_file():
        raise DriftError(
            f"the drift environment's python {interpreter} does not exist (LOOPLINE_DRIFT_PYTHON); "
            "build it with `make .venv-drift/.loopline-installed`"
        )
    request = {
        "protocol": WORKER_PROTOCOL,
        "detector_dir": str(Path(detector_dir).resolve()),
        "p_val": float(p_value),
        "categories_per_feature": {str(k): [int(v) for v in vals] for k, vals in categories.items()},
        "windows": len(windows),
    }
    arrays = {"request": np.array(json.dumps(request)), "x_ref": np.ascontiguousarray(x_ref, dtype="float64")}
    for i, x_cur in enumerate(windows):
        arrays[f"x_cur_{i}"] = np.ascontiguousarray(x_cur, dtype="float64")
    # -I and no PYTHON*/VIRTUAL_ENV: nothing of this environment (numpy 2, loopline) leaks into the worker's.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(TRANSFORMERS_VERBOSITY="error", TF_CPP_MIN_LOG_LEVEL="3", TOKENIZERS_PARALLELISM="false")
    with tempfile.TemporaryDirectory(prefix="loopline-drift-") as tmp:
        npz, out = Path(tmp) / "request.npz", Path(tmp) / "response.json"
        np.savez(npz, **arrays)
        cmd = [str(interpreter), "-I", str(WORKER_SCRIPT), str(npz), str(out)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        except subprocess.TimeoutExpired as err:
            raise DriftError(
                f"the drift worker ({interpreter}) took longer than {timeout:g} s for {detector_dir}{_tail(err.stderr)}"
            ) from err
        if done.returncode != 0 or not out.is_file():
            raise DriftError(
                f"the drift worker ({interpreter}) failed with exit status {done.returncode} for {detector_dir}"
                f"{_tail(done.stderr)}"
            )
        answer = json.loads(out.read_text())
    if answer.get("stale_reason"):
        log.warning("drift detector at %s was not used (%s); refitted", detector_dir, answer["stale_reason"])
    return Detection(
        detector_dir=Path(detector_dir),
        fitted=bool(answer["fitted"]),
        stale_reason=answer.get("stale_reason"),
        windows=tuple(
            WindowDetection(
                is_drift=bool(w["is_drift"]),
                p_values=tuple(float(p) for p in w["p_val"]),
                distances=tuple(float(d) for d in w["distance"]),
                threshold=None if w["threshold"] is None else float(w["threshold"]),
            )
            for w in answer["windows"]
        ),
        versions=dict(answer.get("versions") or {}),
    )


def _tail(stderr: str | bytes | None) -> str:
    if not stderr:
        return ""
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
    lines = [line for line in text.strip().splitlines() if line.strip()][-STDERR_LINES:]
    return ": " + " | ".join(lines) if lines else ""


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
    detector_dir: Path,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    spec: ModelSpec,
    importances: Mapping[str, float],
    ref_scores: Sequence[float] | np.ndarray | None,
    cur_scores: Sequence[float] | np.ndarray | None,
    policy: DriftPolicy,
    *,
    python: Path | str | None = None,
    detection: WindowDetection | None = None,
) -> DriftReport:
    """Compare the live window with the reference; see the module docstring.

    The TabularDrift lives at ``detector_dir`` (fitted there on first use, refitted when it does not
    match this reference, spec or p-value) and runs in the drift worker (``run_detector``; ``python``
    overrides LOOPLINE_DRIFT_PYTHON). ``detection``: this window's answer from an earlier
    ``run_detector`` call on the same detector (the bench predicts all its windows in one call), so
    no worker runs here. ``current`` may carry extra columns (score, model_version,
    logged_at...); an empty window is "insufficient" (the detector is still fitted, so the next
    window does not pay for it), a window lacking a feature raises.
    Scores are optional: without both sides the score channel is skipped and says so.
    """
    sample, medians, x_ref = _prepared_reference(reference, spec)
    n_current = len(current)
    policy_dict = policy.model_dump()
    if n_current == 0:
        if not (Path(detector_dir) / "config.toml").is_file():  # fit now, so the first real window does not wait
            run_detector(detector_dir, reference, spec, policy.p_value, python=python)
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
    if detection is None:
        categories = _categories_per_feature(x_ref, spec)
        worker = _call_worker(
            Path(detector_dir), x_ref, categories, policy.p_value, [x_cur], python, WORKER_TIMEOUT_SECONDS
        )
        detection = worker.windows[0]
    if len(detection.p_values) != x_cur.shape[1]:
        raise DriftError(f"the detection has {len(detection.p_values)} p-values for {x_cur.shape[1]} features")
    detected = detection
    p_values = np.asarray(detected.p_values, dtype="float64")
    statistics = np.asarray(detected.distances, dtype="float64")
    threshold = detected.threshold if detected.is_drift else None
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
