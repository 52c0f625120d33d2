"""The train DAG's trigger form: fields, descriptions, and a reason required from people (not from schedules)."""

from __future__ import annotations

from typing import Any

from loopline.core.forms import FormError, FormField, check
from loopline.ingestion.data_registry import DATA_VERSION_PATTERN
from loopline.training.hyperparams import OVERRIDE_SCHEMA, HyperparameterError, validate_overrides

TRAIN_FIELDS = [
    FormField(
        "data_version",
        "Data version",
        "Which data to train on: 'latest', a version such as 'v0003', or a data-registry commit.",
        "string",
        default="latest",
        pattern=DATA_VERSION_PATTERN.removeprefix("^").removesuffix("$"),
        hint="enter 'latest', a version such as 'v0003', or a data-registry commit (7 to 40 hex digits)",
    ),
    FormField(
        "hyperparameters",
        "Hyperparameter overrides",
        'LightGBM parameters to override as JSON, e.g. {"learning_rate": 0.03}; allowed: '
        + ", ".join(sorted(OVERRIDE_SCHEMA["properties"])),
        "object",
        default={},
    ),
    FormField(
        "reason",
        "Reason",
        "Why this model is being trained; recorded on the MLflow run. Required when you trigger by hand.",
        "string",
        default=None,
        optional=True,  # scheduled and asset-triggered runs have none: the run type says why
        max_length=500,
        hint="say why you train by hand",
    ),
    FormField(
        "drift_report",
        "Drift report",
        "Set by the drift DAG: the MLflow URI of the drift report behind this retrain. Leave empty.",
        "string",
        default=None,
        optional=True,
        max_length=1000,
    ),
]

AUTOMATIC_REASONS = {
    "scheduled": "scheduled",
    "asset_triggered": "new data version",
    "asset_materialization": "new data version",
    "backfill": "backfill",
    "operator_triggered": "triggered by another DAG",
}


def check_train(params: dict[str, Any], run_type: str) -> dict[str, Any]:
    """The form's values; a person's run needs a reason, an automatic one gets its run type as reason."""
    values = check(params, TRAIN_FIELDS)
    reason = (values["reason"] or "").strip()
    if not reason:
        if run_type not in AUTOMATIC_REASONS:
            raise FormError(
                "Reason is required when you trigger a training run by hand: say why "
                "(e.g. 'retrain after the schema fix'); it is recorded on the MLflow run"
            )
        reason = AUTOMATIC_REASONS[run_type]
    values["reason"] = reason
    try:
        validate_overrides(values["hyperparameters"])
    except HyperparameterError as err:
        raise FormError(f"Hyperparameter overrides: {err}") from None
    return values
