"""The champion's calibration: measured on its holdout at training time, recorded with the model version.

A classifier's score is read as a probability by the label-free quality estimate (CBPE, the
expected accuracy), so how well calibrated it is matters. At training time (``measure``):

- the expected calibration error (ECE, ten equal-count bins) on the **holdout** — binary: the
  score against the positive outcome; multiclass: top-label, the answered class's probability
  against the answer being right;
- above the spec's ``training.max_calibration_error`` (default 0.05) an isotonic map is fitted on
  the **validation** split (never the holdout, which only judges it) and the holdout ECE after it
  is measured too.

The result is logged to the champion's MLflow run (metric ``holdout_ece``, tag
``loopline.calibration``, artifact ``calibration.json``: the isotonic map's knots): it is the
champion's lineage, what the report says about its calibration. The served scores are never changed.
Regressors have no calibration.

What the label-free estimate reads as probabilities is another map (``fit_probability_map``),
fitted at check time on **all** the champion's unseen rows (validation + holdout, labels known):
a logistic curve cubic in the score's logit. Why not the recorded map: an ECE over ten
equal-count bins says little about the *spread* of the probabilities, and the expected AUC
depends on nothing else. A LightGBM model that is a little over- or under-confident at the
tails passes the ECE limit ("well calibrated (ECE 0.017)"), gets no map, and its raw scores put
the estimate 0.01-0.04 AUC off, the same way on every window (measured: -0.019 to +0.012 on
generated tables; ``tests/unit/test_watch.py``). An isotonic map fitted on validation alone
flattens the ranking within its steps (too low) and is over-sharp on the rows it was fitted on
(too high on the reference). Four parameters fitted on thousands of rows are neither: the
estimate on the unseen rows is their realised AUC within sampling noise, and so it is on
windows like them. The map is used only where the unseen rows reject the raw scores as
probabilities (likelihood-ratio test, four degrees of freedom, p < 0.01: ``MAP_NEEDED``); a
champion whose raw scores they cannot tell from right keeps them (on the demo's champion the
map would have cost 0.001 AUC of error on shifted windows for nothing).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from loopline.core.spec import ModelSpec

ARTIFACT = "calibration.json"
TAG = "loopline.calibration"
DEFAULT_LIMIT = 0.05
BINS = 10
MAP_NEEDED = 13.28  # the chi-squared(4) quantile at 0.99: the map's likelihood-ratio gain over the raw scores


def calibration_error(probabilities: np.ndarray, outcomes: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: the row-weighted mean |mean probability - observed rate| over equal-count bins."""
    p, y = np.asarray(probabilities, float), np.asarray(outcomes, float)
    if len(p) == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    error = 0.0
    for chunk in np.array_split(order, min(bins, len(p))):
        if len(chunk):
            error += len(chunk) * abs(float(p[chunk].mean()) - float(y[chunk].mean()))
    return error / len(p)


def hits(rows: pd.DataFrame, spec: ModelSpec) -> np.ndarray:
    """What the score is the probability of: a positive outcome (binary), the answered class being right."""
    outcome = rows["outcome"].to_numpy(float)
    if spec.task == "binary":
        return outcome
    classes = np.array(spec.dataset.classes, dtype=object)
    truth = classes[outcome.astype(int)]
    return (truth == rows["decision"].to_numpy(dtype=object)).astype(float)


@dataclass(frozen=True)
class Calibration:
    """How the champion's scores become probabilities for the estimator; ``method`` "none" or "isotonic"."""

    method: str
    holdout_ece: float  # before any calibration
    limit: float
    calibrated_ece: float | None = None  # on the holdout, after the isotonic map
    fitted_on: str | None = None  # "validation"
    knots_x: tuple[float, ...] = ()
    knots_y: tuple[float, ...] = ()
    source: str = "recorded at training"  # or "fitted at check time" (a champion without a recorded one)

    @property
    def calibrated(self) -> bool:
        return self.method == "isotonic"

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """The isotonic map (linear between knots, clipped at the ends, as scikit-learn predicts it)."""
        scores = np.asarray(scores, float)
        if not self.calibrated:
            return scores
        return np.interp(scores, np.asarray(self.knots_x, float), np.asarray(self.knots_y, float))

    def describe(self) -> str:
        """'well calibrated (ECE 0.021 on holdout)' or 'isotonic on validation (holdout ECE 0.090 → 0.030)'."""
        if self.calibrated:
            after = f" → {self.calibrated_ece:.3f}" if self.calibrated_ece is not None else ""
            return f"isotonic on {self.fitted_on or 'validation'} (holdout ECE {self.holdout_ece:.3f}{after})"
        if self.holdout_ece <= self.limit:
            return f"well calibrated (ECE {self.holdout_ece:.3f} on holdout)"
        return f"poorly calibrated (ECE {self.holdout_ece:.3f} on holdout), no map: validation has a single outcome"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["knots_x"], out["knots_y"] = list(self.knots_x), list(self.knots_y)
        out["text"] = self.describe()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "recorded at training") -> Calibration:
        return cls(
            method=str(data["method"]),
            holdout_ece=float(data["holdout_ece"]),
            limit=float(data.get("limit", DEFAULT_LIMIT)),
            calibrated_ece=None if data.get("calibrated_ece") is None else float(data["calibrated_ece"]),
            fitted_on=data.get("fitted_on"),
            knots_x=tuple(float(v) for v in data.get("knots_x") or ()),
            knots_y=tuple(float(v) for v in data.get("knots_y") or ()),
            source=source,
        )


@dataclass(frozen=True)
class ProbabilityMap:
    """P(hit | score): a logistic curve cubic in the score's (standardised, clipped) logit; see the module docstring."""

    centre: float
    scale: float
    low: float  # the standardised logit is clipped to the range it was fitted on (no cubic extrapolation)
    high: float
    coefficients: tuple[float, float, float]
    intercept: float
    rows: int
    likelihood_ratio: float = float("inf")  # 2 x (log-likelihood with the map - with the raw scores), fitted rows

    @property
    def needed(self) -> bool:
        """Whether the fitted rows reject the raw scores as probabilities (see the module docstring)."""
        return self.likelihood_ratio > MAP_NEEDED

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        z = np.clip((_logit(scores) - self.centre) / self.scale, self.low, self.high)
        c1, c2, c3 = self.coefficients
        eta = self.intercept + z * (c1 + z * (c2 + z * c3))
        return 1.0 / (1.0 + np.exp(-eta))

    def describe(self) -> str:
        if not self.needed:
            return (
                f"the raw scores (the champion's {self.rows:,} unseen rows do not reject them: likelihood ratio"
                f" {self.likelihood_ratio:.1f} <= {MAP_NEEDED} for a logistic map cubic in the score's logit)"
            )
        return (
            f"a logistic map cubic in the score's logit, fitted on the champion's {self.rows:,} unseen rows"
            f" (likelihood ratio {self.likelihood_ratio:.1f} against the raw scores)"
        )


def _logit(scores: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(scores, float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fit_probability_map(scores: np.ndarray, outcomes: np.ndarray) -> ProbabilityMap | None:
    """The estimator's map from scores to probabilities, fitted on labelled unseen rows (None: a single outcome)."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(outcomes, float)
    if len(np.unique(y)) != 2:
        return None
    logit = _logit(scores)
    centre, scale = float(logit.mean()), float(logit.std()) or 1.0
    z = (logit - centre) / scale
    basis = np.column_stack([z, z**2, z**3])
    fit = LogisticRegression(C=1e4, max_iter=2_000).fit(basis, y.astype(int))
    c1, c2, c3 = (float(v) for v in fit.coef_[0])
    fitted = ProbabilityMap(
        centre, scale, float(z.min()), float(z.max()), (c1, c2, c3), float(fit.intercept_[0]), len(y)
    )
    gain = 2 * (_log_likelihood(fitted.probabilities(scores), y) - _log_likelihood(np.asarray(scores, float), y))
    return ProbabilityMap(**{**asdict(fitted), "likelihood_ratio": float(gain)})


def _log_likelihood(probabilities: np.ndarray, outcomes: np.ndarray) -> float:
    q = np.clip(probabilities, 1e-6, 1 - 1e-6)
    return float(np.sum(outcomes * np.log(q) + (1 - outcomes) * np.log(1 - q)))


def measure(
    spec: ModelSpec, valid: pd.DataFrame, holdout: pd.DataFrame, limit: float, source: str = "recorded at training"
) -> Calibration | None:
    """The holdout ECE and, above ``limit``, an isotonic map fitted on the validation answers (None: a regressor).

    ``valid`` / ``holdout``: the champion's answers (``score``, ``decision``) with the label as ``outcome``
    (0/1 or a class index into ``dataset.classes``).
    """
    if spec.task == "regression":
        return None
    holdout_hits = hits(holdout, spec)
    error = calibration_error(holdout["score"].to_numpy(float), holdout_hits)
    valid_hits = hits(valid, spec)
    if not error > limit or len(np.unique(valid_hits)) != 2:
        return Calibration("none", float(error), float(limit), source=source)
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(valid["score"].to_numpy(float), valid_hits)
    fitted = Calibration(
        "isotonic", float(error), float(limit), None, "validation",
        tuple(float(v) for v in iso.X_thresholds_), tuple(float(v) for v in iso.y_thresholds_), source,
    )  # fmt: skip
    after = calibration_error(fitted.probabilities(holdout["score"].to_numpy(float)), holdout_hits)
    return Calibration(**{**asdict(fitted), "calibrated_ece": float(after)})
