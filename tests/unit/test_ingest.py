"""A batch's life in the landing zone: claims, crash recovery, quarantine (real files, no Airflow)."""

from __future__ import annotations

import json

import pytest

from loopline.ingest import (
    STATE_FILE,
    BatchOutcome,
    batch_id_for,
    claim,
    claim_all,
    list_in_flight,
    list_landed,
    quarantine,
    sha256_of,
)


@pytest.fixture
def zones(tmp_path):
    folders = {name: tmp_path / name for name in ("landing", "processing", "quarantine", "archive")}
    for folder in folders.values():
        folder.mkdir()
    return folders


def everything(zones) -> list[str]:
    """Every landed file wherever it is now (what 'nothing lost' means)."""
    return sorted(
        p.name
        for folder in zones.values()
        for p in folder.rglob("*")
        if p.is_file() and p.name not in (STATE_FILE, "validation.json", "validation.txt")
    )


def test_half_written_and_hidden_files_are_left_alone(zones):
    for name in ("a.csv", ".b.csv", "c.csv.tmp", "d.part"):
        (zones["landing"] / name).write_text("x")
    assert [p.name for p in list_landed(zones["landing"])] == ["a.csv"]


def test_claim_moves_the_file_into_its_own_folder(zones):
    landed = zones["landing"] / "week 1.csv"
    landed.write_text("a,b\n1,2\n")
    sha = sha256_of(landed)
    batch = claim(landed, zones["processing"])
    assert batch.batch_id == batch_id_for(landed, sha) == f"week_1-{sha[:12]}"
    assert not landed.exists()
    assert batch.file.read_text() == "a,b\n1,2\n"
    assert json.loads((zones["processing"] / batch.batch_id / STATE_FILE).read_text())["sha256"] == sha


def test_claim_all_resumes_what_a_crashed_run_left_in_processing(zones):
    (zones["landing"] / "old.csv").write_text("1")
    crashed = claim(zones["landing"] / "old.csv", zones["processing"])
    (zones["landing"] / "new.csv").write_text("2")
    batches = claim_all(zones["landing"], zones["processing"])
    assert [b.source_name for b in batches] == ["old.csv", "new.csv"]
    assert batches[0] == crashed
    assert everything(zones) == ["new.csv", "old.csv"]


def test_a_crash_inside_claim_puts_the_file_back(zones):
    staging = zones["processing"] / ".x-123.claiming"
    staging.mkdir()
    (staging / STATE_FILE).write_text("{}")
    (staging / "x.csv").write_text("1")
    assert claim_all(zones["landing"], zones["processing"])[0].source_name == "x.csv"
    assert not staging.exists()
    assert everything(zones) == ["x.csv"]


def test_identical_bytes_in_flight_twice_get_distinct_folders(zones):
    for name in ("a.csv", "a_copy.csv"):
        (zones["landing"] / name).write_text("same")
    batches = claim_all(zones["landing"], zones["processing"])
    assert len({b.folder for b in batches}) == 2
    assert len(list_in_flight(zones["processing"])) == 2


def test_quarantine_moves_the_whole_folder_untouched(zones):
    (zones["landing"] / "bad.csv").write_bytes(b"\x00\x01garbage")
    batch = claim(zones["landing"] / "bad.csv", zones["processing"])
    (batch.file.parent / "validation.txt").write_text("FAILED")
    outcome = BatchOutcome(batch.batch_id, batch.sha256, batch.source_name, batch.folder, False, None, "FAILED")
    target = quarantine(outcome, zones["quarantine"])
    assert (target / "bad.csv").read_bytes() == b"\x00\x01garbage"
    assert (target / "validation.txt").read_text() == "FAILED"
    assert list(zones["processing"].iterdir()) == []
    assert everything(zones) == ["bad.csv"]
