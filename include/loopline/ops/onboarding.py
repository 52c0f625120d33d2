"""``loopline onboard``: a model folder and its GE suite, written from a sample of a team's table.

The feature schema comes from the data (numeric bounds with a wide margin, categorical levels,
missing-value shares), and the suite from the same profile, so the sample itself passes
its own suite. The numeric bounds live in the spec only: validation generates the suite's
range checks from them (``loopline.ingestion.validation.with_spec_bounds``), and the service
refuses requests outside them, so a bound is edited in one place.

What depends on the data is chosen from the data, and the written spec says how
(``Baseline``): a quick LightGBM cross-validated on the sample (time-ordered folds) gives the
binary threshold (its out-of-fold scores' quantile at the base rate: the model decides
positive about as often as the event happens), the gate's floors (the cross-validated
metric less a margin of twice its fold-to-fold spread, at least a fixed minimum), and the
features a request must send (never null in the sample and carrying most of the model's
gain). ``max_missing_share`` comes from the sample's missingness per row, and the drift
window and ``min_window`` from the sample's rows per day. Everything else gets the
platform's defaults, with comments, for a person to review before the first batch lands.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from loopline.core.errors import LooplineError
from loopline.core.tasks import TASKS, class_names
from loopline.ingestion.validation import read_batch

MAX_LEVELS = 50  # a text column with more distinct values is an identifier or free text, not a category
MAX_CLASSES = 50  # a target with more distinct values than this is a regression target or an identifier
REGRESSION_MIN_DISTINCT = 20  # a numeric target with more distinct values (or any fractions) is a quantity
# Numeric bounds catch broken data (a unit error, a sentinel 99999, a sign flip), not unusual rows: a sample's
# max is exceeded by most later batches. Each side widens by the larger of RANGE_MARGIN x the sample's range and
# TAIL_MARGIN x the distance from the median to that extreme (a long tail widens more), rounded outward to two
# significant digits; a column never negative in the sample keeps 0 as its lower bound.
RANGE_MARGIN = 0.5
TAIL_MARGIN = 3.0
CV_FOLDS = 4  # time-ordered blocks of the sample for the baseline
# The gate's floors: the cross-validated metric less max(this, 2 x its spread across folds).
MIN_MARGIN = {"auc": 0.05, "brier": 0.02, "precision_at_threshold": 0.1, "recall_at_threshold": 0.1}
MIN_MARGIN |= {"r2": 0.05, "smape": 0.05, "macro_f1": 0.05, "accuracy": 0.05}
LIFT_SHARE = 0.5  # ... of the baseline's lift over the naive answer (the base rate, the mean, the majority class)
REQUIRED_GAIN = 0.8  # required features: never null in the sample, the fewest carrying this share of the gain
MISSING_MARGIN = 0.2  # max_missing_share: the sample's worst row's missing share plus this (capped at 0.9)
MIN_WINDOW_FLOOR, MIN_WINDOW_CAP = 20, 500  # monitoring.min_window: half a window's expected rows, within these
MAX_WINDOW_HOURS = 168  # a thin table's drift window grows (in whole days) up to a week to hold enough rows
NUMERIC_TYPES = ["int8", "int16", "int32", "int64", "float16", "float32", "float64", "Int64", "Float64"]


class OnboardingError(LooplineError, ValueError):
    """The sample or the arguments cannot make a model folder; the message says what to change."""


@dataclass
class Profile:
    numeric: dict[str, tuple[float, float]] = field(default_factory=dict)
    categorical: dict[str, list[str]] = field(default_factory=dict)
    missing: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # column -> why it is not a feature
    task: str = "binary"
    classes: list = field(default_factory=list)
    timestamp_is_text: bool = True
    booleans: set[str] = field(default_factory=set)


def _bounds(values: pd.Series) -> tuple[float, float]:
    """The sample's range widened generously (``RANGE_MARGIN``, ``TAIL_MARGIN``) and rounded outward."""
    values = values.astype(float)
    low, high, middle = float(values.min()), float(values.max()), float(values.median())
    spread = high - low
    fallback = abs(high) * RANGE_MARGIN or 1.0  # a constant column
    up = max(RANGE_MARGIN * spread, TAIL_MARGIN * (high - middle)) or fallback
    down = max(RANGE_MARGIN * spread, TAIL_MARGIN * (middle - low)) or fallback
    lower = 0.0 if low >= 0 else _round(low - down, down=True)
    return lower, _round(high + up, down=False)


def _round(value: float, down: bool, significant: int = 2) -> float:
    """``value`` rounded to ``significant`` digits, towards -inf (down) or +inf."""
    if value == 0:
        return 0.0
    digits = significant - 1 - int(math.floor(math.log10(abs(value))))
    scale = 10.0**digits
    rounded = (math.floor if down else math.ceil)(round(value * scale, 9)) / scale
    return float(round(rounded, max(digits, 0)))


def infer_task(target: pd.Series) -> tuple[str, list]:
    """binary (two values), regression (a numeric quantity) or multiclass (a few labels), with the classes."""
    values = target.dropna()
    distinct = sorted(values.unique().tolist(), key=str)
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if len(distinct) == 2:
        return "binary", distinct
    fractional = numeric and bool((values.astype(float) % 1 != 0).any())
    if numeric and (fractional or len(distinct) > REGRESSION_MIN_DISTINCT):
        return "regression", []
    return "multiclass", distinct


def _check_target(prof: Profile, target: str, values: pd.Series) -> None:
    """The target must suit the task: the message says what to change in the data or the --task flag."""
    if prof.task == "binary" and sorted(map(str, prof.classes)) != ["0", "1"]:
        raise OnboardingError(
            f"a binary target must hold 0 and 1, found {prof.classes[:5]}: map it to 0/1 first"
            " (or pass --task multiclass to keep its labels)"
        )
    if prof.task == "regression" and not pd.api.types.is_numeric_dtype(values.dropna()):
        raise OnboardingError(f"a regression target must be numeric; {target!r} holds text, e.g. {values.iloc[0]!r}")
    if prof.task == "multiclass" and not 3 <= len(prof.classes) <= MAX_CLASSES:
        raise OnboardingError(
            f"a multiclass target needs 3 to {MAX_CLASSES} distinct values; {target!r} has {len(prof.classes)}"
        )


def profile(sample: pd.DataFrame, target: str, timestamp: str, entity_id: str, task: str | None) -> Profile:
    missing = [c for c in (target, timestamp, entity_id) if c not in sample.columns]
    if missing:
        raise OnboardingError(f"the sample has no column(s) {missing}; its columns: {list(sample.columns)}")
    if len({target, timestamp, entity_id}) != 3:
        raise OnboardingError("target, timestamp and entity id must be three different columns")
    result = Profile()
    result.task, result.classes = infer_task(sample[target])
    if task and task != result.task:
        if task not in TASKS:
            raise OnboardingError(f"--task {task!r}: use one of {sorted(TASKS)}")
        result.task = task
        if task == "multiclass":
            result.classes = sorted(sample[target].dropna().unique().tolist(), key=str)
    _check_target(result, target, sample[target])
    result.timestamp_is_text = not pd.api.types.is_datetime64_any_dtype(sample[timestamp])
    for name in sample.columns:
        if name in (target, timestamp, entity_id):
            continue
        column = sample[name]
        share = float(column.isna().mean())
        if share == 1.0:
            result.skipped[name] = "always empty in the sample"
            continue
        if pd.api.types.is_bool_dtype(column):
            result.categorical[name] = ["False", "True"]
            result.booleans.add(name)
        elif pd.api.types.is_numeric_dtype(column):
            result.numeric[name] = _bounds(column.dropna())
        else:
            levels = sorted(column.dropna().astype(str).unique().tolist())
            if len(levels) > MAX_LEVELS:
                result.skipped[name] = f"{len(levels)} distinct text values: an identifier or free text"
                continue
            result.categorical[name] = levels
        result.missing[name] = share
    if not (result.numeric or result.categorical):
        raise OnboardingError("the sample has no usable feature columns besides target, timestamp and entity id")
    return result


@dataclass
class Baseline:
    """A quick LightGBM cross-validated on the sample: what the threshold, floors and required features come from."""

    folds: int = 0
    fold_rows: int = 0  # rows each fold was judged on
    holdout_rows: float = 0.0  # rows the gate's holdout will hold (the sample's rate x holdout_weeks)
    metrics: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> (mean, SD) over the folds
    threshold: float | None = None  # binary: out-of-fold scores' quantile at 1 - base rate
    base_rate: float | None = None  # binary: the sample's share of 1s
    naive: dict[str, float] = field(default_factory=dict)  # metric -> mean over the folds of the naive answer
    gain: dict[str, float] = field(default_factory=dict)  # feature -> share of the gain of a fit on the whole sample
    why_not: str = ""  # why there is no baseline (the spec then says defaults were used)

    def floor(self, metric: str, higher: bool) -> tuple[float, str] | None:
        """The gate's bound for ``metric`` and how it was chosen; None if the baseline has no such number.

        Half the baseline's lift over the naive answer (``LIFT_SHARE``), less a noise margin: the real
        model is trained on what has landed so far (at first, less than the sample) with the spec's
        recipe, and judged on one holdout, so the floor asks for a real part of what the data allows,
        not all of it. A floor that would not be above the naive answer is not written.
        """
        if metric not in self.metrics or metric not in self.naive:
            return None
        mean, sd = self.metrics[metric]
        naive = self.naive[metric]
        # The gate judges one holdout: a smaller one than a fold varies more (SD ~ 1/sqrt(rows)).
        scale = math.sqrt(self.fold_rows / self.holdout_rows) if 0 < self.holdout_rows < self.fold_rows else 1.0
        margin = max(MIN_MARGIN[metric], 2 * sd * scale)
        target = naive + LIFT_SHARE * (mean - naive)
        bound = target - margin if higher else target + margin
        if higher and bound <= naive:
            return None  # no floor above the naive answer survives the noise: the task's baseline checks remain
        bound = _round2(bound, down=higher)
        noise = f"SD {sd:.3f} over {self.folds} folds of {self.fold_rows} rows"
        if scale > 1:
            noise += f", x{scale:.2f} for a holdout of ~{self.holdout_rows:.0f} rows"
        how = (
            f"naive {naive:.3f} + {LIFT_SHARE:g} x (CV {mean:.3f} - naive) {'-' if higher else '+'} margin"
            f" {margin:.3f} ({noise})"
        )
        return bound, how


def _round2(value: float, down: bool) -> float:
    return (math.floor if down else math.ceil)(round(value * 100, 6)) / 100


def _matrix(sample: pd.DataFrame, prof: Profile) -> pd.DataFrame:
    """The sample's features as LightGBM takes them: numbers as floats, levels as pandas categories."""
    columns = {name: pd.to_numeric(sample[name], errors="coerce").astype(float) for name in prof.numeric}
    for name, levels in prof.categorical.items():
        columns[name] = pd.Categorical(sample[name].map(lambda v: None if pd.isna(v) else str(v)), categories=levels)
    return pd.DataFrame(columns, index=sample.index)


def _labels(values: pd.Series, prof: Profile):
    import numpy as np

    if prof.task == "binary":
        return pd.to_numeric(values).astype(int).to_numpy()
    if prof.task == "regression":
        return pd.to_numeric(values).astype(float).to_numpy()
    names = class_names(values)
    index = {c: i for i, c in enumerate(class_names(prof.classes))}
    return np.array([index[n] for n in names], dtype=int)


def baseline(sample: pd.DataFrame, prof: Profile, target: str, timestamp: str, holdout_rows: float = 0) -> Baseline:
    """Cross-validate a small LightGBM on the sample in ``CV_FOLDS`` time-ordered blocks (each judged once).

    Small on purpose (few leaves, 100 rounds, one thread, seeded): a baseline of what the data
    allows, measured as the gate will measure the real model, not the real model itself.
    """
    import lightgbm as lgb
    import numpy as np

    from loopline.core.tasks import TASKS

    rows = sample[sample[target].notna()].copy()
    rows["_at"] = pd.to_datetime(rows[timestamp], errors="coerce", utc=True, format="ISO8601")
    rows = rows.sort_values("_at", kind="stable")
    y, x = _labels(rows[target], prof), _matrix(rows, prof)
    task = TASKS[prof.task]
    k = len(prof.classes) if prof.task == "multiclass" else None
    params = {
        "objective": task.objectives[0],
        "learning_rate": 0.1,
        "num_leaves": 7,
        "min_data_in_leaf": max(5, len(rows) // 50),
        "verbosity": -1,
        "num_threads": 1,
        "deterministic": True,
        "seed": 42,
        **({"num_class": k} if k else {}),
    }

    def fit(index: np.ndarray) -> lgb.Booster:
        return lgb.train(params, lgb.Dataset(x.iloc[index], y[index]), num_boost_round=100)

    result = Baseline(folds=CV_FOLDS, fold_rows=len(rows) // CV_FOLDS, holdout_rows=holdout_rows)
    if prof.task == "binary":
        result.base_rate = float(y.mean())
    try:
        blocks = np.array_split(np.arange(len(rows)), CV_FOLDS)
        out_of_fold = np.zeros((len(rows), k) if k else len(rows))
        for block in blocks:
            out_of_fold[block] = fit(np.setdiff1d(np.arange(len(rows)), block)).predict(x.iloc[block])
        whole = fit(np.arange(len(rows)))
    except Exception as err:  # lightgbm refuses (a fold without both classes, too few rows): defaults, said so
        return Baseline(why_not=f"the baseline could not be fitted ({type(err).__name__}: {err})")
    gains = whole.feature_importance(importance_type="gain")
    total = float(gains.sum()) or 1.0
    result.gain = {name: float(g) / total for name, g in zip(x.columns, gains, strict=True)}
    decide = None
    if prof.task == "binary":
        from types import SimpleNamespace

        result.threshold = binary_threshold(result.base_rate)
        decide = SimpleNamespace(training=SimpleNamespace(decision_threshold=result.threshold))
    per_fold: dict[str, list[float]] = {}
    naive: dict[str, list[float]] = {}
    for block in blocks:
        if not task.enough_variety(y[block]):
            continue
        for metric, value in task.holdout_metrics(y[block], out_of_fold[block], decide).items():
            if metric in MIN_MARGIN and math.isfinite(value):
                per_fold.setdefault(metric, []).append(value)
        rest = y[np.setdiff1d(np.arange(len(rows)), block)]
        for metric, value in task.holdout_metrics(y[block], _naive(rest, len(block), prof, k), decide).items():
            if metric in MIN_MARGIN and math.isfinite(value):
                naive.setdefault(metric, []).append(value)
    result.metrics = {m: (float(np.mean(v)), float(np.std(v))) for m, v in per_fold.items() if len(v) >= 2}
    result.naive = {m: float(np.mean(v)) for m, v in naive.items()}
    if not result.metrics:
        result.why_not = "no fold of the sample had the variety to judge a model"
    return result


def binary_threshold(base_rate: float) -> float:
    """The sample's base rate: a calibrated score above it says the event is likelier than average.

    The decision rule that weighs both classes' errors alike (for a calibrated model, about the
    threshold of the highest balanced accuracy), and one that gives both decisions: a calibrated
    model's scores average the base rate, so unless it answers one score to every row some lie
    above it and some below.
    """
    return round(min(0.99, max(0.01, base_rate)), 3)


def _naive(train_labels, rows: int, prof: Profile, k: int | None):
    """The naive answer a fold's model must beat, from the other folds: base rate, mean, majority class."""
    import numpy as np

    if prof.task == "multiclass":
        probabilities = np.full((rows, k), 1e-3)
        probabilities[:, np.bincount(train_labels, minlength=k).argmax()] = 1.0
        return probabilities / probabilities.sum(axis=1, keepdims=True)
    return np.full(rows, float(np.mean(train_labels)))


def _mostly(share: float) -> float:
    """The non-missing share the suite demands: what the sample shows, with room for batch-to-batch noise."""
    if share == 0:
        return 1.0
    return max(0.0, round(1 - min(1.0, share * 1.5 + 0.02), 2))


def _plain(value):
    """A sample value as JSON holds it (numpy integers and floats become Python numbers)."""
    return value.item() if hasattr(value, "item") else value


def _exp(kind: str, **kwargs) -> dict:
    return {"type": kind, "kwargs": kwargs}


def suite(name: str, prof: Profile, target: str, timestamp: str, entity_id: str, columns: list[str]) -> dict:
    expectations: list[dict] = [
        # Batches may carry columns that are not features (they are not stored); these must be there.
        {"type": "expect_table_columns_to_match_set", "kwargs": {"column_set": columns, "exact_match": False}},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1, "max_value": 2_000_000}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": entity_id}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": entity_id}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": timestamp}},
    ]
    if prof.timestamp_is_text:
        regex = r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2})?)?"
        expectations.append(
            {"type": "expect_column_values_to_match_regex", "kwargs": {"column": timestamp, "regex": regex}}
        )
    for column in prof.numeric:
        # No range check here: the spec's features.numeric bounds are the one source, and validation adds them.
        expectations += [
            _exp("expect_column_values_to_be_in_type_list", column=column, type_list=NUMERIC_TYPES),
            _exp("expect_column_values_to_not_be_null", column=column, mostly=_mostly(prof.missing[column])),
        ]
    for column, levels in prof.categorical.items():
        # A raw batch (CSV or Parquet) holds booleans; the stored dataset holds them as the spec's text levels.
        value_set = [False, True, *levels] if column in prof.booleans else levels
        expectations += [
            _exp("expect_column_values_to_be_in_set", column=column, value_set=value_set),
            _exp("expect_column_values_to_not_be_null", column=column, mostly=_mostly(prof.missing[column])),
        ]
    # An empty target is allowed: a row whose outcome is not known yet (labels arrive later).
    if prof.task == "regression":
        expectations.append(_exp("expect_column_values_to_be_in_type_list", column=target, type_list=NUMERIC_TYPES))
    else:  # as a batch holds them (numbers stay numbers) and as the dataset stores them (multiclass: names)
        value_set = [0, 1] if prof.task == "binary" else [_plain(v) for v in prof.classes]
        if prof.task == "multiclass":
            value_set = list(dict.fromkeys(value_set + class_names(prof.classes)))
        expectations.append(_exp("expect_column_values_to_be_in_set", column=target, value_set=value_set))
    meta = {
        "model": name,
        "notes": "Written by loopline onboard from a sample; review before use. The numeric features' ranges are"
        f" not here: they are models/{name}/spec.yaml features.numeric, checked from there at validation.",
    }
    return {"name": f"{name}_batch", "meta": meta, "expectations": expectations}


SPEC_TEMPLATE = """\
# {name}: written by `loopline onboard` from {sample}. Review every value, then land batches in
# the landing folder; the platform does the rest. Strictly validated on load (unknown keys are an error).
name: {name}
task: {task}                        # binary | regression | multiclass (inferred from the target; change with care)
description: >
  {description}

dataset:
  name: {name}                      # folder in the DVC data registry, and the landing folder's name
  entity_id: {entity_id}            # pseudonymised in every log and report, never a feature
  timestamp: {timestamp}            # drives the time-based splits
  target: {target}                  # {target_comment}
{classes_line}  expectation_suite: {name}_batch   # expectations/{name}_batch.json (written with this spec)
  rules:
    unique_key: [{entity_id}]       # unique across the whole dataset
    on_duplicate: reject            # reject | drop_repeats | keep_latest
    earliest_timestamp: {earliest}  # older rows are implausible (the sample starts {first})
    future_tolerance_minutes: 60

features:
  version: "1"                      # bump when the feature code or schema changes behaviour
{features}
training:
  schedule: "0 3 * * 1"             # weekly retrain (cron, UTC); every new data version triggers one too
  valid_weeks: {valid_weeks}                    # weeks before the holdout, for early stopping
  holdout_weeks: {holdout_weeks}                  # latest weeks, never trained on: evaluation + quality gate
  min_train_rows: {min_train_rows}
{threshold_line}  seed: 42
  early_stopping_rounds: 30
  params:
    objective: {objective}
    learning_rate: 0.05
    num_leaves: 31
    min_child_samples: 20
    feature_fraction: 0.9
    bagging_fraction: 0.9
    bagging_freq: 1
    lambda_l2: 1.0
    num_boost_round: 400

quality_gate:                     # min_/max_<metric>: absolute floors on the holdout (raise them once you know
                                  # the model); <metric>_tolerance: how far below the champion it may be
{gate}
rollout:                            # the platform's defaults: canary 5% -> 20% -> 50% -> 100%
  mode: canary

monitoring:                         # hourly drift check over the last window_hours of predictions, retrain storm guard
  schedule: "@hourly"
{monitoring}  retrain_on: [performance_risk, concept_drift]  # moved inputs (feature_drift) or answers whose quality is
                                  # estimated to hold (output_shift) only alert; list output_shift to retrain on it
"""


def _features_yaml(prof: Profile, base: Baseline, sample: pd.DataFrame) -> str:
    lines = []
    if prof.numeric:
        lines.append(
            f"  numeric:                          # bounds: the sample's range widened each way by the larger of"
            f" {RANGE_MARGIN:g} x the range\n"
            f"                                    # and {TAIL_MARGIN:g} x the median's distance to that extreme,"
            " rounded outward (never negative\n"
            "                                    # in the sample: min 0). The one source of bounds: the suite's"
            " range checks\n"
            "                                    # are generated from these, and requests outside them get a 422."
        )
        lines += [f"    {c}: {{min: {lo:g}, max: {hi:g}}}" for c, (lo, hi) in prof.numeric.items()]
    else:
        lines.append("  numeric: {}")
    if prof.categorical:
        lines.append("  categorical:                      # levels seen in the sample")
        lines += [f"    {c}: {json.dumps(levels)}" for c, levels in prof.categorical.items()]
    else:
        lines.append("  categorical: {}")
    required, how = _required(prof, base)
    lines.append(f"  required: {json.dumps(required)}   # {how}")
    share, how = _max_missing_share(sample, prof)
    lines.append(f"  max_missing_share: {share:g}   # {how}")
    for column, why in prof.skipped.items():
        lines.append(f"  # not a feature: {column} ({why})")
    return "\n".join(lines) + "\n"


def _required(prof: Profile, base: Baseline) -> tuple[list[str], str]:
    """Features a request must send: never null in the sample, the fewest carrying ``REQUIRED_GAIN`` of the gain."""
    never_null = [name for name, share in prof.missing.items() if share == 0]
    if not base.gain:
        return never_null[:3], f"never null in the sample (first 3; no baseline: {base.why_not})"
    ranked = sorted((n for n in never_null if base.gain.get(n, 0) > 0), key=lambda n: -base.gain[n])
    chosen, carried = [], 0.0
    for name in ranked:
        if carried >= REQUIRED_GAIN:
            break
        chosen.append(name)
        carried += base.gain[name]
    return chosen, (
        f"never null in the sample and carrying {carried:.0%} of the baseline model's gain:"
        " a request without them gets a 422 naming them"
    )


def _max_missing_share(sample: pd.DataFrame, prof: Profile) -> tuple[float, str]:
    """The worst sample row's share of missing features, plus ``MISSING_MARGIN``, in steps of 0.05, at most 0.9."""
    names = [*prof.numeric, *prof.categorical]
    worst = float(sample[names].isna().mean(axis=1).max()) if names else 0.0
    share = min(0.9, math.ceil(round((worst + MISSING_MARGIN) * 20, 6)) / 20)
    return share, (
        f"a request row may leave this share of the features missing: the sample's worst row left {worst:.0%},"
        f" plus {MISSING_MARGIN:g}"
    )


GATE_METRICS = {  # the floors onboarding writes, per task (metric, higher is better)
    # Precision and recall at the threshold are left to the person who knows the costs: on a holdout of a few
    # dozen rows they swing too much for a floor from a sample; the decision-share band below bounds the decisions.
    "binary": [("auc", True), ("brier", False)],
    "regression": [("r2", True), ("smape", False)],
    "multiclass": [("macro_f1", True)],
}


def _gate_yaml(prof: Profile, base: Baseline) -> str:
    """The quality gate's bounds from the baseline (or the task's defaults, saying why), each with how it was chosen."""
    task = TASKS[prof.task]
    lines = []
    if base.metrics:
        for metric, higher in GATE_METRICS[prof.task]:
            found = base.floor(metric, higher)
            if found is None:
                continue
            bound, how = found
            key = f"{'min' if higher else 'max'}_{metric}"
            lines.append(f"  {key}: {bound:g}   # {how}")
        if base.base_rate is not None:
            low = _round2(base.base_rate / 4, down=True)
            high = _round2(1 - (1 - base.base_rate) / 4, down=False)
            lines.append(f"  min_decision_share: {low:g}   # a quarter of the sample's base rate {base.base_rate:.3f}")
            lines.append(f"  max_decision_share: {high:g}   # a quarter of the way from the base rate to 1")
    if not any(line.lstrip().startswith(("min_", "max_")) for line in lines):
        why = base.why_not or "the baseline gave no usable floor"
        lines = [
            f"  {k}: {v:g}   # platform default ({why})"
            for k, v in task.default_gate.items()
            if k[:4] in ("min_", "max_")
        ]
    lines += [f"  {k}: {v:g}" for k, v in task.default_gate.items() if k.endswith("_tolerance")]
    return "\n".join(lines) + "\n"


def _task_sections(prof: Profile, target: pd.Series, base: Baseline) -> dict[str, str]:
    """The parts of the spec that depend on the task type."""
    task = TASKS[prof.task]
    sections = {
        "objective": task.objectives[0],
        "gate": _gate_yaml(prof, base),
        "classes_line": "",
        "threshold_line": "",
    }
    if prof.task == "binary":
        base_rate = float(pd.to_numeric(target).mean())
        threshold, how = (
            binary_threshold(base_rate),
            f"the sample's base rate {base_rate:.3f}: positive when the model finds the event likelier than"
            " average (both classes' errors weighed alike; a calibrated model then gives both decisions)."
            " Move it for your costs: lower catches more events, with more false alarms",
        )
        sections["target_comment"] = "binary: 1 = the event"
        sections["threshold_line"] = (
            f"  decision_threshold: {threshold:g}   # score >= threshold: the positive decision. Chosen as {how}\n"
            "  decisions: {below: negative, at_or_above: positive}   # what the service answers: name them\n"
        )
    elif prof.task == "regression":
        sections["target_comment"] = "regression: the quantity to predict"
    else:
        sections["target_comment"] = "multiclass: one of the classes below"
        names = json.dumps([str(_plain(c)) for c in prof.classes])
        sections["classes_line"] = f"  classes: {names}   # the service answers one of these, with probabilities\n"
    return sections


def _monitoring_yaml(rows: int, first: pd.Timestamp, last: pd.Timestamp) -> str:
    """The drift window and ``min_window`` from the sample's rows per day (taken as the table's whole volume)."""
    days = max((last - first).total_seconds() / 86400, 1.0)
    per_day = rows / days
    window_hours = 24
    while per_day * window_hours / 24 < 2 * MIN_WINDOW_FLOOR and window_hours < MAX_WINDOW_HOURS:
        window_hours += 24
    expected = per_day * window_hours / 24
    min_window = int(min(MIN_WINDOW_CAP, max(MIN_WINDOW_FLOOR, expected // 2)))
    return (
        f"  window_hours: {window_hours}   # predictions compared with the training data per check: the sample holds"
        f" {per_day:.0f} rows a day,\n"
        f"                     # so a window of {window_hours} h expects about {expected:.0f} (grown in whole days, up"
        f" to {MAX_WINDOW_HOURS} h, to hold {2 * MIN_WINDOW_FLOOR})\n"
        f"  min_window: {min_window}   # fewer predictions in the window: no verdict (insufficient). Half the"
        f" expected rows, within [{MIN_WINDOW_FLOOR}, {MIN_WINDOW_CAP}];\n"
        "                     # the sample is taken as every row of its period: set it by hand if it was thinned\n"
    )


def onboard(
    name: str,
    sample_path: Path,
    target: str,
    timestamp: str,
    entity_id: str,
    models_dir: Path,
    expectations_dir: Path,
    task: str | None = None,
    force: bool = False,
) -> tuple[Path, Path]:
    """Write ``models/<name>/spec.yaml`` and ``expectations/<name>_batch.json``; returns both paths."""
    from loopline.core.spec import load_spec_file

    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise OnboardingError(f"model name {name!r}: use lower-case letters, digits and _ (e.g. churn_risk)")
    try:
        sample = read_batch(sample_path)
    except Exception as err:
        raise OnboardingError(f"cannot read the sample {sample_path}: {type(err).__name__}: {err}") from err
    if len(sample) < 50:
        raise OnboardingError(
            f"the sample has {len(sample)} rows; give at least 50 so bounds and levels mean something"
        )
    prof = profile(sample, target, timestamp, entity_id, task)
    instants = pd.to_datetime(sample[timestamp], errors="coerce", utc=True, format="ISO8601")
    if instants.isna().all():
        raise OnboardingError(f"timestamp column {timestamp!r} holds no readable dates (ISO 8601 expected)")
    first, last = instants.min(), instants.max()
    weeks = max(1, int((last - first).days // 7))
    valid_weeks, holdout_weeks = (1, 1) if weeks < 8 else (max(1, weeks // 10), max(1, weeks // 10))
    per_week = len(sample) / max((last - first).total_seconds() / (7 * 86400), 1 / 7)
    base = baseline(sample, prof, target, timestamp, holdout_rows=per_week * holdout_weeks)
    text = SPEC_TEMPLATE.format(
        task=prof.task,
        **_task_sections(prof, sample[target], base),
        monitoring=_monitoring_yaml(len(sample), first, last),
        name=name,
        sample=sample_path.name,
        description=f"Predicts {target} (sample: {len(sample)} rows, {first.date()} to {last.date()}). Say more here.",
        entity_id=entity_id,
        timestamp=timestamp,
        target=target,
        earliest=f"{first.year - 5}-01-01",
        first=str(first.date()),
        features=_features_yaml(prof, base, sample),
        valid_weeks=valid_weeks,
        holdout_weeks=holdout_weeks,
        min_train_rows=max(50, min(500, len(sample) // 4)),
    )
    folder = models_dir / name
    spec_file, suite_file = folder / "spec.yaml", expectations_dir / f"{name}_batch.json"
    for path in (spec_file, suite_file):
        if path.exists() and not force:
            raise OnboardingError(f"{path} exists already; pass --force to overwrite it")
    folder.mkdir(parents=True, exist_ok=True)
    expectations_dir.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(text)
    columns = [entity_id, timestamp, *prof.numeric, *prof.categorical, target]
    suite_file.write_text(json.dumps(suite(name, prof, target, timestamp, entity_id, columns), indent=2) + "\n")
    load_spec_file(spec_file)  # what was written must load; a failure here is a bug of this module
    return spec_file, suite_file
