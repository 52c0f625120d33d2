"""The prediction service's request row, generated from a model spec (strict: what JSON says is what counts).

One pydantic model per spec: the entity id (a non-empty string), the join keys of
its stored features (``dataset.keys``, required, never a model input), every numeric
feature as a finite number within the spec's bounds, every categorical feature as
one of its levels, and nothing else. A feature is optional and nullable (missing
values are allowed and scored) unless the spec lists it in ``features.required``;
``features.max_missing_share`` bounds the share of features a row may leave
missing, so a row with (nearly) nothing in it is refused, not scored. Numbers
are strict: ``true`` or ``"3"`` for a number is refused, not coerced, and so are
NaN and ±Infinity (``allow_inf_nan=False``), whatever the JSON parser made of
them. The BentoML service uses it as its input row and the OpenAPI schema is
derived from it, so the documentation and the check are one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, model_validator
from pydantic.json_schema import SkipJsonSchema

from loopline.core.spec import ModelSpec
from loopline.core.tasks import task_of
from loopline.serving.auth import CLIENT_FIELD

ENTITY_ID_MAX_LENGTH = 128
LEVEL_MAX_LENGTH = 128  # an unknown level the spec scores (``features.unknown_levels``) is at most this long


def _bool_as_level(value: object) -> object:
    return str(value) if isinstance(value, bool) else value


def application_model(spec: ModelSpec, name: str = "Application") -> type[BaseModel]:
    """The request row for ``spec``: unknown keys, wrong JSON types and non-finite numbers are errors."""
    entity = Annotated[str, Field(strict=True, min_length=1, max_length=ENTITY_ID_MAX_LENGTH)]
    fields: dict = {spec.dataset.entity_id: (entity, ...)}
    # The join keys of its stored features (dataset.keys): required, never a model input (text or a whole number,
    # as a feature repo entity's value_type may be either).
    key = Annotated[
        Annotated[str, Field(strict=True, min_length=1, max_length=ENTITY_ID_MAX_LENGTH)]
        | Annotated[int, Field(strict=True)],
        Field(description="a join key of the model's stored features, not a model input"),
    ]
    for name in spec.dataset.keys:
        fields[name] = (key, ...)
    required = set(spec.features.required)
    for feature, bounds in spec.features.numeric.items():
        number = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=bounds.min, le=bounds.max)]
        fields[feature] = (number, ...) if feature in required else (number | None, None)
    scored_unknown = spec.features.scored_unknown
    for feature, levels in spec.features.categorical.items():
        level = Literal[tuple(levels)]  # type: ignore[valid-type]
        if feature in scored_unknown:  # any level; one the model does not know is scored as unknown, and flagged
            described = f"one of {', '.join(levels)}; another level is scored as unknown and flagged"
            level = Annotated[str, Field(strict=True, min_length=1, max_length=LEVEL_MAX_LENGTH, description=described)]
        if set(levels) == {"False", "True"}:  # a yes/no column: JSON true/false is its natural form
            level = Annotated[level, BeforeValidator(_bool_as_level)]
        fields[feature] = (level, ...) if feature in required else (level | None, None)
    # Written by the service's edge guard (the API key's client), refused from clients; not in the OpenAPI.
    fields[CLIENT_FIELD] = (SkipJsonSchema[str | None], None)
    validators, schema_extra = {}, {}
    if spec.features.max_missing_share is not None:
        validators["_missing_share"] = model_validator(mode="after")(_missing_share_check(spec))
        schema_extra = _missing_share_schema(spec)
    config = ConfigDict(extra="forbid", json_schema_extra=schema_extra or None)
    return create_model(name, __config__=config, __validators__=validators, **fields)


def unknown_levels(values: dict[str, list], spec: ModelSpec) -> list[list[str]] | None:
    """Per row, the inputs whose level the model does not know (scored as unknown); None if the spec refuses them."""
    scored = spec.features.scored_unknown
    if not scored:
        return None
    n = len(next(iter(values.values()), []))
    flagged: list[list[str]] = [[] for _ in range(n)]
    for name, levels in scored.items():
        for i, value in enumerate(values.get(name) or ()):
            if value is not None and str(value) not in levels:
                flagged[i].append(name)
    return flagged


def allowed_missing(spec: ModelSpec) -> int:
    """How many of ``spec``'s features one row may leave missing (absent or null)."""
    return int(spec.features.max_missing_share * len(spec.features.names) + 1e-9)


def _missing_share_schema(spec: ModelSpec) -> dict:
    """The missing-share rule in the OpenAPI document, as far as JSON Schema can say it.

    ``minProperties`` is what it can enforce (absent keys count as missing, so a row with
    fewer keys is always refused); that null counts as missing too is beyond JSON Schema,
    so the limit itself is stated in the description (BentoML's OpenAPI model keeps no
    ``x-`` extension fields).
    """
    allowed, names = allowed_missing(spec), spec.features.names
    return {
        "minProperties": 1 + len(spec.dataset.keys) + len(names) - allowed,  # id, keys, the features that must be
        "description": f"At most {allowed} of the {len(names)} features may be missing (absent or null).",
    }


def _missing_share_check(spec: ModelSpec):
    names, limit = spec.features.names, spec.features.max_missing_share

    def check(row: Any) -> Any:
        missing = [n for n in names if getattr(row, n) is None]
        allowed = allowed_missing(spec)
        if len(missing) > allowed:
            raise ValueError(
                f"{len(missing)} of {len(names)} features are missing, at most {allowed} ({limit:.0%}) may be: "
                f"send {', '.join(missing[: len(missing) - allowed])}"
                + (f" or another of {', '.join(missing[len(missing) - allowed :])}" if allowed else "")
            )
        return row

    return check


def answer_model(spec: ModelSpec, name: str = "Prediction") -> type[BaseModel]:
    """The service's answer row for ``spec``'s task, always with the model version and top reason codes.

    binary: ``score`` and ``decision``; regression: ``prediction``; multiclass:
    ``predicted_class`` and its ``probabilities`` (class -> probability, summing to 1): the task's
    ``answer_fields`` (``loopline.core.tasks``), which the batch-scored file's columns are too.
    """
    fields: dict = {"request_id": (str, ...), **task_of(spec).answer_fields(spec)}
    fields["model_version"] = (str, ...)
    fields["reasons"] = (list[str], Field(description="the features that moved this answer most"))
    if spec.features.scored_unknown:
        fields["unknown_levels"] = (
            list[str],
            Field(description="inputs sent with a level the model does not know: scored as unknown (missing)"),
        )
    if spec.features.scored_missing_views:
        fields["stored_missing"] = (
            list[str],
            Field(description="feature views with no fresh value for this row's key: scored as missing"),
        )
    return create_model(name, **fields)


def answers(
    scored,
    request_ids: list[str],
    spec: ModelSpec,
    model: type[BaseModel],
    unknown: list[list[str]] | None = None,
    missing: list[list[str]] | None = None,
) -> list[BaseModel]:
    """Answer rows from a ``Scored`` (``loopline.serving.online``), in the task's shape.

    ``unknown``: per row, the inputs scored as unknown levels (``unknown_levels``), when the spec scores any.
    ``missing``: per row, the stored feature views scored as missing (``features.stored_missing``), likewise.

    Built with ``model_construct``: the values come from the platform's own scoring, not from a
    client, so validating them again would only cost time (BentoML serialises them as they are).
    """
    a = scored.answers
    columns = a.fields(spec)
    rows = []
    for i, rid in enumerate(request_ids):
        extra = {} if unknown is None else {"unknown_levels": unknown[i]}
        if missing is not None:
            extra["stored_missing"] = missing[i]
        rows.append(
            model.model_construct(
                request_id=rid,
                **{field: values[i] for field, values in columns.items()},
                model_version=scored.versions[i],
                reasons=a.reasons[i],
                **extra,
            )
        )
    return rows
