"""Derived inputs of the card_fraud model: pure functions of raw column arrays (loopline.core.features).

Two of them compare a request with stored history (``<view>__<feature>`` columns, read from the
feature store as of the transaction): trees split on one input at a time, so a ratio they would
need many splits to approximate is given to them. Bump ``features.version`` in spec.yaml when any
of this changes.
"""

from __future__ import annotations

from loopline.core.features import derived


@derived(sources=("amount", "card_activity__mean_amount_30d"))
def amount_vs_card_mean(c):
    """This amount as a multiple of the card's 30-day mean: a stolen card spends several times its usual."""
    return c["amount"] / c["card_activity__mean_amount_30d"]


@derived(sources=("merchant_activity__count_1d", "merchant_activity__count_7d"))
def merchant_surge(c):
    """The merchant's last day as a share of its week: about 1/7 for a steady merchant, near 1 in a surge."""
    return c["merchant_activity__count_1d"] / c["merchant_activity__count_7d"]
