"""A file renamed from a temporary name is ready at once; one written in place still waits the settle time.

Files written here, in the ways writers put them into a landing folder, scanned with a settle
time of an hour: only what a writer has said is complete may be taken before it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from loopline.ingestion.landing import scan

HOUR = 3600.0
ROWS = "ref,seen_at,load\nR1,2026-01-05T00:00:00,1.5\nR2,2026-01-05T01:00:00,2.5\n"


def test_renamed_from_a_temporary_name_is_ready_at_once(tmp_path):
    for temporary in (".w1.csv.tmp", "w2.csv.part", "w3.csv._COPYING_", ".w4.csv.Xy12ab"):
        (tmp_path / temporary).write_text(ROWS)
    found = scan(tmp_path, HOUR)
    assert found.ready == []  # temporary names are never taken
    time.sleep(0.01)
    os.rename(tmp_path / ".w1.csv.tmp", tmp_path / "w1.csv")
    os.rename(tmp_path / "w2.csv.part", tmp_path / "w2.csv")
    os.rename(tmp_path / "w3.csv._COPYING_", tmp_path / "w3.csv")
    os.rename(tmp_path / ".w4.csv.Xy12ab", tmp_path / "w4.csv")  # rsync's temporary name
    found = scan(tmp_path, HOUR)
    assert [p.name for p in found.ready] == ["w1.csv", "w2.csv", "w3.csv", "w4.csv"] and found.writing == []


def test_moved_in_by_mv_from_another_folder_is_ready_at_once(tmp_path):
    outbox, landing = tmp_path / "outbox", tmp_path / "landing"
    outbox.mkdir(), landing.mkdir()
    (outbox / "w1.csv").write_text(ROWS)
    time.sleep(0.01)
    subprocess.run(["mv", str(outbox / "w1.csv"), str(landing / "w1.csv")], check=True)
    assert [p.name for p in scan(landing, HOUR).ready] == ["w1.csv"]


def test_written_in_place_waits_the_settle_time_even_after_it_is_complete(tmp_path):
    path = tmp_path / "slow.csv"
    path.write_text(ROWS[:30])  # half a row
    assert scan(tmp_path, HOUR).writing == ["slow.csv"]
    with path.open("a") as handle:
        handle.write(ROWS[30:])  # complete now, but nothing said so: it must settle
    found = scan(tmp_path, HOUR)
    assert found.ready == [] and found.writing == ["slow.csv"]
    assert [p.name for p in scan(tmp_path, HOUR, now=time.time() + HOUR + 1).ready] == ["slow.csv"]


def test_a_renamed_file_written_to_again_waits_again(tmp_path):
    """A writer that renames first and writes on through its open handle: the write makes it wait."""
    (tmp_path / "w1.csv.part").write_text(ROWS[:30])
    with (tmp_path / "w1.csv.part").open("a") as handle:
        time.sleep(0.01)
        os.rename(tmp_path / "w1.csv.part", tmp_path / "w1.csv")
        handle.write(ROWS[30:])
        handle.flush()
        assert scan(tmp_path, HOUR).writing == ["w1.csv"]


def test_copied_with_its_times_kept_is_ready_at_once_a_plain_copy_waits(tmp_path):
    source = tmp_path / "w1.csv"
    source.write_text(ROWS)
    landing = tmp_path / "landing"
    landing.mkdir()
    time.sleep(0.01)
    shutil.copy2(source, landing / "kept.csv")  # cp -p: bytes, then the source's mtime set afterwards
    shutil.copyfile(source, landing / "plain.csv")  # cp: bytes only
    found = scan(landing, HOUR)
    assert [p.name for p in found.ready] == ["kept.csv"] and found.writing == ["plain.csv"]
