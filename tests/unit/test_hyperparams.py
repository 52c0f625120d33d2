"""Hyperparameter overrides: valid ones merge into the spec's params, bad ones fail naming the key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from loopline.core.errors import LooplineError
from loopline.core.spec import load_spec
from loopline.training.hyperparams import OVERRIDE_SCHEMA, HyperparameterError, merge_params, validate_overrides

SPEC = load_spec("credit_risk", Path(__file__).resolve().parents[2] / "models")
BASE = dict(SPEC.training.params)


def test_overrides_merge_without_touching_inputs():
    base = {"objective": "binary", "learning_rate": 0.05, "num_leaves": 31}
    overrides = {"learning_rate": 0.1, "max_depth": 6}
    base_before, overrides_before = copy.deepcopy(base), copy.deepcopy(overrides)
    merged = merge_params(base, overrides)
    assert merged == {"objective": "binary", "learning_rate": 0.1, "num_leaves": 31, "max_depth": 6}
    assert base == base_before and overrides == overrides_before
    assert merged is not base and merged is not overrides


def test_no_overrides_give_an_equal_but_new_dict():
    merged = merge_params(BASE, {})
    assert merged == BASE and merged is not BASE
    merged["learning_rate"] = 0.9
    assert BASE["learning_rate"] == 0.05


def test_the_spec_values_of_overridable_params_are_themselves_valid():
    shipped = {k: v for k, v in BASE.items() if k in OVERRIDE_SCHEMA["properties"]}
    assert set(shipped) >= {"learning_rate", "num_leaves", "num_boost_round"}
    assert validate_overrides(shipped) == shipped


@pytest.mark.parametrize(
    "overrides",
    [
        {"learning_rate": 1},
        {"num_leaves": 2},
        {"num_leaves": 4096},
        {"max_depth": -1},
        {"bagging_freq": 0},
        {"lambda_l1": 0, "lambda_l2": 10.5, "min_gain_to_split": 0.0},
        {"feature_fraction": 1.0, "bagging_fraction": 0.5},
        {"num_boost_round": 10000},
        {"min_child_samples": 1},
    ],
)
def test_boundary_values_are_accepted(overrides):
    assert merge_params(BASE, overrides) == {**BASE, **overrides}


@pytest.mark.parametrize(
    "overrides,named",
    [
        # unknown keys
        ({"boosting": "dart"}, "boosting"),
        ({"learning_rat": 0.1}, "learning_rat"),
        ({"objective": "regression"}, "objective"),  # in the spec, but not a person's to change
        # wrong types
        ({"num_leaves": "many"}, "num_leaves"),
        ({"num_leaves": 31.5}, "num_leaves"),
        ({"num_boost_round": True}, "num_boost_round"),
        ({"learning_rate": "0.1"}, "learning_rate"),
        ({"lambda_l2": None}, "lambda_l2"),
        # out of range
        ({"learning_rate": 3}, "learning_rate"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"num_leaves": 1}, "num_leaves"),
        ({"max_depth": 65}, "max_depth"),
        ({"feature_fraction": 1.5}, "feature_fraction"),
        ({"bagging_fraction": 0.0}, "bagging_fraction"),
        ({"num_boost_round": 0}, "num_boost_round"),
        ({"lambda_l1": -0.1}, "lambda_l1"),
    ],
)
def test_bad_overrides_raise_naming_the_key(overrides, named):
    with pytest.raises(HyperparameterError, match=named) as err:
        merge_params(BASE, overrides)
    assert str(err.value).startswith("hyperparameter override")
    assert "allowed: ['bagging_fraction'" in str(err.value)  # and tells the person what is allowed


def test_a_bad_override_is_named_among_good_ones():
    with pytest.raises(HyperparameterError, match="num_leaves"):
        merge_params(BASE, {"learning_rate": 0.1, "num_leaves": 0, "max_depth": 8})


def test_overrides_must_be_a_mapping():
    with pytest.raises(HyperparameterError, match="overrides"):
        validate_overrides(["learning_rate", 0.1])  # type: ignore[arg-type]


def test_hyperparameter_errors_are_loopline_value_errors():
    assert issubclass(HyperparameterError, LooplineError) and issubclass(HyperparameterError, ValueError)
