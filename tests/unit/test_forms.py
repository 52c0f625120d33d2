"""Trigger forms: harmless defaults, a description on every field, and bad values explained in words."""

from __future__ import annotations

import pytest

from loopline.core.actor import actor, is_automatic, run_starter, run_type_name
from loopline.core.forms import FormError
from loopline.rollout.forms import CONTROL_FIELDS, ROLLOUT_FIELDS, check_control, check_rollout
from loopline.training.train_form import TRAIN_FIELDS, check_train


@pytest.mark.parametrize("fields", [CONTROL_FIELDS, ROLLOUT_FIELDS, TRAIN_FIELDS])
def test_every_field_has_a_title_and_a_description_and_no_constraint_airflow_would_dump(fields):
    for field in fields:
        kwargs = field.param_kwargs()
        assert kwargs["title"] and len(kwargs["description"]) > 20, field.name
        assert not {"pattern", "minimum", "maximum", "minLength", "maxLength"} & set(kwargs), field.name
        if field.choices:
            assert set(kwargs["values_display"]) == set(field.choices)


def test_the_control_form_preselects_no_action_and_requires_a_reason():
    kwargs = {f.name: f.param_kwargs() for f in CONTROL_FIELDS}
    assert "default" not in kwargs["action"] and "default" not in kwargs["reason"]
    with pytest.raises(FormError, match="Action is required") as err:
        check_control({"reason": "because"})
    assert "promote, rollback, pin or abort" in str(err.value)
    with pytest.raises(FormError, match="Reason is required"):
        check_control({"action": "abort"})


def test_an_empty_version_means_what_the_action_needs():
    assert check_control({"action": "rollback", "reason": "bad model"})["version"] == "previous"
    assert check_control({"action": "promote", "reason": "good model"})["version"] == "challenger"
    assert check_control({"action": "pin", "weight": 0.1, "reason": "A/B"})["weight"] == 0.1


@pytest.mark.parametrize(
    ("values", "sentence"),
    [
        ({"action": "promte"}, "Action: 'promte' is not one of the choices; pick one of promote, rollback, pin, abort"),
        ({"action": "pin", "version": "v2"}, "Version: 'v2' is not valid; enter 'challenger', 'previous', 'champion'"),
        ({"action": "pin", "weight": 5}, "Canary share (pin only): 5 is out of range; give a value from 0 to 1"),
        ({"action": "pin", "weight": "ten"}, "Canary share (pin only) must be a number, got 'ten'"),
        ({"action": "pin"}, "Canary share (pin only) is required for pin"),
        ({"action": "abort", "reason": "x"}, "Reason is too short (1 characters)"),
        ({"action": "abort", "colour": "red"}, "unknown field(s) colour"),
    ],
)
def test_a_bad_control_value_becomes_a_sentence(values, sentence):
    with pytest.raises(FormError) as err:
        check_control({"reason": "a reason", **values})
    assert sentence in str(err.value)
    assert "Failed validating" not in str(err.value) and "{" not in str(err.value)


def test_the_rollout_form_explains_a_bad_version():
    assert check_rollout({"version": "challenger", "mode": "spec"})["mode"] == "spec"
    with pytest.raises(FormError, match="enter 'challenger' or a registered version number"):
        check_rollout({"version": "latest", "mode": "spec"})


def test_a_person_must_say_why_they_train_but_a_schedule_need_not():
    with pytest.raises(FormError, match="Reason is required when you trigger a training run by hand"):
        check_train({}, "manual")
    assert check_train({}, "scheduled")["reason"] == "scheduled"
    assert check_train({}, "asset_triggered")["reason"] == "new data version"
    assert check_train({"reason": "schema fix"}, "manual")["reason"] == "schema fix"


@pytest.mark.parametrize(
    ("values", "sentence"),
    [
        ({"data_version": "last week"}, "Data version: 'last week' is not valid; enter 'latest', a version such as"),
        ({"hyperparameters": {"num_leaves": "many"}}, "Hyperparameter overrides: hyperparameter override num_leaves"),
        ({"hyperparameters": {"not_a_param": 1}}, "allowed: "),
        ({"hyperparameters": "[1]"}, "Hyperparameter overrides must be a JSON object, got '[1]'"),
    ],
)
def test_a_bad_train_value_becomes_a_sentence(values, sentence):
    with pytest.raises(FormError) as err:
        check_train({"reason": "test", **values}, "manual")
    assert sentence in str(err.value)


def test_the_audit_actor_names_the_person_or_what_started_the_run():
    assert actor("m_rollout_control", "manual__1", "manual", "alice") == "alice (dag:m_rollout_control/manual__1)"
    assert run_starter("scheduled", None) == "scheduler" and run_starter("asset_triggered", "") == "asset"
    assert run_starter("manual", None) == "unknown user"
    assert is_automatic("asset_triggered") and is_automatic("scheduled") and not is_automatic("manual")


def test_a_celery_workers_run_type_enum_reads_as_its_value():
    # what a task gets on a Celery worker: the Task SDK's generated enum, whose str() is "DagRunType.SCHEDULED"
    from airflow.sdk.api.datamodels._generated import DagRunType

    assert run_type_name(DagRunType.SCHEDULED) == "scheduled" and is_automatic(DagRunType.ASSET_TRIGGERED)
    assert run_starter(DagRunType.SCHEDULED, None) == "scheduler"
    assert check_train({}, run_type_name(DagRunType.SCHEDULED))["reason"] == "scheduled"
