"""``loopline onboard``: a model folder and its GE suite, written from a sample of a team's table.

The feature schema comes from the data (numeric bounds with a margin, categorical levels,
missing-value shares), and the suite from the same profile, so the sample itself passes
its own suite. Everything else gets the platform's defaults, with comments, for a person
to review before the first batch lands.
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
MARGIN = 0.1  # numeric bounds reach this share of the observed range beyond it
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
    low, high = float(values.min()), float(values.max())
    pad = (high - low) * MARGIN or abs(high) * MARGIN or 1.0
    lower = low - pad if low < 0 else max(0.0, low - pad)
    return _round(lower, down=True), _round(high + pad, down=False)


def _round(value: float, down: bool) -> float:
    if value == 0:
        return 0.0
    digits = 2 - int(math.floor(math.log10(abs(value))))
    scale = 10**digits
    return (math.floor if down else math.ceil)(value * scale) / scale


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
    for column, (low, high) in prof.numeric.items():
        expectations += [
            _exp("expect_column_values_to_be_in_type_list", column=column, type_list=NUMERIC_TYPES),
            _exp("expect_column_values_to_be_between", column=column, min_value=low, max_value=high),
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
    meta = {"model": name, "notes": "Written by loopline onboard from a sample; review the bounds before use."}
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

monitoring:                         # the platform's defaults: hourly drift check, retrain storm guard
  schedule: "@hourly"
  retrain_on: [performance_risk, concept_drift]  # a moved input alone (feature_drift) only alerts
"""


def _features_yaml(prof: Profile) -> str:
    lines = []
    if prof.numeric:
        lines.append("  numeric:                          # bounds: the sample's range plus a margin")
        lines += [f"    {c}: {{min: {lo:g}, max: {hi:g}}}" for c, (lo, hi) in prof.numeric.items()]
    else:
        lines.append("  numeric: {}")
    if prof.categorical:
        lines.append("  categorical:                      # levels seen in the sample")
        lines += [f"    {c}: {json.dumps(levels)}" for c, levels in prof.categorical.items()]
    else:
        lines.append("  categorical: {}")
    for column, why in prof.skipped.items():
        lines.append(f"  # not a feature: {column} ({why})")
    return "\n".join(lines) + "\n"


def _task_sections(prof: Profile, target: pd.Series) -> dict[str, str]:
    """The parts of the spec that depend on the task type."""
    task = TASKS[prof.task]
    gate = "".join(f"  {key}: {value:g}\n" for key, value in task.default_gate.items())
    sections = {"objective": task.objectives[0], "gate": gate, "classes_line": "", "threshold_line": ""}
    if prof.task == "binary":
        base_rate = float(pd.to_numeric(target).mean())
        threshold = round(min(0.9, max(0.05, base_rate * 1.5)), 3)
        sections["target_comment"] = "binary: 1 = the event"
        sections["threshold_line"] = (
            f"  decision_threshold: {threshold}         # score >= threshold: the positive decision"
            " (1.5 x the sample's base rate)\n"
            "  decisions: {below: negative, at_or_above: positive}   # what the service answers: name them\n"
        )
    elif prof.task == "regression":
        sections["target_comment"] = "regression: the quantity to predict"
    else:
        sections["target_comment"] = "multiclass: one of the classes below"
        names = json.dumps([str(_plain(c)) for c in prof.classes])
        sections["classes_line"] = f"  classes: {names}   # the service answers one of these, with probabilities\n"
    return sections


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
    text = SPEC_TEMPLATE.format(
        task=prof.task,
        **_task_sections(prof, sample[target]),
        name=name,
        sample=sample_path.name,
        description=f"Predicts {target} (sample: {len(sample)} rows, {first.date()} to {last.date()}). Say more here.",
        entity_id=entity_id,
        timestamp=timestamp,
        target=target,
        earliest=f"{first.year - 5}-01-01",
        first=str(first.date()),
        features=_features_yaml(prof),
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
