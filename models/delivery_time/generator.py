"""Generated food-delivery orders: weekly batches with a known, documented delivery-time relation.

Deterministic in (week, n_rows, seed, drift): each batch draws from
``numpy.random.default_rng([seed, week])``. The platform's drift knobs
(``loopline.ops.demo_data.DriftKnobs``) mean, for this model:

- ``covariate_shift`` 1 = longer trips, heavier traffic and more rain (the city grows, winter comes);
- ``concept_shift`` 1 = traffic costs twice the time it used to and experience stops helping
  (a new routing app, a changed bonus scheme).

Minutes = preparation + distance x minutes per km of the vehicle x (1 + 0.6 traffic)
+ weather + rush hour + 0.8 per item - up to 4 for an experienced courier + noise (sd 4).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.ingestion.landing import mark_complete
from loopline.ops.demo_data import EPOCH, DriftKnobs, week_start, write_batch

__all__ = ["EPOCH", "DriftKnobs", "make_batch", "make_labels", "write_batch", "write_malformed"]

VEHICLES = {"bike": 4.0, "scooter": 3.0, "car": 2.5}  # minutes per km in free traffic
WEATHER = {"clear": 0.0, "rain": 6.0, "snow": 12.0, "fog": 4.0}  # minutes lost
ZONES = ("centre", "inner", "outer", "suburb")
MALFORMED_KINDS = ("out_of_range", "missing_column")
MAX_ROWS = 2_000_000


def _rush(hour: np.ndarray) -> np.ndarray:
    return ((hour >= 11) & (hour <= 13)) | ((hour >= 18) & (hour <= 20))


def _orders(rng: np.random.Generator, n: int, shift: float) -> pd.DataFrame:
    zone = rng.choice(ZONES, n, p=[0.3, 0.3, 0.25, 0.15])
    far = np.select([zone == "outer", zone == "suburb"], [1.4, 2.0], 1.0)
    distance = np.clip(rng.gamma(2.0, 1.6, n) * far * (1 + 0.5 * shift), 0.2, 30.0)
    rain = min(0.9, 0.2 + 0.3 * shift)
    weather = rng.choice(list(WEATHER), n, p=[0.7 - (rain - 0.2), rain, 0.05, 0.05])
    hour = rng.choice(np.arange(24), n, p=_hour_weights())
    experience = np.clip(rng.exponential(18.0, n), 0, 240).round(1)
    experience[rng.uniform(size=n) < 0.05] = np.nan  # couriers who did not say
    return pd.DataFrame(
        {
            "distance_km": distance.round(2),
            "items": np.clip(rng.poisson(2.0, n) + 1, 1, 30),
            "prep_minutes": np.clip(rng.normal(14, 5, n), 2, 90).round(1),
            "courier_experience_months": experience,
            "traffic_index": np.clip(rng.beta(2, 5, n) * 2 + 0.3 * shift, 0, 3).round(3),
            "order_hour": hour,
            "weather": weather,
            "vehicle": rng.choice(list(VEHICLES), n, p=[0.4, 0.4, 0.2]),
            "zone": zone,
        }
    )


def _hour_weights() -> np.ndarray:
    weights = np.ones(24)
    weights[11:14] += 4  # lunch
    weights[18:21] += 6  # dinner
    weights[0:7] = 0.2
    return weights / weights.sum()


def true_minutes(orders: pd.DataFrame, concept_shift: float = 0.0) -> np.ndarray:
    """The expected delivery time in minutes (before noise)."""
    per_km = orders["vehicle"].map(VEHICLES).to_numpy(float)
    traffic = orders["traffic_index"].to_numpy(float) * 0.6 * (1 + concept_shift)
    experience = np.nan_to_num(orders["courier_experience_months"].to_numpy(float), nan=6.0)
    skill = 4.0 * (1 - np.exp(-experience / 12.0)) * max(0.0, 1 - concept_shift)
    return (
        orders["prep_minutes"].to_numpy(float)
        + orders["distance_km"].to_numpy(float) * per_km * (1 + traffic)
        + orders["weather"].map(WEATHER).to_numpy(float)
        + 5.0 * _rush(orders["order_hour"].to_numpy())
        + 0.8 * orders["items"].to_numpy(float)
        - skill
    )


def make_batch(
    week: int, n_rows: int = 1000, seed: int = 0, drift: DriftKnobs = DriftKnobs(), with_labels: bool = True
) -> pd.DataFrame:
    """One weekly batch of delivered orders; with_labels=False leaves `delivery_minutes` empty (not delivered yet)."""
    if not 1 <= n_rows <= MAX_ROWS:
        raise ValueError(f"n_rows must be within [1, {MAX_ROWS}], got {n_rows}")
    rng = np.random.default_rng([seed, week])
    orders = _orders(rng, n_rows, drift.covariate_shift)
    minutes = np.clip(true_minutes(orders, drift.concept_shift) + rng.normal(0, 4, n_rows), 5, 300).round(1)
    day = rng.integers(0, 7, n_rows)
    stamp = week_start(week) + pd.to_timedelta(day, unit="D") + pd.to_timedelta(orders["order_hour"], unit="h")
    stamp = stamp + pd.to_timedelta(rng.integers(0, 3600, n_rows), unit="s")
    frame = pd.DataFrame(
        {
            "order_id": [f"O{seed:03d}-{week:04d}-{i:07d}" for i in range(n_rows)],
            "ordered_at": pd.DatetimeIndex(stamp).strftime("%Y-%m-%d %H:%M:%S"),
        }
    )
    frame = pd.concat([frame, orders], axis=1)
    frame["delivery_minutes"] = minutes if with_labels else np.full(n_rows, np.nan)
    return frame.sort_values("ordered_at", kind="stable").reset_index(drop=True)


def make_labels(week: int, n_rows: int = 1000, seed: int = 0, drift: DriftKnobs = DriftKnobs()) -> pd.DataFrame:
    """The delivery times that arrive later for make_batch(..., with_labels=False) with the same arguments."""
    return make_batch(week, n_rows, seed, drift)[["order_id", "ordered_at", "delivery_minutes"]]


def write_malformed(kind: str, path: Path, week: int = 0, seed: int = 0) -> Path:
    """A malformed batch: distances no city has, or a column gone missing upstream."""
    if kind not in MALFORMED_KINDS:
        raise ValueError(f"unknown malformed kind {kind!r}; expected one of {MALFORMED_KINDS}")
    frame = make_batch(week, n_rows=200, seed=seed)
    if kind == "out_of_range":
        frame.loc[frame.index[:5], "distance_km"] = 900.0
    else:
        frame = frame.drop(columns=["traffic_index"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
    mark_complete(path)
    return path
