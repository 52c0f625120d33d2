"""The trigger forms of the rollout DAGs: fields, choices, descriptions, and the sentences a bad value gets."""

from __future__ import annotations

from typing import Any

from loopline.core.forms import FormField, check

VERSION_HINT = "enter 'challenger', 'previous', 'champion' or a registered version number such as 3"

CONTROL_FIELDS = [
    FormField(
        "action",
        "Action",
        "What to do with traffic now. Any action also ends a rollout that is running or queued.",
        "string",
        choices={
            "promote": "Promote: the version takes 100% now (the old champion keeps 'previous')",
            "rollback": "Roll back: an earlier version becomes champion again",
            "pin": "Pin: serve the version as canary at a fixed share (an A/B test)",
            "abort": "Abort: canary traffic to 0 now; the champion keeps serving",
        },
        hint="choose promote, rollback, pin or abort",
    ),
    FormField(
        "version",
        "Version",
        "Empty: the challenger for promote and pin, the previous champion for rollback; ignored by abort.",
        "string",
        default=None,
        optional=True,
        pattern=r"challenger|previous|champion|[1-9][0-9]*",
        hint=VERSION_HINT,
    ),
    FormField(
        "weight",
        "Canary share (pin only)",
        "For pin: the share of applicants the version serves, from 0 to 1 (0.05 = 5%). Ignored otherwise.",
        "number",
        default=None,
        optional=True,
        minimum=0,
        maximum=1,
        hint="0.05 means 5% of applicants",
    ),
    FormField(
        "reason",
        "Reason",
        "Why you change traffic; recorded in the audit trail with your user name.",
        "string",
        min_length=3,
        max_length=500,
        hint="say in a few words why you change traffic (at least 3 characters)",
    ),
]


def _control_rules(values: dict[str, Any]) -> list[str]:
    if values["action"] == "pin" and values["weight"] is None:
        return ["Canary share (pin only) is required for pin: give a share from 0 to 1, e.g. 0.05 for 5%"]
    if values["action"] == "pin" and values["weight"] == 0:
        return ["Canary share (pin only): a pin at 0 serves nothing; use abort to take a canary off, or give a share"]
    return []


def check_control(params: dict[str, Any]) -> dict[str, Any]:
    """The control form's values with the empty version filled in by action; FormError says what to change."""
    values = check(params, CONTROL_FIELDS, _control_rules)
    if values["version"] is None:
        values["version"] = "previous" if values["action"] == "rollback" else "challenger"
    if values["weight"] is None:
        values["weight"] = 0.0
    return values


ROLLOUT_FIELDS = [
    FormField(
        "version",
        "Version",
        "Which version to roll out: 'challenger' (the last one to pass the quality gate) or a version number.",
        "string",
        default="challenger",
        pattern=r"challenger|[1-9][0-9]*",
        hint="enter 'challenger' or a registered version number such as 3",
    ),
    FormField(
        "mode",
        "Mode",
        "How traffic moves to the version; 'spec' does what the model's spec.yaml says.",
        "string",
        default="spec",
        choices={
            "spec": "As the model spec says",
            "canary": "Canary: gated steps (e.g. 5% -> 20% -> 50% -> 100%)",
            "bluegreen": "Blue/green: one switch after an offline pre-switch check",
        },
    ),
]


def check_rollout(params: dict[str, Any]) -> dict[str, Any]:
    return check(params, ROLLOUT_FIELDS)
