"""`loopline onboard`: a model folder from a sample table that is not credit risk, checked with the real GE suite."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loopline.core.dag_factory import discover
from loopline.core.spec import load_spec
from loopline.core.tasks import TASKS
from loopline.ingestion.validation import validate_frame
from loopline.ops.onboarding import OnboardingError, onboard


def churn_table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """A subscription table with columns of its own, nothing like the demo model's."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 72, n)
    charges = rng.normal(70, 20, n).round(2)
    charges[rng.uniform(size=n) < 0.05] = np.nan
    plan = rng.choice(["basic", "plus", "pro"], n)
    churned = (rng.uniform(size=n) < 1 / (1 + np.exp(0.05 * tenure - 1))).astype(int)
    return pd.DataFrame(
        {
            "customer_ref": [f"C{i:06d}" for i in range(n)],
            "observed_on": pd.date_range("2025-01-01", periods=n, freq="6h").strftime("%Y-%m-%d %H:%M:%S"),
            "tenure_months": tenure,
            "monthly_charges": charges,
            "plan": plan,
            "is_paperless": rng.uniform(size=n) < 0.5,
            "notes": [f"free text {i}" for i in range(n)],
            "churned": churned,
        }
    )


def rent_table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Flat rents (a regression target, in euros), with columns of their own."""
    rng = np.random.default_rng(seed)
    size = rng.gamma(6, 12, n).round(1) + 15
    rooms = np.clip((size / 25).round() + rng.integers(-1, 2, n), 1, 8)
    district = rng.choice(["old_town", "harbour", "hills", "ring"], n)
    premium = pd.Series(district).map({"old_town": 4.0, "harbour": 2.5, "hills": 1.0, "ring": 0.0}).to_numpy()
    floor = rng.integers(0, 12, n).astype(float)
    floor[rng.uniform(size=n) < 0.04] = np.nan
    rent = (size * (9 + premium) + 40 * rooms + np.nan_to_num(floor) * 6 + rng.normal(0, 60, n)).round(2)
    return pd.DataFrame(
        {
            "listing": [f"L-{seed}-{i:06d}" for i in range(n)],
            "listed_at": pd.date_range("2025-03-03", periods=n, freq="5h").strftime("%Y-%m-%dT%H:%M:%S"),
            "size_m2": size,
            "rooms": rooms,
            "floor": floor,
            "district": district,
            "balcony": rng.uniform(size=n) < 0.4,
            "monthly_rent": rent,
        }
    )


def ticket_table(n: int = 900, seed: int = 0) -> pd.DataFrame:
    """Support tickets and the priority a person gave them (a multiclass target with text labels)."""
    rng = np.random.default_rng(seed)
    customers = rng.integers(1, 5000, n)
    seats = rng.integers(1, 500, n)
    outage = rng.uniform(size=n) < 0.15
    channel = rng.choice(["email", "phone", "chat"], n, p=[0.5, 0.2, 0.3])
    words = rng.integers(5, 400, n)
    urgency = 0.004 * seats + 2.5 * outage + (channel == "phone") * 1.0 + rng.normal(0, 0.6, n)
    priority = np.select([urgency > 3, urgency > 1.6, urgency > 0.6], ["urgent", "high", "normal"], "low")
    return pd.DataFrame(
        {
            "ticket": [f"T{seed}{i:07d}" for i in range(n)],
            "opened": pd.date_range("2025-05-05", periods=n, freq="1h").strftime("%Y-%m-%d %H:%M"),
            "customer_age_days": customers,
            "seats": seats,
            "mentions_outage": outage,
            "channel": channel,
            "words": words,
            "priority": priority,
        }
    )


@pytest.fixture
def folders(tmp_path):
    return tmp_path / "models", tmp_path / "expectations"


def test_a_sample_becomes_a_model_folder_whose_suite_accepts_it(tmp_path, folders):
    models, expectations = folders
    sample = tmp_path / "churn.csv"
    table = churn_table()
    table.to_csv(sample, index=False)
    spec_file, suite_file = onboard("churn", sample, "churned", "observed_on", "customer_ref", models, expectations)
    spec = load_spec("churn", models)
    assert set(spec.features.numeric) == {"tenure_months", "monthly_charges"}
    assert spec.features.categorical["plan"] == ["basic", "plus", "pro"]
    assert "notes" not in spec.features.names and "# not a feature: notes" in spec_file.read_text()
    bounds = spec.features.numeric["tenure_months"]
    assert bounds.min <= table["tenure_months"].min() and bounds.max >= table["tenure_months"].max()
    report = validate_frame(pd.read_csv(sample), "sample", "churn_batch", expectations, entity_id="customer_ref")
    assert report.success, report.summary()
    broken = table.copy()
    broken.loc[:5, "plan"] = "platinum"
    assert not validate_frame(broken, "b", "churn_batch", expectations, entity_id="customer_ref").success
    assert [s.name for s in discover(models)[0]] == ["churn"]  # the platform now generates its line


def test_onboarding_refuses_what_it_cannot_make_a_model_of(tmp_path, folders):
    models, expectations = folders
    sample = tmp_path / "t.csv"
    table = churn_table()
    table.to_csv(sample, index=False)
    with pytest.raises(OnboardingError, match="no column"):
        onboard("churn", sample, "left", "observed_on", "customer_ref", models, expectations)
    with pytest.raises(OnboardingError, match="lower-case"):
        onboard("Churn Model", sample, "churned", "observed_on", "customer_ref", models, expectations)
    table.assign(churned=table["plan"].map({"basic": "a", "plus": "b", "pro": "a"})).to_csv(sample, index=False)
    with pytest.raises(OnboardingError, match="a multiclass target needs 3 to 50 distinct values"):
        onboard("churn", sample, "churned", "observed_on", "customer_ref", models, expectations, task="multiclass")
    with pytest.raises(OnboardingError, match="--task 'ranking': use one of"):
        onboard("churn", sample, "churned", "observed_on", "customer_ref", models, expectations, task="ranking")
    table.assign(churned=table["plan"].map({"basic": "a", "plus": "b", "pro": "a"})).to_csv(sample, index=False)
    with pytest.raises(OnboardingError, match="must hold 0 and 1"):
        onboard("churn", sample, "churned", "observed_on", "customer_ref", models, expectations)
    table.assign(churned=table["plan"]).to_csv(sample, index=False)
    with pytest.raises(OnboardingError, match="must be numeric"):
        onboard("churn", sample, "churned", "observed_on", "customer_ref", models, expectations, task="regression")
    table.to_csv(sample, index=False)
    onboard("churn", sample, "churned", "observed_on", "customer_ref", models, expectations)
    with pytest.raises(OnboardingError, match="exists already"):
        onboard("churn", sample, "churned", "observed_on", "customer_ref", models, expectations)


@pytest.mark.parametrize(
    "make,name,target,timestamp,entity,task",
    [
        (rent_table, "rents", "monthly_rent", "listed_at", "listing", "regression"),
        (ticket_table, "tickets", "priority", "opened", "ticket", "multiclass"),
    ],
)
def test_the_task_type_is_inferred_and_the_folder_fits_it(
    tmp_path, folders, make, name, target, timestamp, entity, task
):
    models, expectations = folders
    sample = tmp_path / f"{name}.parquet"
    table = make()
    table.to_parquet(sample, index=False)
    spec_file, _ = onboard(name, sample, target, timestamp, entity, models, expectations)
    spec = load_spec(name, models)
    assert spec.task == task and spec.training.decision_threshold is None
    assert set(spec.quality_gate) <= set(TASKS[task].gate_keys()) and spec.quality_gate
    if task == "multiclass":
        assert spec.dataset.classes == ["high", "low", "normal", "urgent"]
    assert f"objective: {TASKS[task].objectives[0]}" in spec_file.read_text()
    report = validate_frame(pd.read_parquet(sample), "sample", f"{name}_batch", expectations, entity_id=entity)
    assert report.success, report.summary()
    wrong = table.copy()
    wrong[target] = wrong[target].astype(object)
    wrong.loc[:3, target] = "n/a"  # not a class, not a number
    assert not validate_frame(wrong, "w", f"{name}_batch", expectations, entity_id=entity).success
