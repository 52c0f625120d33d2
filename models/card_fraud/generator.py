"""Generated card transactions: weekly batches where fraud shows mostly in a card's and a merchant's history.

Deterministic in (week, n_rows, seed, drift): each batch draws from
``numpy.random.default_rng([seed, week])``; the card and merchant populations (each card's usual
spend and activity, each merchant's category and size) draw from ``default_rng([seed, 1])`` and
are the same in every week, so a card's history runs on from one week's batch into the next.

One batch is every transaction of its week: it is both the model's data (with the ``is_fraud``
label, known later for an unlabelled batch) and the event stream the feature views of
``feature_repo/cards.yaml`` and ``feature_repo/merchants.yaml`` aggregate (card_id, merchant_id,
amount, transacted_at; never the label). ``make_events`` gives that event view of a batch.

The generating story (what a model can learn, and from where):

- **normal spending**: each card spends around its own usual amount (a log-normal mean from
  about 10 to 300), a few times a day at most, mostly by day, at merchants of its categories;
- **a stolen card** (about 1.5 % of cards a week) is drained in a burst: 3 to 9 transactions
  within an hour, each about 4x (2x-10x) the card's usual amount, mostly online, electronics or
  digital goods, at any hour. Seen alone, such an amount is common for a high-spending card:
  what gives it away is the card's last hour (``card_activity:count_1h``, ``spend_1h``) and its
  30-day mean (``card_activity:mean_amount_30d``);
- **card testing** at a compromised digital-goods merchant (one a week): many small online
  transactions, priced like any app, from many cards within two days. What gives it away is the merchant's last days
  (``merchant_activity:count_7d`` far above its usual size, ``mean_amount_7d`` tiny);
- **isolated fraud** (0.2 % of normal-looking rows): no pattern at all, the floor of any model.

Drift knobs (``loopline.ops.demo_data.DriftKnobs``), for this model:

- ``covariate_shift`` 1 = more online payments and prices up by a third (inflation, a new wallet);
- ``concept_shift`` 1 = fraudsters spread a burst over six hours instead of one and take only
  twice the card's usual amount: the one-hour window sees less of it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from loopline.ingestion.landing import mark_complete
from loopline.ops.demo_data import EPOCH, DriftKnobs, week_start, write_batch

__all__ = ["EPOCH", "DriftKnobs", "make_batch", "make_events", "make_labels", "write_batch", "write_malformed"]

CATEGORIES = ("grocery", "fuel", "restaurant", "retail", "electronics", "travel", "digital")
CHANNELS = ("chip", "contactless", "online")
# Share of online payments per category (normal spending), and where fraudsters spend.
ONLINE_SHARE = {
    "grocery": 0.05,
    "fuel": 0.0,
    "restaurant": 0.1,
    "retail": 0.3,
    "electronics": 0.4,
    "travel": 0.6,
    "digital": 1.0,
}
CATEGORY_WEIGHTS = (0.3, 0.15, 0.2, 0.15, 0.05, 0.05, 0.1)
FRAUD_CATEGORY_WEIGHTS = (0.15, 0.05, 0.1, 0.25, 0.15, 0.1, 0.2)
COLUMNS = (
    "transaction_id",
    "transacted_at",
    "card_id",
    "merchant_id",
    "amount",
    "hour",
    "merchant_category",
    "channel",
    "is_fraud",
)
EVENT_COLUMNS = ("transaction_id", "transacted_at", "card_id", "merchant_id", "amount")
MALFORMED_KINDS = ("out_of_range", "missing_column")
# What the batch suite (expectations/card_fraud_batch.json) accepts and the generator keeps to.
MAX_ROWS = 2_000_000
MAX_AMOUNT = 50_000.0
ROWS_PER_CARD = 12  # transactions a card makes in a week, on average: the card population is n_rows / this
CARDS_PER_MERCHANT = 4
STOLEN_SHARE = 0.03  # cards drained in a burst, per week
ISOLATED_FRAUD = 0.002


def _population(seed: int, n_cards: int, n_merchants: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cards and merchants, the same in every week (their own draws, by index: more cards never reshuffle them)."""
    cards = []
    for i in range(n_cards):
        r = np.random.default_rng([seed, 1, i])
        cards.append((f"C{seed:03d}-{i:06d}", float(np.exp(r.normal(np.log(45.0), 0.9))), float(r.gamma(2.0, 0.5))))
    card_frame = pd.DataFrame(cards, columns=["card_id", "usual_amount", "activity"])
    merchants = []
    for j in range(n_merchants):
        r = np.random.default_rng([seed, 2, j])
        category = CATEGORIES[int(r.choice(len(CATEGORIES), p=CATEGORY_WEIGHTS))]
        merchants.append((f"M{seed:03d}-{j:05d}", category, float(r.pareto(1.5) + 0.2)))
    merchant_frame = pd.DataFrame(merchants, columns=["merchant_id", "category", "size"])
    return card_frame, merchant_frame


def _hour_weights() -> np.ndarray:
    weights = np.ones(24)
    weights[0:6] = 0.08  # people sleep
    weights[7:10] += 0.8
    weights[11:14] += 1.5
    weights[17:21] += 1.2
    return weights / weights.sum()


def _pick_merchants(
    rng: np.random.Generator, merchants: pd.DataFrame, categories: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A merchant of each row's category, larger merchants more often."""
    ids = np.empty(len(categories), dtype=object)
    for category in np.unique(categories):
        rows = np.flatnonzero(categories == category)
        pool = merchants[merchants["category"] == category]
        if pool.empty:  # a tiny population without this category: any merchant
            pool = merchants
        p = pool["size"].to_numpy() / pool["size"].sum()
        ids[rows] = pool["merchant_id"].to_numpy()[rng.choice(len(pool), len(rows), p=p)]
    cat_of = dict(zip(merchants["merchant_id"], merchants["category"], strict=True))
    return ids, np.array([cat_of[m] for m in ids], dtype=object)


def _channel(rng: np.random.Generator, categories: np.ndarray, online_boost: float) -> np.ndarray:
    online = np.array([ONLINE_SHARE[c] for c in categories]) + online_boost
    is_online = rng.uniform(size=len(categories)) < np.clip(online, 0, 1)
    card_present = np.where(rng.uniform(size=len(categories)) < 0.55, "contactless", "chip")
    out = np.where(is_online, "online", card_present).astype(object)
    out[categories == "fuel"] = np.where(
        rng.uniform(size=int((categories == "fuel").sum())) < 0.5, "chip", "contactless"
    )
    return out


def _transactions(week: int, n_rows: int, seed: int, drift: DriftKnobs) -> pd.DataFrame:
    rng = np.random.default_rng([seed, week])
    n_cards = max(8, n_rows // ROWS_PER_CARD)
    cards, merchants = _population(seed, n_cards, max(CATEGORIES.__len__(), n_cards // CARDS_PER_MERCHANT))
    start = week_start(week)
    week_seconds = 7 * 86400
    inflation = 1 + drift.covariate_shift / 3
    spread = 3600 * (1 + 5 * min(1.0, drift.concept_shift))  # a burst's duration
    markup = 3.0 / (1 + min(1.0, drift.concept_shift))  # a stolen card's typical multiple of its usual amount

    # Fraud first, so the normal rows fill the batch to exactly n_rows.
    parts = []
    n_testing = int(min(n_rows // 4, round(n_rows * 0.008))) if n_rows >= 50 else 0
    if n_testing:
        small = merchants[merchants["category"] == "digital"]
        victim = (small if not small.empty else merchants).iloc[int(rng.integers(len(small) or len(merchants)))]
        first_day = rng.integers(0, 6)
        parts.append(
            pd.DataFrame(
                {
                    "card": rng.integers(0, n_cards, n_testing),
                    "second": (first_day + rng.integers(0, 2, n_testing)) * 86400.0
                    + rng.choice(24, n_testing, p=_hour_weights()) * 3600.0
                    + rng.uniform(0, 3600, n_testing),
                    "merchant_id": victim["merchant_id"],
                    "merchant_category": victim["category"],
                    "channel": "online",
                    "amount": np.exp(rng.normal(np.log(10.0), 0.6, n_testing)),  # like any app or subscription
                    "is_fraud": 1,
                }
            )
        )
    budget = int(n_rows * 0.12) - n_testing
    stolen = rng.permutation(n_cards)[: rng.binomial(n_cards, STOLEN_SHARE)]
    for card in stolen:
        size = int(min(10, 4 + rng.poisson(2.5)))
        if size > budget:
            break
        budget -= size
        # mostly when people shop (a thief blends in), sometimes at night
        hour = rng.choice(24, p=_hour_weights()) if rng.uniform() < 0.8 else rng.integers(24)
        begin = min(rng.integers(7) * 86400.0 + hour * 3600.0 + rng.uniform(0, 3600), week_seconds - spread)
        categories = np.array(CATEGORIES, dtype=object)[rng.choice(len(CATEGORIES), size, p=FRAUD_CATEGORY_WEIGHTS)]
        ids, categories = _pick_merchants(rng, merchants, categories)
        channel = np.where(rng.uniform(size=size) < 0.3, "online", _channel(rng, categories, 0.0)).astype(object)
        usual = cards["usual_amount"].iloc[card]
        parts.append(
            pd.DataFrame(
                {
                    "card": card,
                    "second": np.sort(begin + rng.uniform(0, spread, size)),
                    "merchant_id": ids,
                    "merchant_category": categories,
                    "channel": channel,
                    "amount": usual * inflation * markup * np.exp(rng.normal(0, 0.5, size)),
                    "is_fraud": 1,
                }
            )
        )
    n_normal = n_rows - sum(len(p) for p in parts)
    p_card = cards["activity"].to_numpy() / cards["activity"].sum()
    card = rng.choice(n_cards, n_normal, p=p_card)
    day = rng.integers(0, 7, n_normal)
    hour = rng.choice(24, n_normal, p=_hour_weights())
    categories = np.array(CATEGORIES, dtype=object)[rng.choice(len(CATEGORIES), n_normal, p=CATEGORY_WEIGHTS)]
    ids, categories = _pick_merchants(rng, merchants, categories)
    usual = cards["usual_amount"].to_numpy()[card]
    parts.append(
        pd.DataFrame(
            {
                "card": card,
                "second": day * 86400.0 + hour * 3600.0 + rng.uniform(0, 3600, n_normal),
                "merchant_id": ids,
                "merchant_category": categories,
                "channel": _channel(rng, categories, 0.25 * drift.covariate_shift),
                # digital goods (apps, subscriptions) cost a fraction of a card's usual spend
                "amount": usual
                * inflation
                * np.where(categories == "digital", 0.25, 1.0)
                * np.exp(rng.normal(0, 0.5, n_normal)),
                "is_fraud": (rng.uniform(size=n_normal) < ISOLATED_FRAUD).astype(int),
            }
        )
    )
    frame = pd.concat(parts, ignore_index=True)
    seconds = np.clip(frame["second"].to_numpy(), 0, week_seconds - 1).astype(np.int64)
    stamp = pd.DatetimeIndex(start + pd.to_timedelta(seconds, unit="s"))
    frame = frame.assign(
        transacted_at=stamp,
        card_id=cards["card_id"].to_numpy()[frame["card"].to_numpy()],
        amount=np.clip(frame["amount"].to_numpy(float), 0.01, MAX_AMOUNT).round(2),
        hour=stamp.hour.astype(int),
    )
    frame = frame.sort_values(["transacted_at", "card_id"], kind="stable").reset_index(drop=True)
    frame["transaction_id"] = [f"T{seed:03d}-{week:04d}-{i:07d}" for i in range(n_rows)]
    frame["transacted_at"] = frame["transacted_at"].dt.strftime("%Y-%m-%d %H:%M:%S")
    return frame[list(COLUMNS)]


def make_batch(
    week: int, n_rows: int = 1000, seed: int = 0, drift: DriftKnobs = DriftKnobs(), with_labels: bool = True
) -> pd.DataFrame:
    """Every card transaction of one week; with_labels=False leaves `is_fraud` empty (chargebacks come later)."""
    if not 1 <= n_rows <= MAX_ROWS:
        raise ValueError(f"n_rows must be within [1, {MAX_ROWS}], got {n_rows}")
    frame = _transactions(week, n_rows, seed, drift)
    if not with_labels:
        frame["is_fraud"] = np.full(n_rows, np.nan)
    return frame


def make_labels(week: int, n_rows: int = 1000, seed: int = 0, drift: DriftKnobs = DriftKnobs()) -> pd.DataFrame:
    """The fraud labels that arrive later for make_batch(..., with_labels=False) with the same arguments."""
    return make_batch(week, n_rows, seed, drift)[["transaction_id", "transacted_at", "is_fraud"]]


def make_events(week: int, n_rows: int = 1000, seed: int = 0, drift: DriftKnobs = DriftKnobs()) -> pd.DataFrame:
    """The same week as events, what the feature views aggregate: keys, amount and time, never the label."""
    return make_batch(week, n_rows, seed, drift, with_labels=False)[list(EVENT_COLUMNS)]


def write_malformed(kind: str, path: Path, week: int = 0, seed: int = 0) -> Path:
    """A malformed batch: amounts no card allows, or a column gone missing upstream."""
    if kind not in MALFORMED_KINDS:
        raise ValueError(f"unknown malformed kind {kind!r}; expected one of {MALFORMED_KINDS}")
    frame = make_batch(week, n_rows=200, seed=seed)
    if kind == "out_of_range":
        frame.loc[frame.index[:5], "amount"] = 10 * MAX_AMOUNT
    else:
        frame = frame.drop(columns=["channel"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
    mark_complete(path)
    return path
