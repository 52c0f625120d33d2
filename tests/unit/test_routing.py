from __future__ import annotations

import numpy as np
import pytest

from loopline.core.pseudonym import pseudonym
from loopline.core.psi import psi
from loopline.core.serving_state import Route
from loopline.serving.routing import bucket, choose_version

IDS = [f"A-{i}" for i in range(20000)]


def test_buckets_are_uniform_and_stable():
    values = np.array([bucket(i, "credit_risk") for i in IDS])
    assert values.min() >= 0 and values.max() < 1
    assert abs(values.mean() - 0.5) < 0.01
    assert bucket("A-1", "credit_risk") == bucket("A-1", "credit_risk") != bucket("A-1", "other_model")


@pytest.mark.parametrize("weight", [0.05, 0.2, 0.5])
def test_observed_split_is_within_statistical_bounds(weight):
    route = Route("credit_risk", "1", "2", weight)
    share = np.mean([choose_version(route, i)[1] == "canary" for i in IDS])
    sigma = (weight * (1 - weight) / len(IDS)) ** 0.5
    assert abs(share - weight) < 4 * sigma


def test_stickiness_across_growing_weights():
    canary_at = {
        w: {i for i in IDS if choose_version(Route("credit_risk", "1", "2", w), i)[1] == "canary"}
        for w in (0.05, 0.2, 0.5, 1.0)
    }
    assert canary_at[0.05] <= canary_at[0.2] <= canary_at[0.5] <= canary_at[1.0] == set(IDS)


def test_no_champion_is_an_error_and_pseudonyms_hide_ids():
    with pytest.raises(LookupError):
        choose_version(Route("m"), "A-1")
    assert pseudonym("A-1", "s3cret") == pseudonym("A-1", "s3cret") != pseudonym("A-1", "other")
    assert "A-1" not in pseudonym("A-1", "s3cret")


def test_psi_is_zero_for_the_same_distribution_and_grows_with_shift():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=20000)
    assert psi(ref, rng.normal(size=20000)) < 0.01
    assert 0.1 < psi(ref, rng.normal(0.5, 1, 20000)) < psi(ref, rng.normal(1.0, 1, 20000))
    with pytest.raises(ValueError):
        psi(ref, np.array([]))
