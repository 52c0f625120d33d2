"""``loopline quarantine list / replay``: after a fix, quarantined batches go through validation again.

A batch that now passes is versioned exactly once; one that still fails is back in quarantine with a
fresh report (the earlier one kept); at every instant a batch is in exactly one zone, a crash in the
middle of a replay is finished by the next ingest run, and a SQL slice quarantined for a schema change
is recovered with a suite edit or a rename, never by editing its file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from loopline.core.faults import CRASH_EXIT_CODE
from loopline.core.settings import get_settings
from loopline.core.spec import load_spec
from loopline.ingestion.ingest import ReplayError, quarantined_batches, replay
from loopline.ops.cli import app
from tests.unit import datain_tables as t


@pytest.fixture
def line(tmp_path, monkeypatch):
    settings, spec = t.make_line(tmp_path)
    for key, value in t.env_of(settings).items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield settings, spec
    get_settings.cache_clear()


def zone_ids(settings) -> dict[str, list[str]]:
    """Which batch ids sit in which zone."""
    out = {}
    for zone in ("landing", "processing", "quarantine", "archive"):
        folder = getattr(settings, f"{zone}_dir") / t.NAME
        out[zone] = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    return out


def widen_weight_bound(settings, high: float) -> None:
    """The fix of a bound written too tight: in the spec (the one source) and the suite that repeats it."""
    path = settings.models_dir / t.NAME / "spec.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["features"]["numeric"]["weight_kg"]["max"] = high
    path.write_text(yaml.safe_dump(raw))
    load_spec.cache_clear()
    suite = t.suite_dict()
    for exp in suite["expectations"]:
        if exp["kwargs"].get("column") == "weight_kg" and "max_value" in exp["kwargs"]:
            exp["kwargs"]["max_value"] = high
    t.write_suite(settings.expectations_dir, suite)


def heavy_rows(first: int) -> pd.DataFrame:
    frame = t.rows(40, seed=first, first=first)
    frame.loc[frame.index[:2], "weight_kg"] = 640.0  # beyond the suite's 500: a bound written too tight
    return frame


def test_a_fixed_suite_lets_a_quarantined_batch_through_exactly_once(line):
    settings, _ = line
    t.drop(settings.landing_dir / t.NAME, "heavy.csv", t.csv_bytes(heavy_rows(0)))
    assert t.ingest_once(settings)["version"] is None
    [held] = quarantined_batches(t.NAME, settings)
    assert "weight_kg" in held.cause
    listed = CliRunner().invoke(app, ["quarantine", "list", "-m", t.NAME])
    assert listed.exit_code == 0 and held.batch_id in listed.output and "weight_kg" in listed.output

    widen_weight_bound(settings, 1000)
    done = CliRunner().invoke(app, ["quarantine", "replay", "-m", t.NAME])
    assert done.exit_code == 0, done.output
    assert f"{held.batch_id}: versioned" in done.output
    assert sorted(t.stored(settings)[t.ID]) == sorted(heavy_rows(0)[t.ID])
    assert zone_ids(settings) == {"landing": [], "processing": [], "quarantine": [], "archive": [held.batch_id]}
    assert "versioned" in (settings.archive_dir / t.NAME / held.batch_id / "outcome.txt").read_text()

    again = CliRunner().invoke(app, ["quarantine", "replay", "-m", t.NAME, held.batch_id])
    assert again.exit_code == 2 and "not in quarantine: already archived" in again.output
    assert t.ingest_once(settings)["version"] is None  # nothing left to do, nothing stored twice
    assert len(t.stored(settings)) == 40


def test_a_batch_that_still_fails_stays_with_a_fresh_report_and_the_old_one_kept(line):
    settings, spec = line
    fixed, unfixed = heavy_rows(0), t.rows(30, seed=9, first=100)
    unfixed["parcel_value"] = unfixed["parcel_value"].map(lambda v: f"{v + 1000:,}")
    t.drop(settings.landing_dir / t.NAME, "heavy.csv", t.csv_bytes(fixed))
    t.drop(settings.landing_dir / t.NAME, "commas.csv", t.csv_bytes(unfixed))
    t.ingest_once(settings)
    assert len(quarantined_batches(t.NAME, settings)) == 2
    widen_weight_bound(settings, 1000)
    outcomes = {o.source_name: o for o in replay(t.NAME, settings, who="tester")}
    assert outcomes["heavy.csv"].status == "versioned" and not outcomes["commas.csv"].accepted
    [left] = quarantined_batches(t.NAME, settings)
    assert left.source_name == "commas.csv" and left.replays == 1 and "thousands separator" in left.cause
    folder = settings.quarantine_dir / t.NAME / left.batch_id
    assert (folder / "validation.before-replay-1.txt").is_file() and (folder / "validation.txt").is_file()
    state = json.loads((folder / "batch.json").read_text())
    assert state["replays"][0]["by"] == "tester"
    assert sorted(t.stored(settings)[t.ID]) == sorted(fixed[t.ID])
    assert zone_ids(settings)["processing"] == []


def test_a_replay_cut_short_is_finished_by_the_next_ingest_run(line):
    settings, _ = line
    t.drop(settings.landing_dir / t.NAME, "heavy.csv", t.csv_bytes(heavy_rows(0)))
    t.ingest_once(settings)
    [held] = quarantined_batches(t.NAME, settings)
    widen_weight_bound(settings, 1000)
    driver = "from loopline.ops.cli import app; app()"
    env = {**os.environ, **t.env_of(settings), "LOOPLINE_CRASH_AT": "replay"}
    done = subprocess.run(
        [sys.executable, "-c", driver, "quarantine", "replay", "-m", t.NAME, held.batch_id],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == CRASH_EXIT_CODE, done.stderr[-2000:]
    assert zone_ids(settings)["processing"] == [held.batch_id]  # in exactly one place
    assert t.ingest_once(settings)["version"]["rows"] == 40
    assert zone_ids(settings) == {"landing": [], "processing": [], "quarantine": [], "archive": [held.batch_id]}


def test_replay_names_what_it_cannot_do(line):
    settings, _ = line
    with pytest.raises(ReplayError, match="nope is not in quarantine: not found"):
        replay(t.NAME, settings, ["nope"])
    with pytest.raises(ReplayError, match="OLD=NEW"):
        replay(t.NAME, settings, None, ["carrier"])


@pytest.fixture
def sql_line(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'source.db'}"
    monkeypatch.setenv("LOOPLINE_TEST_SOURCE_URL", url)
    settings, spec = t.make_line(tmp_path, kind="sql", url_env="LOOPLINE_TEST_SOURCE_URL", table="claims")
    for key, value in t.env_of(settings).items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield settings, sa.create_engine(url)
    get_settings.cache_clear()


def insert(engine, frame: pd.DataFrame) -> None:
    with engine.begin() as conn:
        frame.assign(**{t.TIME: pd.to_datetime(frame[t.TIME])}).to_sql("claims", conn, if_exists="append", index=False)


def test_sql_slices_quarantined_for_a_schema_change_are_recovered_by_a_suite_edit_or_a_rename(sql_line):
    settings, engine = sql_line
    insert(engine, t.rows(30, seed=1))
    assert t.ingest_once(settings)["version"]["rows"] == 30
    with engine.begin() as conn:  # upstream adds a column ...
        conn.execute(sa.text("ALTER TABLE claims ADD COLUMN channel TEXT"))
    insert(engine, t.rows(20, seed=2, first=30).assign(channel="web"))
    assert t.ingest_once(settings)["version"] is None
    [added] = quarantined_batches(t.NAME, settings)
    assert "1 extra column(s) the suite does not allow: 'channel'" in added.cause
    suite = t.suite_dict()  # ... the fix: the suite allows it (the spec still stores only its own columns)
    suite["expectations"][0]["kwargs"]["column_set"].append("channel")
    suite["expectations"][0]["kwargs"]["exact_match"] = False
    t.write_suite(settings.expectations_dir, suite)
    assert replay(t.NAME, settings, [added.batch_id])[0].status == "versioned"

    with engine.begin() as conn:  # then renames one (SQLite >= 3.25)
        conn.execute(sa.text("ALTER TABLE claims RENAME COLUMN prior_claims TO claims_before"))
    insert(engine, t.rows(25, seed=3, first=50).rename(columns={"prior_claims": "claims_before"}).assign(channel="app"))
    t.ingest_once(settings)
    [renamed] = quarantined_batches(t.NAME, settings)
    assert "missing column(s): 'prior_claims'" in renamed.cause
    done = CliRunner().invoke(
        app, ["quarantine", "replay", "-m", t.NAME, renamed.batch_id, "--rename", "claims_before=prior_claims"]
    )
    assert done.exit_code == 0, done.output
    stored = t.stored(settings)
    assert sorted(stored[t.ID]) == [f"C{i:07d}" for i in range(75)] and stored["prior_claims"].notna().all()
    assert zone_ids(settings)["quarantine"] == []
