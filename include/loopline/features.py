"""Feature building shared by training and serving: one function, one behaviour.

Categoricals become integer codes in the order the spec lists their levels, so a
code means the same thing at training and at serving time, whatever levels a
batch happens to contain. Unknown or missing levels become NaN, which LightGBM
treats as missing. Bump ``features.version`` in the spec when this changes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from loopline.spec import ModelSpec

# Derived model inputs and the raw features each is computed from (build_features below). Drift
# monitoring watches raw features, so it shares a derived input's importance among its sources.
DERIVED_INPUTS: dict[str, tuple[str, ...]] = {
    "loan_to_income": ("loan_amount", "annual_income"),
    "installment_to_income": ("loan_amount", "interest_rate", "loan_term_months", "annual_income"),
    "history_to_age": ("credit_history_months", "age"),
}
DERIVED_FEATURES = tuple(DERIVED_INPUTS)


def feature_columns(spec: ModelSpec) -> list[str]:
    """Model input columns, in the order the booster sees them."""
    return [*spec.features.numeric, *DERIVED_FEATURES, *spec.features.categorical]


def categorical_columns(spec: ModelSpec) -> list[str]:
    return list(spec.features.categorical)


def _ratio(num: pd.Series, den: pd.Series) -> pd.Series:
    return (num / den.where(den > 0)).astype("float64")


def build_features(raw: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """Turn raw applications into the float matrix the model takes.

    Raises KeyError naming the missing columns rather than producing a silently
    wrong matrix.
    """
    missing = [c for c in spec.features.names if c not in raw.columns]
    if missing:
        raise KeyError(f"raw data lacks feature columns: {missing}")
    out = pd.DataFrame(index=raw.index)
    for name in spec.features.numeric:
        out[name] = pd.to_numeric(raw[name], errors="coerce").astype("float64")
    monthly_rate = out["interest_rate"] / 1200.0
    term = out["loan_term_months"]
    # Annuity payment; a zero rate degenerates to principal / term.
    growth = (1 + monthly_rate) ** term
    annuity = out["loan_amount"] * monthly_rate * growth / (growth - 1)
    installment = np.where(monthly_rate > 0, annuity, out["loan_amount"] / term)
    installment = np.where(monthly_rate.isna(), np.nan, installment)  # unknown rate: unknown payment
    out["loan_to_income"] = _ratio(out["loan_amount"], out["annual_income"])
    out["installment_to_income"] = _ratio(pd.Series(installment, index=out.index), out["annual_income"] / 12)
    out["history_to_age"] = _ratio(out["credit_history_months"] / 12, out["age"])
    for name, levels in spec.features.categorical.items():
        codes = {level: float(i) for i, level in enumerate(levels)}
        out[name] = raw[name].map(codes).astype("float64")
    return out[feature_columns(spec)]
