"""Derived inputs of the credit_risk model: pure functions of raw column arrays (loopline.core.features).

Each function gets a mapping of its declared sources to float64 numpy arrays and returns
one value per row; a ratio with a zero, negative or missing denominator is NaN (missing
for LightGBM), never inf. Bump ``features.version`` in spec.yaml when any of this changes.
"""

from __future__ import annotations

import numpy as np

from loopline.core.features import derived


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.shape(num), np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


@derived(sources=("loan_amount", "annual_income"))
def loan_to_income(c):
    return _ratio(c["loan_amount"], c["annual_income"])


@derived(sources=("loan_amount", "interest_rate", "loan_term_months", "annual_income"))
def installment_to_income(c):
    """Monthly annuity payment over monthly income; a zero rate degenerates to principal / term."""
    monthly_rate = c["interest_rate"] / 1200.0
    term = c["loan_term_months"]
    growth = (1 + monthly_rate) ** term
    annuity = c["loan_amount"] * monthly_rate * growth / (growth - 1)
    installment = np.where(monthly_rate > 0, annuity, c["loan_amount"] / term)
    installment = np.where(np.isnan(monthly_rate), np.nan, installment)  # unknown rate: unknown payment
    return _ratio(installment, c["annual_income"] / 12)


@derived(sources=("credit_history_months", "age"))
def history_to_age(c):
    return _ratio(c["credit_history_months"] / 12, c["age"])
