"""A model whose data lives in a SQL table: new slices are pulled by watermark and ingested like files.

Real databases: SQLite (the embedded default) and this machine's PostgreSQL, through
SQLAlchemy; the real GE suite and a real DVC registry. Every row of the table must end
up in the dataset exactly once, across re-runs, new rows and a crash between pull and commit.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from loopline.core.faults import CRASH_EXIT_CODE
from loopline.core.settings import get_settings
from loopline.core.spec import SpecError, load_spec_file
from loopline.ingestion.data_registry import DataRegistry
from loopline.ingestion.ingest import claim_step, quarantine_step, validate_step, version_step
from loopline.ingestion.sql_source import status_lines
from tests.conftest import throwaway_postgres
from tests.generators import credit_risk as datagen

TABLE = "applications"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'source.db'}"
    else:
        yield from throwaway_postgres("loopline_sql_source")


def insert(url: str, frame: pd.DataFrame) -> None:
    rows = frame.assign(applied_at=pd.to_datetime(frame["applied_at"]))
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        rows.to_sql(TABLE, conn, if_exists="append", index=False)
    engine.dispose()


def line_settings(tmp_path, url: str, **source):
    """Settings whose models folder holds credit_risk with a SQL source, and state of its own."""
    raw = yaml.safe_load((get_settings().models_dir / "credit_risk" / "spec.yaml").read_text())
    raw["dataset"]["source"] = {"kind": "sql", "url_env": "LOOPLINE_TEST_SOURCE_URL", "table": TABLE, **source}
    models = tmp_path / "models" / "credit_risk"
    models.mkdir(parents=True)
    (models / "spec.yaml").write_text(yaml.safe_dump(raw))
    os.environ["LOOPLINE_TEST_SOURCE_URL"] = url
    home = tmp_path / "home"
    return dataclasses.replace(
        get_settings(),
        home=home,
        models_dir=tmp_path / "models",
        landing_dir=home / "landing",
        processing_dir=home / "processing",
        quarantine_dir=home / "quarantine",
        archive_dir=home / "archive",
        data_registry=home / "registry",
        dvc_remote_url=str(home / "remote"),
    )


def env_for(settings) -> dict[str, str]:
    """The same settings for a child process."""
    names = {
        "home": "LOOPLINE_HOME", "models_dir": "LOOPLINE_MODELS_DIR", "landing_dir": "LOOPLINE_LANDING_DIR",
        "processing_dir": "LOOPLINE_PROCESSING_DIR", "quarantine_dir": "LOOPLINE_QUARANTINE_DIR",
        "archive_dir": "LOOPLINE_ARCHIVE_DIR", "data_registry": "LOOPLINE_DATA_REGISTRY",
        "dvc_remote_url": "LOOPLINE_DVC_REMOTE",
    }  # fmt: skip
    return {var: str(getattr(settings, field)) for field, var in names.items()}


def ingest_once(settings) -> dict:
    outcomes = [validate_step(b, "credit_risk", settings) for b in claim_step("credit_risk", settings)]
    quarantine_step(outcomes, "credit_risk", settings)
    return version_step(outcomes, "credit_risk", "unit", settings)


def stored_ids(settings) -> list[str]:
    registry = DataRegistry(settings.data_registry, settings.dvc_remote_url)
    folder = registry.root / "data" / "credit_risk"
    return sorted(i for p in folder.glob("*.parquet") for i in pd.read_parquet(p)["applicant_id"])


def test_slices_are_pulled_once_each(tmp_path, database_url):
    settings = line_settings(tmp_path, database_url)
    weeks = [datagen.make_batch(w, n_rows=120, seed=7) for w in range(3)]
    insert(database_url, weeks[0])
    assert ingest_once(settings)["version"]["rows"] == 120
    assert ingest_once(settings)["version"] is None  # nothing new: no slice, no version
    insert(database_url, pd.concat(weeks[1:]))
    assert ingest_once(settings)["version"]["rows"] == 360
    expected = sorted(i for w in weeks for i in w["applicant_id"])
    assert stored_ids(settings) == expected


def test_a_bad_slice_is_quarantined_and_the_line_goes_on(tmp_path, database_url):
    settings = line_settings(tmp_path, database_url)
    bad = datagen.make_batch(0, n_rows=80, seed=8)
    bad.loc[bad.index[:3], "age"] = -5
    insert(database_url, bad)
    assert ingest_once(settings)["version"] is None
    assert len(list((settings.quarantine_dir / "credit_risk").iterdir())) == 1
    good = datagen.make_batch(1, n_rows=80, seed=8)
    insert(database_url, good)
    assert ingest_once(settings)["version"]["rows"] == 80  # the bad slice is not pulled again
    assert stored_ids(settings) == sorted(good["applicant_id"])


def test_a_large_backlog_arrives_in_slices_of_max_rows(tmp_path, database_url):
    settings = line_settings(tmp_path, database_url, max_rows=100)
    rows = datagen.make_batch(0, n_rows=250, seed=9)
    insert(database_url, rows)
    sizes = [ingest_once(settings)["version"]["rows"] for _ in range(3)]
    assert sizes == [100, 200, 250] and stored_ids(settings) == sorted(rows["applicant_id"])


def test_a_crash_between_pull_and_commit_neither_skips_nor_repeats(tmp_path, database_url):
    settings = line_settings(tmp_path, database_url)
    first = datagen.make_batch(0, n_rows=90, seed=10)
    insert(database_url, first)
    driver = "from loopline.ingestion.ingest import claim_step; from loopline.core.settings import get_settings\n"
    driver += 'claim_step("credit_risk", get_settings())'
    env = {**os.environ, **env_for(settings), "LOOPLINE_CRASH_AT": "sql_pull"}
    done = subprocess.run([sys.executable, "-c", driver], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == CRASH_EXIT_CODE, done.stderr[-2000:]
    insert(database_url, datagen.make_batch(1, n_rows=90, seed=10))  # more rows arrive meanwhile
    ingest_once(settings)  # re-pulls exactly the pending slice
    ingest_once(settings)  # then the new rows
    assert stored_ids(settings) == sorted([*first["applicant_id"], *datagen.make_batch(1, 90, seed=10)["applicant_id"]])


def test_a_sql_source_spec_says_what_is_missing(tmp_path):
    raw = yaml.safe_load((get_settings().models_dir / "credit_risk" / "spec.yaml").read_text())
    raw["dataset"]["source"] = {"kind": "sql", "table": TABLE}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="dataset.source: .*needs url_env"):
        load_spec_file(path)


# -- rows at the last watermark, NULL watermarks, and the counts in status (a table of the tests' own) ---------


def claims_line(tmp_path, url: str, **source):
    from tests.unit import datain_tables as t

    os.environ["LOOPLINE_TEST_SOURCE_URL"] = url
    return t.make_line(tmp_path, kind="sql", url_env="LOOPLINE_TEST_SOURCE_URL", table="claims", **source)


def insert_claims(url: str, frame: pd.DataFrame) -> None:
    from tests.unit import datain_tables as t

    rows = frame.assign(**{t.TIME: pd.to_datetime(frame[t.TIME])})
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        rows.to_sql("claims", conn, if_exists="append", index=False)
    engine.dispose()


def test_rows_inserted_later_at_the_last_pulled_watermark_are_not_lost(tmp_path, database_url):
    from tests.unit import datain_tables as t

    settings, spec = claims_line(tmp_path, database_url)
    first = t.rows(100, seed=1)
    insert_claims(database_url, first)
    assert t.ingest_once(settings)["version"]["rows"] == 100
    top = first[t.TIME].max()
    late = t.rows(30, seed=2, first=100).assign(**{t.TIME: top})  # the same second as the last pulled row
    insert_claims(database_url, late)
    assert t.ingest_once(settings)["version"]["rows"] == 130  # a slice that did not move on still lands them
    later = t.rows(20, seed=3, first=130).assign(**{t.TIME: top})  # and again, with newer rows beside them
    insert_claims(database_url, pd.concat([later, t.rows(40, seed=4, first=150)]))
    assert t.ingest_once(settings)["version"]["rows"] == 190
    assert t.ingest_once(settings)["version"] is None  # nothing twice
    assert sorted(t.stored(settings)[t.ID]) == [f"C{i:07d}" for i in range(190)]
    assert list((settings.quarantine_dir / t.NAME).glob("*")) == []
    lines = "\n".join(status_lines(spec, settings.home))
    assert "91 in the source, 60 landed, 31 skipped: landed by the previous slice" in lines, lines
    assert "table 190 rows: 190 landed so far, 0 waiting" in lines and "NOT ACCOUNTED" not in lines


def test_rows_with_a_null_watermark_land_once_as_their_own_batch_and_are_counted(tmp_path, database_url):
    from tests.unit import datain_tables as t

    settings, spec = claims_line(tmp_path, database_url)
    good, undated = t.rows(50, seed=5), t.rows(7, seed=6, first=50).assign(**{t.TIME: None})
    insert_claims(database_url, pd.concat([good, undated]))
    alerts: list = []
    versions = [t.ingest_once(settings, alerts)["version"] for _ in range(2)]  # the NULL rows, then the range
    assert len(alerts) == 1 and f"7 rows had no {t.TIME}" in alerts[0][1]
    assert [v["rows"] for v in versions if v] == [50]
    assert t.ingest_once(settings)["version"] is None  # the NULL rows are not pulled again
    [held] = (settings.quarantine_dir / t.NAME).iterdir()
    report = (held / "validation.txt").read_text()
    assert "null-watermark" in held.name and t.TIME in report
    assert sorted(pd.read_parquet(next(held.glob("*.parquet")))[t.ID]) == sorted(undated[t.ID])
    lines = "\n".join(status_lines(spec, settings.home))
    assert f"(rows with NULL {t.TIME}): 7 in the source, 7 landed" in lines
    assert "table 57 rows: 57 landed so far, 0 waiting" in lines
    assert "table 57 rows: 7 landed so far, 50 waiting" in lines and "NOT ACCOUNTED" not in lines


def test_rows_inserted_below_the_last_watermark_are_shown_as_not_accounted_for(tmp_path, database_url):
    from tests.unit import datain_tables as t

    settings, spec = claims_line(tmp_path, database_url)
    insert_claims(database_url, t.rows(40, seed=7, first=100))
    t.ingest_once(settings)
    insert_claims(database_url, t.rows(5, seed=8, first=0))  # older than every pulled row: no watermark sees them
    insert_claims(database_url, t.rows(10, seed=9, first=200))
    alerts: list = []
    t.ingest_once(settings, alerts)
    lines = "\n".join(status_lines(spec, settings.home))
    assert "table 55 rows: 50 landed so far, 0 waiting, 5 NOT ACCOUNTED FOR" in lines
    [(title, body)] = alerts
    assert "SQL pull needs a look" in title and "5 NOT ACCOUNTED FOR" in body


def test_a_state_file_from_before_boundaries_is_read_as_it_was_meant(tmp_path):
    """Its ``done`` was an exclusive bound: the next slice must not land the row at ``done`` again."""
    import json

    from tests.unit import datain_tables as t

    url = f"sqlite:///{tmp_path / 'source.db'}"
    settings, spec = claims_line(tmp_path, url)
    insert_claims(url, t.rows(50, seed=11))
    t.ingest_once(settings)
    path = settings.home / "sources" / f"{t.NAME}.json"
    state = json.loads(path.read_text())
    path.write_text(json.dumps({"done": state["done"], "pending": None, "slices": state["slices"]}))
    insert_claims(url, t.rows(20, seed=12, first=50))
    assert t.ingest_once(settings)["version"]["rows"] == 70
    assert list((settings.quarantine_dir / t.NAME).glob("*")) == []
    assert "landed so far" not in "\n".join(status_lines(spec, settings.home))  # its total is not known
