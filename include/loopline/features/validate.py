"""A feature view's computed rows, checked by Great Expectations before anything reaches the store.

The suite is built from the view's definition (nothing to keep in sync by hand): exactly the
view's columns; join keys and event time never null; every ``count`` at least 0; each column
of its declared type. It runs as a real GE Checkpoint through the ingestion's machinery
(``loopline.ingestion.validation.validate_with_suite``), so the report, its summary line and the
pseudonymised key values are those of a quarantined batch: a failed check names its cause in
the report's first line, and the join keys' values in it are keyed pseudonyms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from loopline.features.definitions import Definitions, FeatureViewDef
    from loopline.ingestion.validation import ValidationReport

# The dtype names GE sees for each declared dtype (pandas' numpy and nullable variants).
# GE compares a column's dtype with these (numpy names, pandas' nullable dtypes by class name).
# Instants are checked as naive UTC (``validate_rows`` drops the zone, which compute always sets to UTC).
TYPE_NAMES: dict[str, list[str]] = {
    "int64": ["int64", "int32", "Int64Dtype", "Int32Dtype"],
    "float64": ["float64", "float32", "Float64Dtype"],
    "string": ["object", "str", "StringDtype"],
    "bool": ["bool", "BooleanDtype"],
    "unix_timestamp": ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "datetime64[s]"],
}
KEY_TYPES = {"int64": TYPE_NAMES["int64"], "string": TYPE_NAMES["string"]}


def suite_for(view: FeatureViewDef, defs: Definitions) -> dict[str, Any]:
    """The GE 1.x suite (as a dict) every computed batch of this view must pass."""
    keys = defs.join_keys(view.name)
    time_col = view.source.event_time
    columns = [*keys, time_col, *view.feature_names]
    expectations: list[dict[str, Any]] = [
        {"type": "expect_table_columns_to_match_set", "kwargs": {"column_set": columns, "exact_match": True}}
    ]
    for column in [*keys, time_col]:
        expectations.append({"type": "expect_column_values_to_not_be_null", "kwargs": {"column": column}})
    for entity in view.entities:
        entity_def = defs.entities[entity]
        expectations.append(
            {
                "type": "expect_column_values_to_be_in_type_list",
                "kwargs": {"column": entity_def.join_key, "type_list": KEY_TYPES[entity_def.value_type]},
            }
        )
    expectations.append(
        {
            "type": "expect_column_values_to_be_in_type_list",
            "kwargs": {"column": time_col, "type_list": TYPE_NAMES["unix_timestamp"]},
        }
    )
    for feature in view.features:
        dtype = feature.dtype or ("int64" if feature.agg == "count" else "float64")
        expectations.append(
            {
                "type": "expect_column_values_to_be_in_type_list",
                "kwargs": {"column": feature.name, "type_list": TYPE_NAMES[dtype]},
            }
        )
        if feature.agg == "count":
            expectations.append(
                {"type": "expect_column_values_to_be_between", "kwargs": {"column": feature.name, "min_value": 0}}
            )
    return {"name": f"feature_view_{view.name}", "expectations": expectations, "meta": {"view": view.name}}


def validate_rows(
    view: FeatureViewDef, rows: pd.DataFrame, defs: Definitions, subject: str, secret: str | None = None
) -> ValidationReport:
    """The view's suite over its computed rows: a report like an ingested batch's (keys pseudonymised)."""
    import pandas as pd

    from loopline.ingestion.validation import validate_with_suite

    rows = rows.copy()
    for column in rows.columns:
        if isinstance(rows[column].dtype, pd.DatetimeTZDtype):
            rows[column] = rows[column].dt.tz_convert("UTC").dt.tz_localize(None)
    return validate_with_suite(
        rows, subject, suite_for(view, defs), entity_ids=defs.join_keys(view.name), secret=secret
    )
