"""Derived inputs of the delivery_time model: pure functions of raw column arrays (loopline.core.features).

Each function gets its declared sources as float64 numpy arrays and returns one value per
row (NaN where an input is missing). Bump ``features.version`` in spec.yaml when any of this
changes.
"""

from __future__ import annotations

import numpy as np

from loopline.core.features import derived


@derived(sources=("distance_km", "traffic_index"))
def congested_km(c):
    """Distance weighted by traffic: what a courier actually has to get through."""
    return c["distance_km"] * (1 + c["traffic_index"])


@derived(sources=("order_hour",))
def rush_hour(c):
    """1 at lunch (11-13 h) and dinner (18-20 h), 0 otherwise."""
    hour = c["order_hour"]
    rush = ((hour >= 11) & (hour <= 13)) | ((hour >= 18) & (hour <= 20))
    return np.where(np.isnan(hour), np.nan, rush.astype(float))
