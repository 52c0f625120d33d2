"""A quarantine report names the cause in its first line, for the whole class of encoding and shape problems.

Each member of the class is made here from valid rows of the tests' own table, then checked as
ingest checks a claimed batch: the report's first line must name the problem (the byte, the mark,
the separator, the column), and the failures it explains must not follow as noise.
"""

from __future__ import annotations

import codecs

import pandas as pd
import pytest

from loopline.ingestion.ingest import check_batch, claim
from tests.unit import datain_tables as t


def _csv(frame: pd.DataFrame) -> bytes:
    return t.csv_bytes(frame)


def _text_numbers(column: str, fmt) -> bytes:
    frame = t.rows(100, seed=1)
    frame[column] = frame[column].map(fmt)
    return _csv(frame)


def _renamed(mapping: dict) -> bytes:
    return _csv(t.rows(40, seed=1).rename(columns=mapping))


def _extra(n: int) -> bytes:
    frame = t.rows(30, seed=1)
    extra = pd.DataFrame({f"x{i:04d}": range(30) for i in range(n)})
    return _csv(pd.concat([frame, extra], axis=1))


def _joined(bom: bool) -> bytes:
    mark = codecs.BOM_UTF8 if bom else b""
    return mark + _csv(t.rows(40, seed=1)) + mark + _csv(t.rows(40, seed=2, first=40))


def _parquet_with_control() -> bytes:
    frame = t.rows(40, seed=1)
    frame.loc[frame.index[:3], "carrier"] = "beta\x0b"
    return t.parquet_bytes(frame)


MEMBERS = {
    # name: (file name, bytes, words the first line must hold)
    "trailing NUL": ("b.csv", _csv(t.rows(100, seed=1)) + b"\x00", ["0x00 (NUL)", "line 102 (the last line)"]),
    "NUL inside a value": (
        "b.csv",
        _csv(t.rows(30, seed=1).assign(carrier=lambda f: f["carrier"].where(f.index != 10, "al\x00pha"))),
        ["0x00 (NUL) first at line 12"],
    ),
    "DOS end-of-file byte": ("b.csv", _csv(t.rows(30, seed=1)) + b"\x1a", ["0x1A (SUB)"]),
    "UTF-8 byte-order mark inside the file": (
        "b.csv",
        _joined(bom=True),
        ["byte-order mark inside the file, at line 42"],
    ),
    "header repeated (files joined)": ("b.csv", _joined(bom=False), ["header is repeated", "line 42"]),
    "UTF-16 file": ("b.csv", _csv(t.rows(20, seed=1)).decode().encode("utf-16"), ["UTF-16", "must be UTF-8"]),
    "Latin-1 byte": (
        "b.csv",
        _csv(t.rows(20, seed=1).assign(carrier="g\xe4mma")).decode().encode("latin-1"),
        ["not UTF-8: byte 0xE4 at line 2"],
    ),
    "thousands separators": (
        "b.csv",
        _text_numbers("parcel_value", lambda v: f"{v + 1000:,}"),
        ["'parcel_value'", "100 of 100", "',' as a thousands separator"],
    ),
    "decimal commas": (
        "b.csv",
        _text_numbers("weight_kg", lambda v: f"{v:.2f}".replace(".", ",")),
        ["'weight_kg'", "decimal comma"],
    ),
    "semicolon delimiter": (
        "b.csv",
        t.rows(20, seed=1).to_csv(index=False, sep=";", decimal=",").encode(),
        ["separated by semicolons"],
    ),
    "units written beside numbers": (
        "b.csv",
        _text_numbers("weight_kg", lambda v: f"{v} kg"),
        ["'weight_kg'", "100 of 100 values are not numbers"],
    ),
    "whitespace in column names": (
        "b.csv",
        _renamed({"weight_kg": "weight_kg ", "carrier": " carrier"}),
        ["2 column name(s) with surrounding whitespace", "'weight_kg ' (expected 'weight_kg')"],
    ),
    "column names in another case": ("b.csv", _renamed({"prior_claims": "Prior_Claims"}), ["another case"]),
    "missing columns": (
        "b.csv",
        _csv(t.rows(40, seed=1).drop(columns=["prior_claims"])),
        ["1 missing column(s): 'prior_claims'"],
    ),
    "500 extra columns": ("b.csv", _extra(500), ["500 extra column(s)", "'x0000'", "(+492 more)"]),
    "control characters in a parquet file": ("b.parquet", _parquet_with_control(), ["'carrier'", "0x0B (VT)"]),
    "extra and missing columns in a parquet file": (
        "b.parquet",
        t.parquet_bytes(t.rows(40, seed=1).rename(columns={"prior_claims": "claims_before"})),
        ["1 missing column(s): 'prior_claims'"],
    ),
}


@pytest.fixture
def line(tmp_path):
    return t.make_line(tmp_path)


def check(settings, spec, name: str, data: bytes):
    path = t.drop(settings.landing_dir / t.NAME, name, data)
    batch = claim(path, settings.processing_dir / t.NAME)
    return check_batch(batch, spec, settings.expectations_dir, "secret")


@pytest.mark.parametrize("member", list(MEMBERS))
def test_the_first_line_names_the_cause(line, member):
    settings, spec = line
    name, data, words = MEMBERS[member]
    report = check(settings, spec, name, data)
    summary = report.summary()
    first, *rest = summary.splitlines()
    assert not report.success and first.startswith(f"{name}: FAILED: "), summary
    for word in words:
        assert word in first, f"{word!r} not in the first line:\n{summary}"
    assert "observed None" not in summary
    assert len(rest) <= 4, f"noise lines:\n{summary}"  # other causes, the suite and row count, the folded count
    assert report.causes and report.causes[0]["text"] in first


def test_a_leading_utf8_byte_order_mark_is_no_problem(line):
    settings, spec = line
    report = check(settings, spec, "b.csv", codecs.BOM_UTF8 + _csv(t.rows(30, seed=1)))
    assert report.success, report.summary()


def test_other_failures_still_come_first_when_nothing_of_the_class_applies(line):
    settings, spec = line
    frame = t.rows(30, seed=1)
    frame.loc[frame.index[:2], "weight_kg"] = 9999.0
    report = check(settings, spec, "b.csv", _csv(frame))
    first = report.summary().splitlines()[0]
    assert report.causes == [] and "expect_column_values_to_be_between column 'weight_kg'" in first


def test_a_cause_never_shows_an_entity_id(line):
    settings, spec = line
    frame = t.rows(30, seed=1)
    frame["prior_claims"] = frame["prior_claims"].astype(object)
    frame.loc[frame.index[:5], "prior_claims"] = frame.loc[frame.index[:5], t.ID]  # ids shifted into a number
    frame.loc[frame.index[5], "prior_claims"] = "three"
    report = check(settings, spec, "b.csv", _csv(frame))
    causes = " ".join(c["text"] for c in report.causes)
    assert "6 of 30 values are not numbers, e.g. ['three']" in causes
    assert not any(i in report.summary() + causes for i in frame[t.ID])
