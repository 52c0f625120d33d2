"""One timestamp rule per value, whatever its neighbours: an offset is converted to UTC, no offset is UTC.

pandas parses a column of ISO strings as one format: a naive value after an aware one was taken to
carry that offset, so it was shifted silently. Each value is now read on its own.
"""

from __future__ import annotations

import pandas as pd
import pytest

from loopline.ingestion.data_rules import parse_timestamps
from tests.unit import datain_tables as t


def test_each_value_is_read_on_its_own():
    values = pd.Series(
        [
            "2026-01-19T00:50:31+02:00",  # aware: 22:50:31 UTC the day before
            "2026-01-19 01:00:00",  # naive after an aware one: UTC, not +02:00
            "2026-01-19T03:00:00Z",
            "2026-01-19 04:00:00",
            "2026-01-19T05:00:00-0500",  # an offset without a colon
            "2026-01-19",  # a date only: midnight UTC (its "-19" is no offset)
            None,
            "not a time",
        ]
    )
    parsed = parse_timestamps(values)
    expected = [
        "2026-01-18 22:50:31+00:00",
        "2026-01-19 01:00:00+00:00",
        "2026-01-19 03:00:00+00:00",
        "2026-01-19 04:00:00+00:00",
        "2026-01-19 10:00:00+00:00",
        "2026-01-19 00:00:00+00:00",
    ]
    assert [str(v) for v in parsed[:6]] == expected
    assert parsed[6:].isna().all()
    # Order does not matter: the naive value first gives the same instants.
    assert parse_timestamps(values[::-1]).sort_index().equals(parsed)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_batch_mixing_offsets_and_naive_values_is_versioned_in_utc(tmp_path, fmt):
    settings, spec = t.make_line(tmp_path)
    frame = t.rows(60, seed=3)
    naive = pd.to_datetime(frame[t.TIME])  # the true instants, UTC
    aware_rows = frame.index[::3]  # every third row carries an offset, the others none
    shown = naive[aware_rows].dt.tz_localize("UTC").dt.tz_convert("Etc/GMT-2")  # the same instant at +02:00
    frame[t.TIME] = frame[t.TIME].astype(object)
    frame.loc[aware_rows, t.TIME] = shown.map(lambda ts: ts.isoformat())
    data = t.csv_bytes(frame) if fmt == "csv" else t.parquet_bytes(frame)
    t.drop(settings.landing_dir / t.NAME, f"mixed.{fmt}", data)
    result = t.ingest_once(settings)
    assert result["version"] is not None and result["version"]["rows"] == 60
    stored = t.stored(settings).astype({t.ID: str}).set_index(t.ID)[t.TIME]
    got = stored[frame[t.ID].astype(str)].to_numpy()
    shifted = got != naive.to_numpy()
    assert not shifted.any(), f"{shifted.sum()} rows shifted, e.g. {got[shifted][:3]} for {naive[shifted][:3]}"
