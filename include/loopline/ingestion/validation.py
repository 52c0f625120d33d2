"""Great Expectations validation of batches and datasets against suites in ``expectations/``.

The suites are plain GE 1.x JSON kept in git; each validation runs a real GE
Checkpoint on an ephemeral context (no GE project folder to keep in sync).
Files that cannot even be read become a ``ValidationReport`` too, so every
rejected batch gets the same kind of readable report.

No entity id leaves a validation in clear: GE samples the offending values of a failed
expectation (``partial_unexpected_list`` ...), and when that expectation is on the entity-id
column those values are applicant ids. Reports end up in quarantine folders, MLflow artifacts,
XCom, alerts and task logs, so ``validate_frame`` replaces each of them by its keyed pseudonym
(``loopline.core.pseudonym``, the one prediction logs and outcomes use, so a report can
still be joined with them by whoever holds the secret). Row indices are kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pandas as pd

from loopline.core.errors import LooplineError

if TYPE_CHECKING:
    from loopline.core.spec import ModelSpec

READABLE_SUFFIXES = (".csv", ".parquet")
BETWEEN = "expect_column_values_to_be_between"


class SuiteError(LooplineError, ValueError):
    """An expectation suite file is missing or contains expectations GE rejects."""


@dataclass
class ValidationReport:
    """Outcome of validating one batch or dataset; what quarantine reports are made of."""

    subject: str
    success: bool
    rows: int | None
    failures: list[dict[str, Any]] = field(default_factory=list)
    read_error: str | None = None
    suite: str | None = None
    statistics: dict[str, Any] = field(default_factory=dict)
    ge_result: dict[str, Any] | None = None
    # Named encoding and shape problems (``loopline.ingestion.diagnose``), the most basic first.
    causes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "success": self.success,
            "rows": self.rows,
            "suite": self.suite,
            "read_error": self.read_error,
            "statistics": self.statistics,
            "failures": self.failures,
            "causes": self.causes,
            "ge_result": self.ge_result,
        }

    def summary(self) -> str:
        """A few lines a person can read in a terminal or an alert; a failure's first line names its cause.

        The cause is the first named problem (``causes``), else why the file could not be read,
        else the first failed expectation. Failures a named cause explains are folded into one
        count (they are all in ``validation.json``).
        """
        from loopline.ingestion.diagnose import explained_by

        where = f"suite {self.suite or '-'}, rows {self.rows if self.rows is not None else '-'}"
        if self.success:
            return f"{self.subject}: PASSED ({where})"
        shown = [f for f in self.failures if not explained_by(self.causes, f)]
        folded = len(self.failures) - len(shown)
        reasons = [c["text"] for c in self.causes]
        if self.read_error:
            reasons.append(f"cannot read file: {self.read_error}")
        reasons += [_failure_line(f) for f in shown]
        first = reasons[0] if reasons else "failed"
        lines = [f"{self.subject}: FAILED: {first}", *(f"  - {r}" for r in reasons[1:]), f"  ({where})"]
        if folded:
            lines.append(f"  ({folded} failed expectation(s) follow from the above: see validation.json)")
        return "\n".join(lines)

    def write(self, folder: Path, stem: str = "validation") -> tuple[Path, Path]:
        """Write ``<stem>.json`` (full GE result) and ``<stem>.txt`` (summary) into folder."""
        folder.mkdir(parents=True, exist_ok=True)
        json_path, text_path = folder / f"{stem}.json", folder / f"{stem}.txt"
        json_path.write_text(json.dumps(self.to_dict(), indent=2, default=str))
        text_path.write_text(self.summary() + "\n")
        return json_path, text_path


def read_batch(source: Path | IO[bytes], suffix: str | None = None) -> pd.DataFrame:
    """Read a batch (a path, or bytes already read with their file suffix) without coercing types.

    Validation must see what arrived; ingest passes the bytes it hashed, so what is
    validated is exactly what was claimed.
    """
    suffix = suffix or Path(source).suffix  # type: ignore[arg-type]
    if suffix == ".parquet":
        return pd.read_parquet(source)
    if suffix == ".csv":
        return pd.read_csv(source, low_memory=False)
    raise ValueError(f"unsupported batch file type {suffix!r}; expected one of {READABLE_SUFFIXES}")


def load_suite_dict(suite_name: str, expectations_dir: Path) -> dict[str, Any]:
    path = expectations_dir / f"{suite_name}.json"
    if not path.is_file():
        raise SuiteError(f"expectation suite {suite_name!r} not found at {path}")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SuiteError(f"{path} is not valid JSON: {err}") from err
    if raw.get("name") != suite_name or not isinstance(raw.get("expectations"), list):
        raise SuiteError(f"{path} must have name {suite_name!r} and a list of expectations")
    return raw


def with_spec_bounds(suite_dict: dict[str, Any], spec: ModelSpec, suite_path: Path) -> dict[str, Any]:
    """The suite with the spec's numeric bounds as its range expectations: one source of truth for bounds.

    ``features.numeric.<col>: {min, max}`` in the spec also bounds the service's requests
    (``loopline.serving.request_schema``); here the same numbers become the suite's
    ``expect_column_values_to_be_between`` for that column, so a bound is edited in one place.
    A suite may still carry its own range expectation for a spec feature (suites written before
    this rule do) only if it says the same; a different one is refused, naming both files and fields.
    """
    bounds = {col: (rng.min, rng.max) for col, rng in spec.features.numeric.items()}
    source = spec.model_dir / "spec.yaml" if spec.model_dir else f"the spec of {spec.name}"
    covered = set()
    for index, exp in enumerate(suite_dict["expectations"]):
        kwargs = exp.get("kwargs", {})
        column = kwargs.get("column")
        if exp.get("type") != BETWEEN or column not in bounds:
            continue
        low, high = bounds[column]
        theirs = (kwargs.get("min_value"), kwargs.get("max_value"))
        if (
            theirs != (low, high)
            or kwargs.get("mostly", 1) != 1
            or kwargs.get("strict_min")
            or kwargs.get("strict_max")
        ):
            extra = {k: kwargs[k] for k in ("mostly", "strict_min", "strict_max") if k in kwargs}
            raise SuiteError(
                f"{suite_path}: expectations[{index}] ({BETWEEN} on {column!r}) says"
                f" [{theirs[0]}, {theirs[1]}]{f' {extra}' if extra else ''},"
                f" but {source} features.numeric.{column} says [{low:g}, {high:g}]."
                f" The spec's bounds are the one source (they bound requests too): remove the suite's range"
                f" expectation for {column!r} (it is generated from the spec) or make it say the same."
            )
        covered.add(column)
    generated = [
        {"type": BETWEEN, "kwargs": {"column": col, "min_value": low, "max_value": high}, "meta": {"from": str(source)}}
        for col, (low, high) in bounds.items()
        if col not in covered
    ]
    return {**suite_dict, "expectations": [*suite_dict["expectations"], *generated]}


# Keys of a GE result that hold counts, shares or row positions, never column values.
_NOT_VALUES = frozenset(
    {
        "element_count",
        "missing_count",
        "missing_percent",
        "unexpected_count",
        "unexpected_percent",
        "unexpected_percent_total",
        "unexpected_percent_nonmissing",
        "partial_unexpected_index_list",
        "unexpected_index_list",
        "unexpected_index_column_names",
        "count",
    }
)
# Keys whose every element is a value of the expectation's column (GE's samples of bad rows).
_VALUE_LISTS = ("partial_unexpected_list", "unexpected_list")


def _touches(kwargs: dict[str, Any], column: str) -> bool:
    """Does an expectation read this column (single-column, column-pair or multicolumn kwargs)?"""
    named = [kwargs.get(k) for k in ("column", "column_A", "column_B")] + list(kwargs.get("column_list") or [])
    return column in named


def _is_value(value: Any) -> bool:
    return value is not None and not isinstance(value, bool) and value == value  # NaN != NaN


def _redact_result(result: dict[str, Any], hide: Any) -> dict[str, Any]:
    """A GE result with every column value replaced by ``hide(value)``; counts and indices kept.

    Sample lists and the values in ``partial_unexpected_counts`` are values by definition; anywhere
    else (``observed_value``, ``details``, ...) strings are taken as values too (numbers there are
    statistics), so nothing that looks like an id survives a format GE adds later.
    """

    def anywhere(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: value[k] if k in _NOT_VALUES else anywhere(v) for k, v in value.items()}
        if isinstance(value, list):
            return [anywhere(v) for v in value]
        return hide(value) if isinstance(value, str) else value

    redacted: dict[str, Any] = {}
    for key, value in result.items():
        if key in _NOT_VALUES:
            redacted[key] = value
        elif key in _VALUE_LISTS and isinstance(value, list):
            redacted[key] = [hide(v) if _is_value(v) else v for v in value]
        elif key == "partial_unexpected_counts" and isinstance(value, list):
            redacted[key] = [
                {**c, "value": hide(c["value"]) if _is_value(c.get("value")) else c.get("value")} for c in value
            ]
        else:
            redacted[key] = anywhere(value)
    return redacted


def redact_entity_values(described: dict[str, Any], entity_id: str | None, secret: str) -> dict[str, Any]:
    """The GE result (``describe_dict()`` as JSON) with the entity column's values pseudonymised, in place."""
    if not entity_id:
        return described
    from loopline.core.pseudonym import pseudonym

    def hide(value: Any) -> str:
        return pseudonym(str(value), secret)

    for run in described.get("validation_results", []):
        for exp in run.get("expectations", []):
            if _touches(exp.get("kwargs", {}), entity_id) and exp.get("result"):
                exp["result"] = _redact_result(exp["result"], hide)
    return described


def _failure_line(failure: dict[str, Any]) -> str:
    where = f" column {failure['column']!r}" if failure.get("column") else ""
    return f"{failure['expectation']}{where}: {failure['detail']}"


def _describe_failure(exp: dict[str, Any]) -> dict[str, Any]:
    kwargs = {k: v for k, v in exp.get("kwargs", {}).items() if k != "batch_id"}
    result = exp.get("result", {}) or {}
    if not result:  # GE could not evaluate it (e.g. a range check on text): no "observed None"
        raised = (exp.get("exception_info") or {}).get("exception_message")
        detail = f"could not be checked ({raised})" if raised else "could not be checked on these values"
        detail += f"; expected {kwargs}"
    elif "unexpected_count" in result:
        sample = [c["value"] for c in result.get("partial_unexpected_counts", [])][:5]
        detail = (
            f"{result['unexpected_count']} of {result.get('element_count')} rows unexpected "
            f"({result.get('unexpected_percent', 0):.1f}%), e.g. {sample}; expected {kwargs}"
        )
    else:
        detail = f"observed {result.get('observed_value')!r}; expected {kwargs}"
    return {
        "expectation": exp.get("expectation_type"),
        "column": kwargs.get("column"),
        "kwargs": kwargs,
        "detail": detail,
    }


# Shape problems explain the rest (a missing column also fails every check on that column): list them first.
_FIRST = (
    "expect_table_columns_to_match_set",
    "expect_table_row_count_to_be_between",
    "expect_column_values_to_be_in_type_list",
)


def _importance(failure: dict[str, Any]) -> int:
    return _FIRST.index(failure["expectation"]) if failure["expectation"] in _FIRST else len(_FIRST)


def validate_frame(
    df: pd.DataFrame,
    subject: str,
    suite_name: str,
    expectations_dir: Path,
    *,
    entity_id: str | None,
    secret: str | None = None,
    spec: ModelSpec | None = None,
) -> ValidationReport:
    """Run the suite as a GE Checkpoint against an in-memory frame.

    ``spec``: the model's spec, whose ``features.numeric`` bounds become the suite's range
    expectations (``with_spec_bounds``); every platform caller passes it.

    ``entity_id`` names the frame's entity-id column (the spec's ``dataset.entity_id``; ``None``
    only for data without one): its values are pseudonymised with ``secret`` (default: the
    settings' pseudonym secret) wherever they appear in the failures and the GE result. It has no
    default so that no caller can forget it and leak ids.
    """
    suite_dict = load_suite_dict(suite_name, expectations_dir)
    if spec is not None:
        suite_dict = with_spec_bounds(suite_dict, spec, expectations_dir / f"{suite_name}.json")
    return validate_with_suite(df, subject, suite_dict, entity_ids=[entity_id] if entity_id else [], secret=secret)


def validate_with_suite(
    df: pd.DataFrame, subject: str, suite_dict: dict[str, Any], *, entity_ids: list[str], secret: str | None = None
) -> ValidationReport:
    """Run a suite given as a GE 1.x dict (``name``, ``expectations``) as a Checkpoint against a frame.

    ``validate_frame`` reads its suite from ``expectations/``; a feature view's suite is built from
    its definition (``loopline.features.validate``). Each column in ``entity_ids`` is pseudonymised
    in the report as ``validate_frame``'s ``entity_id`` is.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    suite_name = suite_dict["name"]
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    try:
        suite = gx.ExpectationSuite(**{k: suite_dict[k] for k in ("name", "expectations", "meta") if k in suite_dict})
    except (TypeError, ValueError, KeyError) as err:
        raise SuiteError(f"suite {suite_name!r}: GE rejected it: {err}") from err
    if len(suite.expectations) != len(suite_dict["expectations"]):
        raise SuiteError(f"suite {suite_name!r}: GE rejected some expectations; check their types and kwargs")
    suite = context.suites.add(suite)
    batch = context.data_sources.add_pandas("loopline").add_dataframe_asset(suite_name)
    definition = batch.add_batch_definition_whole_dataframe("whole_frame")
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite_name}_validation", data=definition, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{suite_name}_checkpoint",
            validation_definitions=[validation],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 10},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": df})
    described = json.loads(json.dumps(result.describe_dict(), default=str))
    if entity_ids:
        if secret is None:
            from loopline.core.settings import get_settings

            secret = get_settings().pseudonym_secret
        for entity_id in entity_ids:
            redact_entity_values(described, entity_id, secret)
    run = described["validation_results"][0]
    failures = sorted((_describe_failure(e) for e in run["expectations"] if not e["success"]), key=_importance)
    return ValidationReport(
        subject=subject,
        success=bool(result.success),
        rows=len(df),
        failures=failures,
        suite=suite_name,
        statistics=run.get("statistics", {}),
        ge_result=described,
    )


def validate_file(
    path: Path,
    suite_name: str,
    expectations_dir: Path,
    *,
    entity_id: str | None,
    secret: str | None = None,
    spec: ModelSpec | None = None,
) -> tuple[ValidationReport, pd.DataFrame | None]:
    """Read and validate one landed file; an unreadable file is a failed report, not an exception.

    ``entity_id`` and ``secret`` as in ``validate_frame``.
    """
    try:
        df = read_batch(path)
    except Exception as err:  # any reader error means the same thing: quarantine with the reason
        report = ValidationReport(
            subject=path.name, success=False, rows=None, read_error=f"{type(err).__name__}: {err}", suite=suite_name
        )
        return report, None
    report = validate_frame(df, path.name, suite_name, expectations_dir, entity_id=entity_id, secret=secret, spec=spec)
    return report, df
