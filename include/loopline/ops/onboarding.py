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
from loopline.ingestion.validation import read_batch

MAX_LEVELS = 50  # a text column with more distinct values is an identifier or free text, not a category
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
    values = target.dropna()
    distinct = sorted(values.unique().tolist())
    if len(distinct) == 2:
        return "binary", distinct
    if pd.api.types.is_numeric_dtype(values) and len(distinct) > 20:
        return "regression", []
    return "multiclass", distinct


def profile(sample: pd.DataFrame, target: str, timestamp: str, entity_id: str, task: str | None) -> Profile:
    missing = [c for c in (target, timestamp, entity_id) if c not in sample.columns]
    if missing:
        raise OnboardingError(f"the sample has no column(s) {missing}; its columns: {list(sample.columns)}")
    if len({target, timestamp, entity_id}) != 3:
        raise OnboardingError("target, timestamp and entity id must be three different columns")
    result = Profile()
    result.task, result.classes = infer_task(sample[target])
    if task and task != result.task:
        result.task = task
    if result.task != "binary":
        raise OnboardingError(
            f"target {target!r} looks like a {result.task} task; this version of the platform trains binary "
            "classifiers (a target with two values). Pass --task binary with a two-valued target."
        )
    if sorted(map(str, result.classes)) != ["0", "1"]:
        raise OnboardingError(f"a binary target must hold 0 and 1, found {result.classes[:5]}: map it to 0/1 first")
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
    expectations.append(_exp("expect_column_values_to_be_in_set", column=target, value_set=[0, 1]))
    meta = {"model": name, "notes": "Written by loopline onboard from a sample; review the bounds before use."}
    return {"name": f"{name}_batch", "meta": meta, "expectations": expectations}


SPEC_TEMPLATE = """\
# {name}: written by `loopline onboard` from {sample}. Review every value, then land batches in
# the landing folder; the platform does the rest. Strictly validated on load (unknown keys are an error).
name: {name}
description: >
  {description}

dataset:
  name: {name}                      # folder in the DVC data registry, and the landing folder's name
  entity_id: {entity_id}            # pseudonymised in every log and report, never a feature
  timestamp: {timestamp}            # drives the time-based splits
  target: {target}                  # binary: 1 = the event
  expectation_suite: {name}_batch   # expectations/{name}_batch.json (written with this spec)
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
  decision_threshold: {threshold}         # score >= threshold: the positive decision (1.5 x the sample's base rate)
  seed: 42
  early_stopping_rounds: 30
  params:
    objective: binary
    learning_rate: 0.05
    num_leaves: 31
    min_child_samples: 20
    feature_fraction: 0.9
    bagging_fraction: 0.9
    bagging_freq: 1
    lambda_l2: 1.0
    num_boost_round: 400

quality_gate:
  min_auc: 0.6                      # absolute floor on the holdout: raise it once you know the model
  max_brier: 0.25
  auc_tolerance: 0.005              # the challenger may be at most this far below the champion
  brier_tolerance: 0.005

rollout:                            # the platform's defaults: canary 5% -> 20% -> 50% -> 100%
  mode: canary

monitoring:                         # the platform's defaults: hourly drift check, retrain storm guard
  schedule: "@hourly"
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
    base_rate = float(pd.to_numeric(sample[target]).mean())
    text = SPEC_TEMPLATE.format(
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
        threshold=round(min(0.9, max(0.05, base_rate * 1.5)), 3),
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
