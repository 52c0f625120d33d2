"""Generated credit-risk applications: weekly batches with a known, documented label relation.

Deterministic in (week, n_rows, seed, drift): each batch draws from
``numpy.random.default_rng([seed, week])``, so batches do not depend on the order
they are generated in. Knobs inject covariate drift (who applies changes),
concept drift (what predicts default changes), label delay, and malformed files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.ingestion.landing import mark_complete
from loopline.ops.demo_data import EPOCH, DriftKnobs, week_start, write_batch

__all__ = ["EPOCH", "DriftKnobs", "make_batch", "make_labels", "write_batch", "write_malformed"]
NUMERIC = (
    "age", "annual_income", "loan_amount", "loan_term_months", "interest_rate", "debt_to_income",
    "credit_history_months", "num_open_accounts", "num_delinquencies_2y", "credit_utilization", "employment_years",
)  # fmt: skip
CATEGORICAL = {
    "home_ownership": ("RENT", "OWN", "MORTGAGE", "OTHER"),
    "loan_purpose": (
        "debt_consolidation",
        "credit_card",
        "home_improvement",
        "car",
        "medical",
        "small_business",
        "other",
    ),
    "employment_type": ("salaried", "self_employed", "unemployed", "retired", "student"),
    "region": ("north", "south", "east", "west"),
}
FEATURE_COLUMNS = (*NUMERIC, *CATEGORICAL)
COLUMNS = ("applicant_id", "applied_at", *FEATURE_COLUMNS, "defaulted")
MALFORMED_KINDS = ("wrong_dtype", "missing_column", "out_of_range", "empty_file", "unparseable")
# What the batch suite (expectations/credit_risk_batch.json) accepts and the generator therefore keeps to
# (tests/data/test_generator_vs_suite.py checks these against the suite itself):
MAX_ROWS = 2_000_000  # expect_table_row_count_to_be_between
MAX_EMPLOYMENT_YEARS = 70  # expect_column_values_to_be_between employment_years
# Column: (share missing, `mostly` of the suite's not-null expectation: the share that must be present).
MISSING = {
    "employment_years": (0.08, 0.8),
    "annual_income": (0.03, 0.9),
    "credit_utilization": (0.02, 0.9),
    "home_ownership": (0.01, 0.95),
}


# DriftKnobs here: covariate_shift 1 = poorer, more indebted, more renters/unemployed applicants;
# concept_shift 1 = DTI/utilisation matter less, region and purpose start to matter.


def true_default_logit(df: pd.DataFrame, concept_shift: float = 0.0) -> np.ndarray:
    """The generating relation (log-odds of default):

        logit = -2.2 + 1.8·r,   r = 2.2·(1-c)·(DTI - 0.3) + 1.6·(1-c)·(utilisation - 0.4) + 0.45·delinquencies
                + 0.07·(rate - 12) - 0.55·log(income / 55k) - 0.004·(history_months - 80)
                - 0.04·min(employment_years, 20) + 0.25·[employment_years missing]
                + 0.35·[RENT] + 0.9·[unemployed] + 0.3·[student] + 0.5·[small_business]
                + c·(1.4·[region = south] + 1.0·[purpose = medical] - 0.8·[region = north])

    with c = concept_shift. Every effect is monotone in the stated direction.
    """
    c = concept_shift
    income = df["annual_income"].fillna(df["annual_income"].median()).clip(lower=1000)
    util = df["credit_utilization"].fillna(0.4)
    emp = df["employment_years"]
    risk = (
        2.2 * (1 - c) * (df["debt_to_income"] - 0.3)
        + 1.6 * (1 - c) * (util - 0.4)
        + 0.45 * df["num_delinquencies_2y"]
        + 0.07 * (df["interest_rate"] - 12)
        - 0.55 * np.log(income / 55_000)
        - 0.004 * (df["credit_history_months"] - 80)
        - 0.04 * emp.fillna(0).clip(upper=20)
        + 0.25 * emp.isna()
        + 0.35 * (df["home_ownership"] == "RENT")
        + 0.9 * (df["employment_type"] == "unemployed")
        + 0.3 * (df["employment_type"] == "student")
        + 0.5 * (df["loan_purpose"] == "small_business")
        + c
        * (1.4 * (df["region"] == "south") + 1.0 * (df["loan_purpose"] == "medical") - 0.8 * (df["region"] == "north"))
    )
    return (-2.2 + 1.8 * risk).to_numpy(dtype="float64")


def _features(rng: np.random.Generator, n: int, shift: float) -> pd.DataFrame:
    age = np.clip(rng.gamma(6.0, 6.5, n) + 18, 18, 90).round()
    income = np.clip(rng.lognormal(np.log(55_000) - 0.25 * shift, 0.55, n), 6_000, 2_000_000).round(-2)
    term = rng.choice([12, 24, 36, 48, 60], n, p=[0.1, 0.2, 0.4, 0.15, 0.15]).astype(float)
    loan = np.clip(income * rng.uniform(0.05, 0.6, n), 500, 1_000_000).round(-1)
    dti = np.clip(rng.beta(2.2, 6.0, n) * 1.3 + 0.12 * shift, 0, 3).round(3)
    util = np.clip(rng.beta(2.0, 3.0, n) * 1.1 + 0.1 * shift, 0, 1.5).round(3)
    delinq = np.minimum(rng.poisson(0.25 + 0.2 * shift, n), 20).astype(float)
    history = np.clip((age - 18) * 12 * rng.uniform(0.2, 0.9, n), 0, 900).round()
    rate = np.clip(6 + 20 * dti + 2.5 * delinq + rng.normal(0, 2.5, n), 3, 36).round(2)
    # At most since age 16, and never beyond the suite's bound (an old applicant with a long career).
    career = np.minimum(np.maximum(age - 16, 0), MAX_EMPLOYMENT_YEARS)
    employment_years = np.clip(rng.exponential(6, n), 0, career).round(1)
    # Mortgages grow rarer with the shift; beyond shift 8/3 there are none (a negative share is no share).
    tilt = np.maximum(np.array([0.35 + 0.15 * shift, 0.2, 0.4 - 0.15 * shift, 0.05]), 0.0)
    employment = np.array([0.68 - 0.1 * shift, 0.14, 0.05 + 0.1 * shift, 0.08, 0.05])
    frame = pd.DataFrame(
        {
            "age": age,
            "annual_income": income,
            "loan_amount": loan,
            "loan_term_months": term,
            "interest_rate": rate,
            "debt_to_income": dti,
            "credit_history_months": history,
            "num_open_accounts": np.minimum(rng.poisson(5, n), 60).astype(float),
            "num_delinquencies_2y": delinq,
            "credit_utilization": util,
            "employment_years": employment_years,
            "home_ownership": rng.choice(CATEGORICAL["home_ownership"], n, p=tilt / tilt.sum()),
            "loan_purpose": rng.choice(CATEGORICAL["loan_purpose"], n, p=[0.35, 0.2, 0.12, 0.12, 0.08, 0.06, 0.07]),
            "employment_type": rng.choice(CATEGORICAL["employment_type"], n, p=employment / employment.sum()),
            "region": rng.choice(CATEGORICAL["region"], n),
        }
    )
    for column, (rate_missing, mostly) in MISSING.items():
        missing = rng.uniform(size=n) < rate_missing
        # A small batch can draw more gaps than the suite's `mostly` allows (3 of 10 employment years):
        # keep only as many as it tolerates. Large batches are far below the limit and never changed.
        allowed = int(missing.sum())
        while allowed and (n - allowed) / n < mostly:
            allowed -= 1
        if missing.sum() > allowed:
            missing[np.flatnonzero(missing)[allowed:]] = False
        frame.loc[missing, column] = None
    return frame


def make_batch(
    week: int, n_rows: int = 1000, seed: int = 0, drift: DriftKnobs = DriftKnobs(), with_labels: bool = True
) -> pd.DataFrame:
    """One weekly batch of applications; with_labels=False leaves `defaulted` empty (label delay).

    Every batch passes the batch suite, whatever the knobs (``write_malformed`` makes the ones that do not).
    """
    if not 1 <= n_rows <= MAX_ROWS:
        raise ValueError(f"n_rows must be within [1, {MAX_ROWS}] (the batch suite's row count), got {n_rows}")
    rng = np.random.default_rng([seed, week])
    features = _features(rng, n_rows, drift.covariate_shift)
    offsets = np.sort(rng.integers(0, 7 * 86_400, n_rows))
    start = week_start(week)
    prob = 1 / (1 + np.exp(-true_default_logit(features, drift.concept_shift)))
    labels = (rng.uniform(size=n_rows) < prob).astype("int64")
    frame = pd.DataFrame(
        {
            "applicant_id": [f"A{seed:03d}-{week:04d}-{i:07d}" for i in range(n_rows)],
            "applied_at": (start + pd.to_timedelta(offsets, unit="s")).strftime("%Y-%m-%d %H:%M:%S"),
        }
    )
    frame = pd.concat([frame, features], axis=1)
    frame["defaulted"] = labels if with_labels else pd.array([pd.NA] * n_rows, dtype="Int64")
    return frame


def make_labels(week: int, n_rows: int = 1000, seed: int = 0, drift: DriftKnobs = DriftKnobs()) -> pd.DataFrame:
    """The outcomes that arrive later for make_batch(..., with_labels=False) with the same arguments."""
    labelled = make_batch(week, n_rows, seed, drift, with_labels=True)
    return labelled[["applicant_id", "applied_at", "defaulted"]]


def write_malformed(kind: str, path: Path, week: int = 0, seed: int = 0) -> Path:
    """A malformed batch of one kind, as upstream systems really produce them."""
    if kind not in MALFORMED_KINDS:
        raise ValueError(f"unknown malformed kind {kind!r}; expected one of {MALFORMED_KINDS}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame = make_batch(week, n_rows=200, seed=seed)
    if kind == "empty_file":
        tmp.write_bytes(b"")
    elif kind == "unparseable":
        text = frame.head(20).to_csv(index=False)
        tmp.write_text(text + 'A9,"2026-01-05 00:00:00",1,2,3,"unterminated\n' + "x,y\n" * 3 + "\x00\x00")
    else:
        if kind == "wrong_dtype":
            frame["annual_income"] = frame["annual_income"].astype(object)
            frame.loc[frame.index[::7], "annual_income"] = "fifty thousand"
        elif kind == "missing_column":
            frame = frame.drop(columns=["debt_to_income"])
        elif kind == "out_of_range":
            frame.loc[frame.index[:5], "age"] = -4
            frame.loc[frame.index[5:10], "credit_utilization"] = 9.0
        frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
    mark_complete(path)
    return path
