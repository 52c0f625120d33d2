"""Data rules beside the GE suite: real, plausible timestamps, and keys unique across the whole dataset.

GE checks one batch as it arrived; these rules need what GE does not see: the
ingest time (a row from the future) and the rows already in the dataset (a key
seen before). Their failures have the same shape as the suite's, so a batch
report lists them like any other expectation. Sample values of identifier
columns are pseudonymised before they reach a report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pandas as pd

from loopline.core.pseudonym import pseudonym
from loopline.core.spec import ModelSpec

REAL_TIMESTAMPS = "loopline_expect_column_values_to_be_real_timestamps"
PLAUSIBLE_TIMESTAMPS = "loopline_expect_column_values_to_be_between_earliest_and_ingest_time"
NEW_KEYS = "loopline_expect_unique_key_to_be_new_to_dataset"


# A UTC offset written after a time of day (``Z``, ``+02:00``, ``-0500``, ``+02``); a date's own "-19" is none.
_OFFSET = r"[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$"


def parse_timestamps(values: pd.Series) -> pd.Series:
    """Instants in UTC, one rule per value: an offset is converted to UTC, no offset means UTC.

    Anything that is not a real instant becomes NaT. Each value is read on its own: pandas
    parses a column as one format, so a naive value after one with an offset was taken to
    carry that offset (shifted silently); the values with an offset and those without are
    therefore parsed apart, and neither's neighbours change what it means.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values.dt.tz_localize("UTC")
    text = values.astype("string").str.strip()
    aware = text.str.contains(_OFFSET, regex=True).fillna(False).astype(bool)
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    for part in (aware, ~aware):
        if part.any():
            parsed[part] = pd.to_datetime(text[part], errors="coerce", utc=True, format="ISO8601")
    return parsed


def _failure(expectation: str, column: str, bad: int, total: int, sample: list, expected: dict) -> dict:
    share = 100.0 * bad / total if total else 0.0
    return {
        "expectation": expectation,
        "column": column,
        "kwargs": expected,
        "detail": f"{bad} of {total} rows unexpected ({share:.1f}%), e.g. {sample}; expected {expected}",
    }


def timestamp_failures(frame: pd.DataFrame, spec: ModelSpec, ingested_at: datetime) -> list[dict]:
    """The timestamp column holds real instants between the spec's earliest date and ingest time + tolerance."""
    column = spec.dataset.timestamp
    if column not in frame.columns:
        return []  # the suite's column-set expectation reports it
    raw = frame[column]
    present = raw.notna()
    parsed = parse_timestamps(raw)
    failures = []
    unreal = present & parsed.isna()
    if unreal.any():
        sample = raw[unreal].astype(str).head(5).tolist()
        failures.append(_failure(REAL_TIMESTAMPS, column, int(unreal.sum()), len(frame), sample, {"column": column}))
    rules = spec.dataset.rules
    earliest = pd.Timestamp(rules.earliest_timestamp, tz="UTC")
    latest = pd.Timestamp(ingested_at).tz_convert("UTC") + timedelta(minutes=rules.future_tolerance_minutes)
    outside = parsed.notna() & ((parsed < earliest) | (parsed > latest))
    if outside.any():
        sample = raw[outside].astype(str).head(5).tolist()
        expected = {"column": column, "min_value": earliest.isoformat(), "max_value": latest.isoformat()}
        failures.append(_failure(PLAUSIBLE_TIMESTAMPS, column, int(outside.sum()), len(frame), sample, expected))
    return failures


def key_of(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """One hashable key per row (timestamps compared as instants, not as text)."""
    parts = [frame[c].astype("string").fillna("<NA>") for c in columns]
    key = parts[0]
    for part in parts[1:]:
        key = key + "\x1f" + part
    return key


@dataclass
class KeyDecision:
    """What the duplicate policy does with one batch, given the keys already in the dataset."""

    keep: pd.Series  # bool per batch row: goes into the dataset
    dropped_repeats: int = 0  # rows identical to a row already in the dataset (drop_repeats)
    replaces: int = 0  # rows that replace an older row with the same key (keep_latest)
    failure: dict | None = None  # set when the batch is rejected
    notes: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        return self.failure is not None


def decide_keys(
    batch: pd.DataFrame, existing: pd.DataFrame, spec: ModelSpec, secret: str, existing_rows: pd.DataFrame | None = None
) -> KeyDecision:
    """Apply ``dataset.rules.on_duplicate`` to a normalised batch against the normalised rows already stored.

    ``existing`` holds at least the key columns of every stored row; ``existing_rows`` (the
    full stored rows with those keys) is needed only to tell exact repeats apart (drop_repeats).
    """
    columns = spec.dataset.unique_key
    policy = spec.dataset.rules.on_duplicate
    batch_keys = key_of(batch, columns)
    # Within the batch: a later row with the same key is the newer one.
    earlier = batch_keys.duplicated(keep="last")
    exact_within = batch.duplicated(keep="last")
    seen = batch_keys.isin(set(key_of(existing, columns))) if len(existing) else pd.Series(False, index=batch.index)
    decision = KeyDecision(keep=pd.Series(True, index=batch.index))
    if not (seen.any() or earlier.any()):
        return decision
    if policy == "keep_latest":
        decision.keep = ~earlier
        decision.replaces = int((seen & ~earlier).sum())
        superseded = int(earlier.sum())
        decision.notes.append(
            f"{decision.replaces} rows replace stored rows with the same {columns}"
            + (f", {superseded} earlier rows of this batch superseded by later ones" if superseded else "")
            + " (keep_latest)"
        )
        return decision
    exact = pd.Series(False, index=batch.index)
    if policy == "drop_repeats" and seen.any() and existing_rows is not None:
        stored = existing_rows.assign(_key=key_of(existing_rows, columns)).drop_duplicates("_key", keep="last")
        stored_text = stored.set_index("_key").astype("string").fillna("<NA>")
        incoming = batch.assign(_key=batch_keys)[seen].set_index("_key").astype("string").fillna("<NA>")
        same = (incoming[stored_text.columns] == stored_text.loc[incoming.index]).all(axis=1).to_numpy()
        exact.loc[seen[seen].index] = same
    if policy == "drop_repeats":
        drop = (seen & exact) | (earlier & exact_within)
        bad = (seen & ~exact) | (earlier & ~exact_within)
        if not bad.any():
            decision.keep = ~drop
            decision.dropped_repeats = int(drop.sum())
            decision.notes.append(
                f"{decision.dropped_repeats} rows repeat stored rows exactly and were dropped (drop_repeats)"
            )
            return decision
    else:
        bad = seen | earlier
    sample = [_show(batch.loc[i], columns, spec, secret) for i in bad[bad].index[:5]]
    expected = {"columns": columns, "on_duplicate": policy}
    failure = _failure(NEW_KEYS, ",".join(columns), int(bad.sum()), len(batch), sample, expected)
    if policy == "drop_repeats":
        failure["detail"] += (
            "; these rows differ from the rows already held with the same key (keep_latest would replace them)"
        )
    else:
        failure["detail"] += "; these keys are already in the dataset or repeat within the batch (on_duplicate: reject)"
    decision.failure = failure
    return decision


def _show(row: pd.Series, columns: list[str], spec: ModelSpec, secret: str) -> str:
    """A key as a report may show it: the entity id only as its pseudonym."""
    parts = [f"id:{pseudonym(str(row[c]), secret)}" if c == spec.dataset.entity_id else str(row[c]) for c in columns]
    return "/".join(parts)


def utc_now() -> datetime:
    return datetime.now(UTC)
