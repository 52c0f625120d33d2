"""Trigger forms that guide: one definition per field gives the Airflow form and the check that explains.

Airflow validates a run's params with jsonschema and answers a bad value with the raw
validation dump (schema, instance, path). So the form a DAG shows keeps only what
draws the widgets (type, choices with ``values_display``, title, description), and
every constraint lives here: the DAG's first task calls ``check`` on the run's
params, which turns each bad value into a sentence naming the field, what was given
and what to enter instead (``FormError``, a permanent failure: no retry).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loopline.core.errors import LooplineError


class FormError(LooplineError, ValueError):
    """A trigger form value Loopline cannot use; the message says, per field, what to change."""


_UNSET = object()


@dataclass(frozen=True)
class FormField:
    """One field of a trigger form: how it is drawn, and what it must be."""

    name: str
    title: str
    description: str
    kind: str  # "string" | "number" | "object"
    default: Any = _UNSET  # _UNSET: no default, the form requires a value
    optional: bool = False  # None is accepted (and drawn as an optional field)
    choices: Mapping[str, str] = field(default_factory=dict)  # value -> label shown in the form
    pattern: str | None = None
    hint: str = ""  # what a valid value looks like, for the error sentence
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None

    def param_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``airflow.sdk.Param`` for this field: widgets only, no constraint."""
        kwargs: dict[str, Any] = {
            "type": [self.kind, "null"] if self.optional else self.kind,
            "title": self.title,
            "description": self.description,
        }
        if self.default is not _UNSET:
            kwargs["default"] = self.default
        if self.choices:
            kwargs["enum"] = [*self.choices, *([None] if self.optional else [])]
            kwargs["values_display"] = dict(self.choices)
        return kwargs


_KINDS = {"string": (str,), "number": (int, float), "object": (dict,)}
_KIND_NAMES = {"string": "text", "number": "a number", "object": "a JSON object"}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def problem(spec: FormField, value: Any) -> str | None:
    """What is wrong with ``value`` for ``spec``, as a sentence; None when it is fine."""
    label = spec.title
    if value is None:
        return None if spec.optional else f"{label} is required: {spec.hint or spec.description}"
    if isinstance(value, bool) or not isinstance(value, _KINDS[spec.kind]):
        return f"{label} must be {_KIND_NAMES[spec.kind]}, got {_shown(value)}"
    if spec.choices and value not in spec.choices:
        return f"{label}: {_shown(value)} is not one of the choices; pick one of {', '.join(spec.choices)}"
    if spec.pattern and not re.fullmatch(spec.pattern, value):
        return f"{label}: {_shown(value)} is not valid; {spec.hint}"
    low, high = spec.minimum, spec.maximum
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"from {low:g} to {high:g}" if low is not None and high is not None else ""
        bounds = bounds or (f"of at least {low:g}" if low is not None else f"of at most {high:g}")
        return f"{label}: {value} is out of range; give a value {bounds}" + (f" ({spec.hint})" if spec.hint else "")
    if spec.kind == "string":
        if spec.min_length is not None and len(value.strip()) < spec.min_length:
            return f"{label} is too short ({len(value.strip())} characters): {spec.hint or spec.description}"
        if spec.max_length is not None and len(value) > spec.max_length:
            return f"{label} is too long ({len(value)} characters); keep it within {spec.max_length}"
    return None


def check(
    values: Mapping[str, Any],
    fields: list[FormField],
    rules: Callable[[dict[str, Any]], list[str]] | None = None,
) -> dict[str, Any]:
    """The form's values, checked field by field and then across fields (``rules``); FormError lists every problem."""
    known = {f.name for f in fields}
    checked = {f.name: values.get(f.name, None if f.default is _UNSET else f.default) for f in fields}
    problems = [p for f in fields if (p := problem(f, checked[f.name]))]
    unknown = sorted(set(values) - known)
    if unknown:
        problems.append(f"unknown field(s) {', '.join(unknown)}; this form has {', '.join(sorted(known))}")
    if not problems and rules is not None:
        problems = rules(checked)
    if problems:
        raise FormError("; ".join(problems))
    return checked
