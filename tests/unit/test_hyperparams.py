from __future__ import annotations

import pytest

from loopline.hyperparams import HyperparameterError, merge_params


def test_overrides_merge_without_touching_inputs():
    base, overrides = {"learning_rate": 0.05, "num_leaves": 31}, {"learning_rate": 0.1}
    assert merge_params(base, overrides) == {"learning_rate": 0.1, "num_leaves": 31}
    assert base["learning_rate"] == 0.05 and overrides == {"learning_rate": 0.1}


@pytest.mark.parametrize(
    "overrides,named",
    [
        ({"boosting": "dart"}, "boosting"),
        ({"num_leaves": "many"}, "num_leaves"),
        ({"learning_rate": 3}, "learning_rate"),
    ],
)
def test_bad_overrides_name_the_parameter(overrides, named):
    with pytest.raises(HyperparameterError, match=named):
        merge_params({}, overrides)
