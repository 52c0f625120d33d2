"""What `loopline onboard` chooses from the data, on tables generated here: bounds with a margin that later
batches stay within, bounds in one place (the spec) for the suite and the request schema, the binary threshold
and the gate's floors from a cross-validated baseline, the features a request must send, and a drift window
scaled to the table's volume."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from loopline.core.settings import get_settings
from loopline.core.spec import load_spec
from loopline.core.tasks import TASKS
from loopline.ingestion.validation import SuiteError, load_suite_dict, validate_frame, with_spec_bounds
from loopline.ops.onboarding import onboard
from loopline.serving.request_schema import application_model
from loopline.training import trainer
from loopline.training.gate import REJECTED, judge
from tests.unit.test_gate import mostly_positive_table


def people_table(n: int, seed: int, start: str = "2025-01-06", per_day: int = 24) -> pd.DataFrame:
    """Loan-like rows: an age that tops out near 90, an income with a long tail, a region, a 0/1 outcome."""
    rng = np.random.default_rng(seed)
    age = np.clip(rng.normal(47, 14, n), 18, 90.3).round(1)
    income = rng.lognormal(10.5, 0.8, n).round(0)
    visits = rng.poisson(3, n).astype(float)
    visits[rng.uniform(size=n) < 0.1] = np.nan
    region = rng.choice(["n", "s", "e", "w"], n)
    risk = -2 + 0.04 * (age - 47) - 0.5 * np.log(income / 36000) + 0.2 * np.nan_to_num(visits, nan=3)
    return pd.DataFrame(
        {
            "person": [f"P{seed}-{i:07d}" for i in range(n)],
            "at": pd.date_range(start, periods=n, freq=pd.Timedelta(days=1) / per_day).strftime("%Y-%m-%d %H:%M:%S"),
            "age": age,
            "income": income,
            "visits": visits,
            "region": region,
            "bad": (rng.uniform(size=n) < 1 / (1 + np.exp(-risk))).astype(int),
        }
    )


def onboarded(tmp_path, table: pd.DataFrame, name: str, target: str, timestamp: str, entity: str):
    sample = tmp_path / f"{name}.csv"
    table.to_csv(sample, index=False)
    spec_file, suite_file = onboard(name, sample, target, timestamp, entity, tmp_path / "models", tmp_path / "exp")
    return load_spec(name, tmp_path / "models"), spec_file, suite_file


# --- bounds: a margin later batches stay within -------------------------------------------------


def test_a_small_sample_does_not_quarantine_later_batches(tmp_path):
    sample = people_table(117, seed=1)  # the 117-row sample
    spec, _, _ = onboarded(tmp_path, sample, "people", "bad", "at", "person")
    assert spec.features.numeric["age"].max >= 91 and spec.features.numeric["age"].min <= 18
    later = [people_table(1000, seed=10 + n, start=f"2025-0{2 + n // 4}-0{1 + n % 4}") for n in range(8)]
    failed = [
        n
        for n, batch in enumerate(later)
        if not validate_frame(batch, f"b{n}", "people_batch", tmp_path / "exp", entity_id="person", spec=spec).success
    ]
    assert len(failed) <= 1, f"batches {failed} of 8 quarantined by bounds written from 117 rows"


def test_age_91_passes_after_a_sample_whose_oldest_is_90_3(tmp_path):
    spec, _, _ = onboarded(tmp_path, people_table(400, seed=2), "people", "bad", "at", "person")
    row = people_table(1, seed=3).assign(age=91.0)
    assert validate_frame(row, "r", "people_batch", tmp_path / "exp", entity_id="person", spec=spec).success
    application_model(spec).model_validate({"person": "p", "age": 91.0, "income": 40000.0, "region": "n"})


# --- one source of truth: the spec's bounds, for the suite and the requests ---------------------------


def test_the_spec_bounds_the_suite_and_the_requests_and_one_edit_moves_both(tmp_path):
    spec, spec_file, suite_file = onboarded(tmp_path, people_table(400, seed=2), "people", "bad", "at", "person")
    suite = json.loads(suite_file.read_text())
    assert not [e for e in suite["expectations"] if e["type"] == "expect_column_values_to_be_between"]
    limit = spec.features.numeric["age"].max
    row = people_table(1, seed=3).assign(age=limit + 5)
    request = {"person": "p", "age": limit + 5, "income": 40000.0, "visits": 2.0, "region": "n"}

    def refused_by_both(spec) -> bool:
        report = validate_frame(row, "r", "people_batch", tmp_path / "exp", entity_id="person", spec=spec)
        try:
            application_model(spec).model_validate(request)
            by_schema = False
        except ValidationError as err:
            by_schema = "age" in str(err)
        by_suite = not report.success and any(f["column"] == "age" for f in report.failures)
        assert by_suite == by_schema  # the suite and the request schema never disagree
        return by_suite

    assert refused_by_both(spec)
    spec_file.write_text(spec_file.read_text().replace(f"age: {{min: 0, max: {limit:g}}}", "age: {min: 0, max: 1000}"))
    assert not refused_by_both(load_spec("people", tmp_path / "models"))  # one edit, in the spec only


def test_a_suite_that_contradicts_the_spec_is_refused_naming_both_files_and_the_field(tmp_path):
    spec, spec_file, suite_file = onboarded(tmp_path, people_table(400, seed=2), "people", "bad", "at", "person")
    suite = json.loads(suite_file.read_text())
    suite["expectations"].append(
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "age", "min_value": 18, "max_value": 90.3}}
    )
    suite_file.write_text(json.dumps(suite))
    with pytest.raises(SuiteError) as err:
        validate_frame(people_table(5, seed=3), "b", "people_batch", tmp_path / "exp", entity_id="person", spec=spec)
    message = str(err.value)
    assert str(suite_file) in message and str(spec_file) in message and "features.numeric.age" in message
    assert "[18, 90.3]" in message


@pytest.mark.parametrize("model", ["card_fraud", "credit_risk", "delivery_time"])
def test_the_demo_suites_agree_with_their_specs(model):
    settings = get_settings()
    spec = load_spec(model, settings.models_dir)
    suite = load_suite_dict(spec.dataset.expectation_suite, settings.expectations_dir)
    merged = with_spec_bounds(suite, spec, settings.expectations_dir / "x.json")  # raises on a contradiction
    assert len(merged["expectations"]) == len(suite["expectations"])  # every bound was already there, the same


# --- the threshold and the gate's floors from the data ------------------------------------------------


def test_a_mostly_positive_target_gets_a_threshold_that_decides_both_ways_and_passes_the_gate(tmp_path):
    table = mostly_positive_table()
    spec, spec_file, _ = onboarded(tmp_path, table.head(600), "accounts", "converted", "seen_at", "account")
    assert "the sample's base rate" in spec_file.read_text()  # the spec says how the threshold was chosen
    assert spec.training.decision_threshold == pytest.approx(table.head(600)["converted"].mean(), abs=1e-3)
    _, holdout = trainer.fit_and_evaluate(table, spec, dict(spec.training.params))
    assert 0.05 < holdout["decision_share"] < 0.95
    result = judge(holdout, spec.quality_gate, TASKS["binary"])
    assert result.passed, result.failed()
    assert {"min_auc", "min_decision_share", "max_decision_share"} <= set(spec.quality_gate)


def noisy_rents(n: int = 2000, seed: int = 4) -> pd.DataFrame:
    """A regression target only partly explained by its inputs (R² about 0.2): real, but under a fixed 0.3 floor."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(20, 120, n).round(1)
    district = rng.choice(["a", "b", "c"], n)
    rent = (size * 5 + rng.normal(0, 300, n) + 1000).round(2)
    return pd.DataFrame(
        {
            "listing": [f"L{i:06d}" for i in range(n)],
            "listed": pd.date_range("2025-01-06", periods=n, freq="2h").strftime("%Y-%m-%d %H:%M:%S"),
            "size": size,
            "district": district,
            "rent": rent,
        }
    )


def test_gate_floors_come_from_a_baseline_on_the_sample_not_fixed_numbers(tmp_path):
    table = noisy_rents()
    spec, spec_file, _ = onboarded(tmp_path, table.head(800), "rents", "rent", "listed", "listing")
    assert spec.quality_gate["min_r2"] != TASKS["regression"].default_gate["min_r2"]
    assert "CV " in spec_file.read_text().split("quality_gate:")[1].split("rollout:")[0]
    _, holdout = trainer.fit_and_evaluate(table, spec, dict(spec.training.params))
    assert 0.05 < holdout["r2"] < 0.3  # the fixed default floor 0.3 would have rejected this useful model
    result = judge(holdout, spec.quality_gate, TASKS["regression"])
    assert result.passed, result.failed()
    useless = judge(
        {**holdout, "rmse": holdout["baseline_rmse"] * 1.01, "r2": -0.02}, spec.quality_gate, TASKS["regression"]
    )
    assert useless.decision == REJECTED


# --- what a request must send --------------------------------------------------------------------


def test_a_request_with_only_the_id_is_refused_naming_the_missing_features(tmp_path):
    spec, spec_file, _ = onboarded(tmp_path, people_table(600, seed=5), "people", "bad", "at", "person")
    required = spec.features.required
    assert required and "visits" not in required  # visits has nulls in the sample: never required
    assert spec.features.max_missing_share is not None and spec.features.max_missing_share < 1
    with pytest.raises(ValidationError) as err:
        application_model(spec).model_validate({"person": "P1"})
    assert all(name in str(err.value) for name in required)
    full = {"person": "P1", "age": 50.0, "income": 30000.0, "visits": None, "region": "n"}
    application_model(spec).model_validate(full)  # a real row, one null where the sample had nulls: scored


# --- the drift window scaled to the table -------------------------------------------------------------


@pytest.mark.parametrize("per_day,window,min_window", [(2000, 24, 500), (240, 24, 120), (4, 240, 20)])
def test_min_window_and_the_window_follow_the_tables_rows_per_day(tmp_path, per_day, window, min_window):
    n = min(4000, per_day * 30)
    spec, spec_file, _ = onboarded(tmp_path, people_table(n, seed=6, per_day=per_day), "people", "bad", "at", "person")
    assert spec.monitoring.window_hours == min(window, 168)
    assert spec.monitoring.min_window == min_window
    assert "rows a day" in spec_file.read_text()
