"""Which LightGBM hyperparameters a person may override from the train DAG's form, and their bounds.

One JSON schema serves both the Airflow Params form (validated in the UI before a
run starts) and ``merge_params`` (validated again in the task, for runs
triggered through the API or the CLI).
"""

from __future__ import annotations

from typing import Any

import jsonschema

from loopline.core.errors import LooplineError

OVERRIDE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "learning_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "num_leaves": {"type": "integer", "minimum": 2, "maximum": 4096},
        "max_depth": {"type": "integer", "minimum": -1, "maximum": 64},
        "min_child_samples": {"type": "integer", "minimum": 1, "maximum": 100000},
        "feature_fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "bagging_fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "bagging_freq": {"type": "integer", "minimum": 0, "maximum": 100},
        "lambda_l1": {"type": "number", "minimum": 0},
        "lambda_l2": {"type": "number", "minimum": 0},
        "min_gain_to_split": {"type": "number", "minimum": 0},
        "num_boost_round": {"type": "integer", "minimum": 1, "maximum": 10000},
    },
}


class HyperparameterError(LooplineError, ValueError):
    """An override names an unknown parameter or a value out of bounds."""


def validate_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    try:
        jsonschema.validate(overrides, OVERRIDE_SCHEMA)
    except jsonschema.ValidationError as err:
        where = ".".join(map(str, err.absolute_path)) or "overrides"
        allowed = sorted(OVERRIDE_SCHEMA["properties"])
        raise HyperparameterError(f"hyperparameter override {where}: {err.message} (allowed: {allowed})") from None
    return overrides


def merge_params(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Spec params updated with validated overrides; a new dict, inputs untouched."""
    return {**base, **validate_overrides(overrides)}
