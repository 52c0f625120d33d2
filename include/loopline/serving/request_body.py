"""The prediction request's body: ``{"instances": [row, ...]}``, for every model.

The key is the platform's word, not a model's: ``instances`` is what TF Serving's and KServe's
v1 protocol, Vertex AI and MLflow's scoring server (one of its accepted keys) call the rows to
score, so a client written for any of them reads it at once. BentoML names the body's keys after
the API's parameters; the parameter is ``instances`` and this model is its ``input_spec``, which
is how the old key stays accepted: ``applications`` (the first model's word, still sent by
existing clients and the demo's older scripts) is a validation alias of the same field. The
OpenAPI document names only ``instances``; a body with both keys is refused, not half-read.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, Field, create_model, model_validator

ROWS_KEY = "instances"
OLD_ROWS_KEYS = ("applications",)  # accepted as ROWS_KEY, for clients written before it


class _Body(BaseModel):
    @model_validator(mode="before")
    @classmethod
    def _one_rows_key(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = [key for key in (ROWS_KEY, *OLD_ROWS_KEYS) if key in data]
            if len(given) > 1:
                raise ValueError(f"send the rows under {ROWS_KEY!r} only ({given[1]!r} is its old name)")
        return data


def request_body(row: type[BaseModel], max_rows: int, name: str = "PredictRequest") -> type[BaseModel]:
    """The body model: ``instances``, 1 to ``max_rows`` rows of ``row``, also read from an old key."""
    rows = Field(
        min_length=1,
        max_length=max_rows,
        validation_alias=AliasChoices(ROWS_KEY, *OLD_ROWS_KEYS),
        description=f"the rows to score (1 to {max_rows}); the old key {OLD_ROWS_KEYS[0]!r} is read as this one",
    )
    return create_model(name, __base__=_Body, **{ROWS_KEY: (list[row], rows)})  # type: ignore[call-overload]
