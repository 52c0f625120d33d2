"""`loopline onboard`: a model folder from a sample table that is not credit risk, checked with the real GE suite."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loopline.core.dag_factory import discover
from loopline.core.spec import load_spec
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
    table.assign(churned=table["tenure_months"] * 1.5).to_csv(sample, index=False)
    with pytest.raises(OnboardingError, match="looks like a regression task"):
        onboard("churn", sample, "churned", "observed_on", "customer_ref", models, expectations)
    table.to_csv(sample, index=False)
    onboard("churn", sample, "churned", "observed_on", "customer_ref", models, expectations)
    with pytest.raises(OnboardingError, match="exists already"):
        onboard("churn", sample, "churned", "observed_on", "customer_ref", models, expectations)
