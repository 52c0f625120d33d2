"""Task types: what binary classification, regression and multiclass mean at every station.

One object per task type answers every question a station asks of a model's task, so no
station branches on the task itself:

- training: the LightGBM objective and early-stopping metric, the labels, the holdout metrics
  (and which way each one is better, which is what the quality gate's keys are made of);
- serving: what one row's answer is (``score``, ``decision``, class ``probabilities``), the
  fields a client reads it in (``answer_fields``, ``answer``: the service's JSON and the batch-scored
  file alike) and which of LightGBM's per-row contributions explain it (reason codes);
- rollout and monitoring: how far two windows of answers moved apart (output shift), and the
  quality of labelled live answers (``live_metric``, in the same units as the holdout's).

The uniform answer frame every station reads has ``score`` (binary: the positive class's
probability; regression: the prediction; multiclass: the predicted class's probability) and
``decision`` (binary: the spec's decision label; regression: none; multiclass: the class).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from loopline.core.errors import LooplineError

if TYPE_CHECKING:
    import pandas as pd

    from loopline.core.spec import ModelSpec

TaskName = Literal["binary", "regression", "multiclass"]
HIGHER, LOWER = "higher", "lower"  # which way a metric is better
BOUNDED = "bounded"  # neither way is better (a decision share): min_ and max_ keys, no tolerance against the champion
EPSILON = 1e-4  # floor for shares in a categorical PSI
Probabilities = list[dict[str, float]] | None  # multiclass: per row, class -> probability


class LabelError(LooplineError, ValueError):
    """Target values the model's task cannot use (e.g. 2 in a binary target, a class not in the spec)."""


@dataclass(frozen=True)
class Outputs:
    score: np.ndarray  # (n,) float
    decision: np.ndarray | None  # (n,) labels, or None (regression)
    probabilities: np.ndarray | None = None  # (n, classes) for multiclass


def _psi_shares(ref: np.ndarray, cur: np.ndarray) -> float:
    ref, cur = np.maximum(ref, EPSILON), np.maximum(cur, EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def categorical_psi(reference: Any, current: Any) -> float:
    """PSI over the categories either side has (shares floored at ``EPSILON``)."""
    import pandas as pd

    ref = pd.Series(np.asarray(reference, dtype=object)).value_counts(normalize=True)
    cur = pd.Series(np.asarray(current, dtype=object)).value_counts(normalize=True)
    levels = ref.index.union(cur.index)
    return _psi_shares(ref.reindex(levels, fill_value=0).to_numpy(), cur.reindex(levels, fill_value=0).to_numpy())


class Task:
    """Behaviour shared by the task types; subclasses fill in what differs."""

    name: ClassVar[TaskName]
    metrics: ClassVar[dict[str, str]]  # holdout metric -> HIGHER | LOWER is better
    objectives: ClassVar[tuple[str, ...]]  # LightGBM objectives a spec may choose
    early_stopping_metric: ClassVar[str]  # LightGBM's name for the validation metric
    live_metric: ClassVar[str]  # judged on labelled live answers (canary gate, concept drift)
    ranges: ClassVar[dict[str, tuple[float, float]]] = {}  # metrics with a bounded range: a gate key must lie in it
    default_gate: ClassVar[dict[str, float]]  # the tolerances `loopline onboard` writes; its floors without a baseline
    output_name: ClassVar[str]  # what the answer's number is called in the reports

    # -- training -----------------------------------------------------------------------------
    def lgb_params(self, spec: ModelSpec) -> dict[str, Any]:
        return {
            "objective": spec.training.params.get("objective", self.objectives[0]),
            "metric": self.early_stopping_metric,
        }

    def labels(self, values: pd.Series, spec: ModelSpec) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def stored_target(self, values: pd.Series) -> pd.Series:
        """The target as the dataset stores it (missing stays missing: a row whose outcome is not known yet).

        Plain float64 with NaN, like the numeric features: GE's type checks misread pandas' Float64.
        """
        import pandas as pd

        return pd.to_numeric(values).astype("float64")

    def enough_variety(self, labels: np.ndarray) -> bool:
        """Can a window with these labels train or evaluate a model?"""
        return len(np.unique(labels)) >= 2

    def holdout_metrics(self, labels: np.ndarray, raw: np.ndarray, spec: ModelSpec) -> dict[str, float]:
        raise NotImplementedError  # pragma: no cover - abstract

    # -- serving ------------------------------------------------------------------------------
    def outputs(self, raw: np.ndarray, spec: ModelSpec) -> Outputs:  # pragma: no cover - abstract
        raise NotImplementedError

    def explained(self, contributions: np.ndarray, raw: np.ndarray, spec: ModelSpec) -> np.ndarray:
        """Per row, the contribution of each feature to the answer (bias column dropped); larger = more reason."""
        return contributions[:, :-1]

    def answer_fields(self, spec: ModelSpec) -> dict[str, tuple[Any, Any]]:
        """The answer's own fields as pydantic field definitions: the service's answer schema is made of them."""
        raise NotImplementedError  # pragma: no cover - abstract

    def answer(self, score: np.ndarray, decision: np.ndarray, probabilities: Probabilities) -> dict[str, list]:
        """Per field of ``answer_fields``, its values for every row (plain Python values, in the rows' order).

        The one place where the uniform answer (``score``, ``decision``, ``probabilities``) becomes what a
        client reads: the HTTP answer and the batch-scored file's columns are both made here.
        """
        raise NotImplementedError  # pragma: no cover - abstract

    # -- rollout and monitoring -----------------------------------------------------------------
    def output_shift(self, reference: pd.DataFrame, current: pd.DataFrame) -> float:
        """PSI between two windows of answers (columns ``score``, ``decision``)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def output_bins(self, spec: ModelSpec) -> int:
        """Bins of ``output_shift``: two samples of one distribution show PSI of about (bins - 1)(1/n + 1/m)."""
        return 10

    def describe_shift(self, reference: pd.DataFrame, current: pd.DataFrame) -> str:
        """The shift in words a person reads in a rollout step or a drift report."""
        delta = float(current["score"].astype(float).mean() - reference["score"].astype(float).mean())
        return f"mean {self.output_name} shift {delta:+.3g}"

    def output_test(self, reference: pd.DataFrame, current: pd.DataFrame) -> float:
        """p-value of "same distribution of answers" (K-S on the score; chi-squared on classes)."""
        from scipy.stats import ks_2samp

        return float(ks_2samp(reference["score"].to_numpy(float), current["score"].to_numpy(float)).pvalue)

    def live_quality(self, labelled: pd.DataFrame, spec: ModelSpec) -> float | None:
        """``live_metric`` on answers whose outcome is known (column ``outcome``); None if not computable."""
        raise NotImplementedError  # pragma: no cover - abstract

    def quality_drop(self, live: float, reference: float) -> float:
        """How much worse ``live`` is than ``reference``, in the live metric's units (positive = worse)."""
        return reference - live if self.metrics[self.live_metric] == HIGHER else live - reference

    # -- the gate's keys ------------------------------------------------------------------------
    def gate_problems(self, gate: dict[str, float]) -> list[str]:
        """What is wrong with a spec's quality_gate for this task (empty: nothing)."""
        allowed, problems = self.gate_keys(), []
        unknown = sorted(set(gate) - set(allowed))
        if unknown:
            problems.append(
                f"quality_gate: {unknown} are not gate keys of a {self.name} model; allowed: {', '.join(allowed)}"
            )
        if not any(k.startswith(("min_", "max_")) for k in gate):
            problems.append("quality_gate needs at least one absolute floor or ceiling (a min_ or max_ key)")
        for key, value in gate.items():
            if key.endswith("_tolerance") and value < 0:
                problems.append(f"quality_gate.{key}: a tolerance must be >= 0, got {value}")
            elif key.startswith(("min_", "max_")) and key[4:] in self.ranges:
                low, high = self.ranges[key[4:]]
                if not low <= value <= high:
                    problems.append(f"quality_gate.{key}: {key[4:]} lies in [{low}, {high}], got {value}")
        return problems

    def gate_keys(self) -> list[str]:
        bounds = [
            key
            for m, way in self.metrics.items()
            for key in ([f"min_{m}", f"max_{m}"] if way == BOUNDED else [f"{'min' if way == HIGHER else 'max'}_{m}"])
        ]
        return sorted(bounds + [f"{m}_tolerance" for m, way in self.metrics.items() if way != BOUNDED])

    def baseline_checks(self, metrics: dict[str, float]) -> list[tuple[str, float, float, bool]]:
        """Floors no spec can lower: the model beats answering the same thing to everyone (name, value, bound, passed).

        Each check is skipped only when the holdout metrics it needs are absent (metrics computed
        before they existed); ``holdout_metrics`` always gives them.
        """
        return []


class BinaryTask(Task):
    name = "binary"
    metrics = {
        "auc": HIGHER,
        "ks": HIGHER,
        "brier": LOWER,
        "log_loss": LOWER,
        "precision_at_threshold": HIGHER,
        "recall_at_threshold": HIGHER,
        # The share of holdout rows decided positive at the threshold: min_decision_share / max_decision_share.
        "decision_share": BOUNDED,
    }
    ranges = {
        m: (0.0, 1.0) for m in ("auc", "ks", "brier", "precision_at_threshold", "recall_at_threshold", "decision_share")
    }
    objectives = ("binary", "cross_entropy")
    early_stopping_metric = "auc"
    live_metric = "auc"
    default_gate = {"min_auc": 0.6, "max_brier": 0.25, "auc_tolerance": 0.005, "brier_tolerance": 0.005}
    output_name = "score"

    def stored_target(self, values: pd.Series) -> pd.Series:
        import pandas as pd

        return pd.to_numeric(values).astype("Int8")

    def labels(self, values: pd.Series, spec: ModelSpec) -> np.ndarray:
        import pandas as pd

        numbers = pd.to_numeric(values, errors="coerce")
        bad = values[~numbers.isin([0, 1])]
        if len(bad):
            raise LabelError(
                f"{spec.dataset.target} must be 0 or 1 for a binary model; found {sorted(map(str, bad.unique()))[:5]}"
            )
        return numbers.astype(int).to_numpy()

    def holdout_metrics(self, labels: np.ndarray, raw: np.ndarray, spec: ModelSpec) -> dict[str, float]:
        from sklearn.metrics import brier_score_loss, log_loss, precision_score, recall_score, roc_auc_score

        decided = (raw >= spec.training.decision_threshold).astype(int)
        return {
            "auc": float(roc_auc_score(labels, raw)),
            "ks": ks_statistic(labels, raw),
            "brier": float(brier_score_loss(labels, raw)),
            "log_loss": float(log_loss(labels, np.clip(raw, 1e-15, 1 - 1e-15), labels=[0, 1])),
            "precision_at_threshold": float(precision_score(labels, decided, zero_division=0)),
            "recall_at_threshold": float(recall_score(labels, decided, zero_division=0)),
            "positive_decision_rate": float(decided.mean()),
            "decision_share": float(decided.mean()),
            "positive_rate": float(np.mean(labels)),
            "rows": float(len(labels)),
        }

    def baseline_checks(self, metrics: dict[str, float]) -> list[tuple[str, float, float, bool]]:
        """Both decisions are given: the share of holdout rows decided positive is strictly between 0 and 1.

        A model answering one decision to every row (a threshold above or below every score) fails,
        whatever its AUC. How good the decisions must be is the spec's ``min_precision_at_threshold``
        / ``min_recall_at_threshold`` (onboarding writes them from a baseline): a fixed "better than
        the base rate" here would reject sound models by chance on a holdout of a few dozen rows.
        """
        if "decision_share" not in metrics:
            return []
        share = metrics["decision_share"]
        return [("decision_share_above_0", share, 0.0, share > 0), ("decision_share_below_1", share, 1.0, share < 1)]

    def outputs(self, raw: np.ndarray, spec: ModelSpec) -> Outputs:
        labels = spec.training.decisions
        decision = np.where(raw >= spec.training.decision_threshold, labels.at_or_above, labels.below)
        return Outputs(score=raw.astype("float64"), decision=decision)

    def answer_fields(self, spec: ModelSpec) -> dict[str, tuple[Any, Any]]:
        from pydantic import Field

        decisions = spec.training.decisions
        return {
            "score": (float, Field(description="probability of the positive outcome")),
            "decision": (Literal[decisions.below, decisions.at_or_above], ...),  # type: ignore[valid-type]
        }

    def answer(self, score: np.ndarray, decision: np.ndarray, probabilities: Probabilities) -> dict[str, list]:
        return {"score": score.tolist(), "decision": decision.tolist()}

    def output_bins(self, spec: ModelSpec) -> int:
        from loopline.core.psi import SCORE_BANDS

        return len(SCORE_BANDS) - 1

    def output_shift(self, reference: pd.DataFrame, current: pd.DataFrame) -> float:
        from loopline.core.psi import score_psi

        return score_psi(reference["score"].to_numpy(float), current["score"].to_numpy(float))

    def live_quality(self, labelled: pd.DataFrame, spec: ModelSpec) -> float | None:
        from sklearn.metrics import roc_auc_score

        y = labelled["outcome"].astype(float).round().astype(int).to_numpy()
        if len(np.unique(y)) < 2:
            return None
        return float(roc_auc_score(y, labelled["score"].astype(float)))


class RegressionTask(Task):
    name = "regression"
    metrics = {"rmse": LOWER, "mae": LOWER, "r2": HIGHER, "smape": LOWER}
    ranges = {"r2": (-np.inf, 1.0), "smape": (0.0, 2.0)}
    objectives = ("regression", "regression_l1", "huber", "fair", "poisson", "quantile", "mape", "gamma", "tweedie")
    early_stopping_metric = "l2"
    live_metric = "smape"  # scale-free, so one tolerance reads the same for any target's units
    default_gate = {"min_r2": 0.3, "r2_tolerance": 0.01, "smape_tolerance": 0.01}
    output_name = "prediction"

    def labels(self, values: pd.Series, spec: ModelSpec) -> np.ndarray:
        import pandas as pd

        numbers = pd.to_numeric(values, errors="coerce")
        bad = values[numbers.isna() | ~np.isfinite(numbers.fillna(0))]
        if len(bad):
            raise LabelError(
                f"{spec.dataset.target} must be a finite number for a regression model;"
                f" found {sorted(map(str, bad.unique()))[:5]}"
            )
        return numbers.astype(float).to_numpy()

    def enough_variety(self, labels: np.ndarray) -> bool:
        return len(labels) >= 2 and float(np.std(labels)) > 0

    def holdout_metrics(self, labels: np.ndarray, raw: np.ndarray, spec: ModelSpec) -> dict[str, float]:
        from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

        return {
            "rmse": float(np.sqrt(mean_squared_error(labels, raw))),
            "mae": float(mean_absolute_error(labels, raw)),
            "r2": float(r2_score(labels, raw)),
            "smape": smape(labels, raw),
            # predicting the holdout's own mean for every row: the error any model must beat
            "baseline_rmse": float(np.std(labels)),
            "target_mean": float(np.mean(labels)),
            "prediction_mean": float(np.mean(raw)),
            "rows": float(len(labels)),
        }

    def baseline_checks(self, metrics: dict[str, float]) -> list[tuple[str, float, float, bool]]:
        """The model's errors are smaller than predicting the mean for every row (R² above 0)."""
        if "rmse" not in metrics or "baseline_rmse" not in metrics:
            return []
        rmse, baseline = metrics["rmse"], metrics["baseline_rmse"]
        return [("rmse_below_mean_baseline", rmse, baseline, rmse < baseline)]

    def outputs(self, raw: np.ndarray, spec: ModelSpec) -> Outputs:
        return Outputs(score=raw.astype("float64"), decision=None)

    def answer_fields(self, spec: ModelSpec) -> dict[str, tuple[Any, Any]]:
        from pydantic import Field

        return {"prediction": (float, Field(description=f"predicted {spec.dataset.target}"))}

    def answer(self, score: np.ndarray, decision: np.ndarray, probabilities: Probabilities) -> dict[str, list]:
        return {"prediction": score.tolist()}

    def explained(self, contributions: np.ndarray, raw: np.ndarray, spec: ModelSpec) -> np.ndarray:
        return np.abs(contributions[:, :-1])  # what moved this prediction most, up or down

    def output_shift(self, reference: pd.DataFrame, current: pd.DataFrame) -> float:
        from loopline.core.psi import psi

        return psi(reference["score"].to_numpy(float), current["score"].to_numpy(float))

    def live_quality(self, labelled: pd.DataFrame, spec: ModelSpec) -> float | None:
        if labelled.empty:
            return None
        return smape(labelled["outcome"].to_numpy(float), labelled["score"].to_numpy(float))


class MulticlassTask(Task):
    name = "multiclass"
    # macro_recall (balanced accuracy): 1/k for a model that answers one class to every row.
    metrics = {"log_loss": LOWER, "accuracy": HIGHER, "macro_f1": HIGHER, "macro_recall": HIGHER}
    ranges = {"accuracy": (0.0, 1.0), "macro_f1": (0.0, 1.0), "macro_recall": (0.0, 1.0)}
    objectives = ("multiclass", "multiclassova")
    early_stopping_metric = "multi_logloss"
    live_metric = "accuracy"
    default_gate = {"min_macro_f1": 0.3, "macro_f1_tolerance": 0.01, "log_loss_tolerance": 0.02}
    output_name = "class"

    def lgb_params(self, spec: ModelSpec) -> dict[str, Any]:
        return {**super().lgb_params(spec), "num_class": len(spec.dataset.classes or ())}

    def stored_target(self, values: pd.Series) -> pd.Series:
        import pandas as pd

        names = pd.Series(class_names(values), index=values.index, dtype="string")
        return names.where(values.notna(), pd.NA)

    def labels(self, values: pd.Series, spec: ModelSpec) -> np.ndarray:
        classes = list(spec.dataset.classes or ())
        index = {c: i for i, c in enumerate(classes)}
        names = class_names(values)
        unknown = sorted(set(names) - set(index))
        if unknown:
            raise LabelError(f"{spec.dataset.target} has values not in dataset.classes {classes}: {unknown[:5]}")
        return np.array([index[n] for n in names], dtype=int)

    def holdout_metrics(self, labels: np.ndarray, raw: np.ndarray, spec: ModelSpec) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, f1_score, log_loss, recall_score

        k = raw.shape[1]
        predicted = raw.argmax(axis=1)
        majority = np.full(len(labels), np.bincount(labels, minlength=k).argmax())
        macro = {"average": "macro", "labels": list(range(k)), "zero_division": 0}
        return {
            "log_loss": float(log_loss(labels, np.clip(raw, 1e-15, 1), labels=list(range(k)))),
            "accuracy": float(accuracy_score(labels, predicted)),
            "macro_f1": float(f1_score(labels, predicted, **macro)),
            "macro_recall": float(recall_score(labels, predicted, **macro)),
            # answering the holdout's most frequent class to every row: the macro-F1 any model must beat
            "baseline_macro_f1": float(f1_score(labels, majority, **macro)),
            "predicted_classes": float(len(np.unique(predicted))),
            "rows": float(len(labels)),
        }

    def baseline_checks(self, metrics: dict[str, float]) -> list[tuple[str, float, float, bool]]:
        """More than one class is answered, and macro-F1 beats answering the majority class to every row."""
        checks = []
        if "predicted_classes" in metrics:
            n = metrics["predicted_classes"]
            checks.append(("predicted_classes_at_least_2", n, 2.0, n >= 2))
        if "macro_f1" in metrics and "baseline_macro_f1" in metrics:
            f1, base = metrics["macro_f1"], metrics["baseline_macro_f1"]
            checks.append(("macro_f1_above_majority_baseline", f1, base, f1 > base))
        return checks

    def outputs(self, raw: np.ndarray, spec: ModelSpec) -> Outputs:
        classes = np.array(spec.dataset.classes, dtype=object)
        best = raw.argmax(axis=1)
        return Outputs(
            score=raw[np.arange(len(raw)), best].astype("float64"), decision=classes[best], probabilities=raw
        )

    def answer_fields(self, spec: ModelSpec) -> dict[str, tuple[Any, Any]]:
        from pydantic import Field

        return {
            "predicted_class": (Literal[tuple(spec.dataset.classes or ())], ...),  # type: ignore[valid-type]
            "probabilities": (dict[str, float], Field(description="probability of each class")),
        }

    def answer(self, score: np.ndarray, decision: np.ndarray, probabilities: Probabilities) -> dict[str, list]:
        return {"predicted_class": decision.tolist(), "probabilities": list(probabilities or ())}

    def explained(self, contributions: np.ndarray, raw: np.ndarray, spec: ModelSpec) -> np.ndarray:
        k = raw.shape[1]
        blocks = contributions.reshape(len(raw), k, -1)  # LightGBM: one (features + bias) block per class
        return blocks[np.arange(len(raw)), raw.argmax(axis=1), :-1]

    def output_bins(self, spec: ModelSpec) -> int:
        return len(spec.dataset.classes or ())

    def describe_shift(self, reference: pd.DataFrame, current: pd.DataFrame) -> str:
        ref = reference["decision"].value_counts(normalize=True)
        cur = current["decision"].value_counts(normalize=True)
        levels = ref.index.union(cur.index)
        moved = cur.reindex(levels, fill_value=0) - ref.reindex(levels, fill_value=0)
        top = moved.abs().sort_values(ascending=False).index[:2]
        return "class shares " + ", ".join(f"{c} {moved[c]:+.1%}" for c in top)

    def output_shift(self, reference: pd.DataFrame, current: pd.DataFrame) -> float:
        return categorical_psi(reference["decision"], current["decision"])

    def output_test(self, reference: pd.DataFrame, current: pd.DataFrame) -> float:
        import pandas as pd
        from scipy.stats import chi2_contingency

        table = pd.crosstab(
            np.r_[np.zeros(len(reference)), np.ones(len(current))],
            np.r_[reference["decision"].astype(str), current["decision"].astype(str)],
        )
        if table.shape[1] < 2:
            return 1.0
        return float(chi2_contingency(table.to_numpy())[1])

    def live_quality(self, labelled: pd.DataFrame, spec: ModelSpec) -> float | None:
        if labelled.empty:
            return None
        classes = list(spec.dataset.classes or ())
        truth = [classes[int(i)] if 0 <= int(i) < len(classes) else None for i in labelled["outcome"]]
        return float(np.mean(np.array(truth, dtype=object) == labelled["decision"].to_numpy(dtype=object)))


def ks_statistic(labels: np.ndarray, scores: np.ndarray) -> float:
    """Kolmogorov-Smirnov separation of the two classes' scores (a credit-scoring standard)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.max(tpr - fpr))


def smape(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Symmetric mean absolute percentage error in [0, 2]: scale-free, finite where the truth is 0."""
    truth, predicted = np.asarray(truth, float), np.asarray(predicted, float)
    denominator = np.abs(truth) + np.abs(predicted)
    ratio = np.divide(2 * np.abs(predicted - truth), denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return float(np.mean(ratio))


def class_names(values: Any) -> list[str]:
    """Target values as the strings ``dataset.classes`` lists (3.0 read from a float column is "3")."""
    out = []
    for v in values:
        if isinstance(v, float | np.floating) and float(v).is_integer():
            v = int(v)
        out.append(str(v))
    return out


TASKS: dict[str, Task] = {t.name: t for t in (BinaryTask(), RegressionTask(), MulticlassTask())}


def task_of(spec: ModelSpec) -> Task:
    return TASKS[spec.task]
