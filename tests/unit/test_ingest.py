"""A batch's life in the landing zone, without Airflow: real files, the real GE suite, a real DVC registry.

Every test that ingests accounts for every input row afterwards: in the dataset,
in quarantine, or archived as a duplicate — nothing lost, nothing stored twice.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from loopline.core.settings import get_settings
from loopline.core.spec import load_spec
from loopline.ingestion.data_registry import DataRegistry
from loopline.ingestion.data_rules import NEW_KEYS, PLAUSIBLE_TIMESTAMPS, REAL_TIMESTAMPS
from loopline.ingestion.ingest import (
    STATE_FILE,
    ClaimedBatch,
    Zones,
    claim,
    claim_all,
    commit_accepted,
    list_in_flight,
    quarantine,
    validate_claimed,
)
from loopline.ingestion.landing import mark_complete, scan
from tests.generators import credit_risk as datagen

SECRET = "unit-test-secret"


@pytest.fixture
def zones(tmp_path) -> Zones:
    z = Zones(*(tmp_path / name for name in ("landing", "processing", "quarantine", "archive")))
    for folder in (z.landing, z.processing):
        folder.mkdir()
    return z


@pytest.fixture
def registry(tmp_path) -> DataRegistry:
    reg = DataRegistry(tmp_path / "registry", str(tmp_path / "remote"))
    reg.init()
    return reg


def spec_with(tmp_path, **rules):
    """The credit_risk spec with other ingest rules, in a models folder of its own."""
    src = get_settings().models_dir / "credit_risk" / "spec.yaml"
    raw = yaml.safe_load(src.read_text())
    raw["dataset"]["rules"].update(rules)
    folder = tmp_path / f"models-{len(list(tmp_path.glob('models-*')))}" / "credit_risk"
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(raw))
    return load_spec("credit_risk", folder.parent)


SPEC = load_spec("credit_risk", get_settings().models_dir)


def ingest(zones: Zones, registry: DataRegistry, spec=SPEC, settle: float = 0.0):
    """One ingest run, step by step as the DAG runs it."""
    claimed, found = claim_all(zones.landing, zones.processing, settle)
    outcomes = [validate_claimed(b, spec, get_settings().expectations_dir, SECRET) for b in claimed]
    for o in outcomes:
        if not o.accepted:
            quarantine(o, zones.quarantine)
    version = commit_accepted(outcomes, spec, registry, zones, "unit", SECRET)
    assert list_in_flight(zones.processing) == [], "nothing stays in processing after a run"
    return version, outcomes, found


def ids_in(folder: Path, zone_root: Path) -> list[str]:
    """Entity ids of the batch files under a zone (reports and state files excluded)."""
    ids = []
    for path in zone_root.rglob("*"):
        if path.suffix in (".csv", ".parquet") and path.name != "normalised.parquet" and path.is_file():
            try:
                frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
            except Exception:
                continue
            ids += frame["applicant_id"].astype(str).tolist() if "applicant_id" in frame else []
    return ids


def dataset_ids(registry: DataRegistry, tmp_path) -> list[str]:
    if not registry.versions("credit_risk"):
        return []
    version = registry.resolve("credit_risk")
    return registry.load(version, tmp_path / f"pull-{version.version}")["applicant_id"].astype(str).tolist()


def land(zones: Zones, frame: pd.DataFrame, name: str) -> Path:
    return datagen.write_batch(frame, zones.landing / name)


# -- the landing zone as a boundary -------------------------------------------------------


def test_scan_sorts_every_entry_and_follows_no_link(zones, tmp_path):
    outside = tmp_path / "secret.csv"
    outside.write_text("applicant_id\nX\n")
    (zones.landing / "link.csv").symlink_to(outside)
    os.mkfifo(zones.landing / "pipe.csv")
    (zones.landing / "sub").mkdir()
    (zones.landing / ".hidden.csv").write_text("x")
    (zones.landing / "upload.csv.part").write_text("x")
    (zones.landing / "fresh.csv").write_text("x")
    (zones.landing / "old.csv").write_text("x")
    os.utime(zones.landing / "old.csv", (time.time() - 120, time.time() - 120))
    (zones.landing / "marked.csv").write_text("x")
    mark_complete(zones.landing / "marked.csv")
    (zones.landing / "orphan.csv.done").touch()
    found = scan(zones.landing, settle_seconds=30)
    assert [p.name for p in found.ready] == ["marked.csv", "old.csv"]
    assert found.writing == ["fresh.csv", "upload.csv.part"]
    assert {n for n, _ in found.refused} == {"link.csv", "pipe.csv"}
    assert {n for n, _ in found.ignored} == {"sub", ".hidden.csv", "orphan.csv.done"}
    text = "\n".join(found.lines())
    assert "REFUSED: link.csv (a symbolic link" in text and "ignored: sub (a sub-directory" in text


def test_refused_and_ignored_entries_are_left_alone(zones, registry, tmp_path):
    outside = tmp_path / "elsewhere.csv"
    datagen.write_batch(datagen.make_batch(0, 20, seed=1), outside)
    (zones.landing / "link.csv").symlink_to(outside)
    (zones.landing / "nested").mkdir()
    datagen.write_batch(datagen.make_batch(1, 20, seed=1), zones.landing / "nested" / "w1.csv")
    version, outcomes, found = ingest(zones, registry)
    assert version is None and outcomes == []
    assert (zones.landing / "link.csv").is_symlink() and (zones.landing / "nested" / "w1.csv").exists()
    assert registry.versions("credit_risk") == []


def test_a_file_still_being_written_is_not_taken_until_it_settles(zones, registry, tmp_path):
    frame = datagen.make_batch(0, 50, seed=1)
    text = frame.to_csv(index=False)
    path = zones.landing / "slow.csv"
    path.write_text(text[: len(text) // 2])  # the writer is half way through a row
    version, outcomes, found = ingest(zones, registry, settle=30)
    assert outcomes == [] and found.writing == ["slow.csv"]
    path.write_text(text)  # done; it settles
    os.utime(path, (time.time() - 60, time.time() - 60))
    version, outcomes, _ = ingest(zones, registry, settle=30)
    assert version is not None and sorted(dataset_ids(registry, tmp_path)) == sorted(frame["applicant_id"])


def test_a_file_that_changes_after_its_claim_is_refused_loudly(zones, registry, tmp_path):
    land(zones, datagen.make_batch(0, 40, seed=1), "w0.csv")
    [batch], _ = claim_all(zones.landing, zones.processing)
    with open(batch.file, "a") as handle:  # a writer that still had it open
        handle.write("A-late,2026-01-05 00:00:00\n")
    outcome = validate_claimed(batch, SPEC, get_settings().expectations_dir, SECRET)
    assert not outcome.accepted and "changed after it was claimed" in outcome.summary
    quarantine(outcome, zones.quarantine)
    assert (zones.quarantine / batch.batch_id / "w0.csv").exists()
    assert registry.versions("credit_risk") == []


# -- claims and crash recovery ------------------------------------------------------------


def test_claim_records_the_hash_and_time_it_took_the_file(zones):
    landed = land(zones, datagen.make_batch(0, 5), "week 1.csv")
    batch = claim(landed, zones.processing, zones.landing / "week 1.csv.done")
    assert batch.batch_id.startswith("week_1-")
    assert not landed.exists() and not (zones.landing / "week 1.csv.done").exists()
    state = json.loads((zones.processing / batch.batch_id / STATE_FILE).read_text())
    assert state["sha256"] == batch.sha256 and state["claimed_at"]


def test_a_crash_inside_claim_is_finished_or_undone(zones):
    staged = zones.processing / ".x-1.claiming"
    staged.mkdir()
    (staged / "x.csv").write_text("1")
    (staged / STATE_FILE).write_text(
        json.dumps(ClaimedBatch("x-1", "0" * 64, "x.csv", str(zones.processing / "x-1")).__dict__)
    )
    unstaged = zones.processing / ".y-1.claiming"
    unstaged.mkdir()
    (unstaged / STATE_FILE).write_text("{")  # crashed while writing its state: the file never moved
    (zones.landing / "y.csv").write_text("2")
    batches, _ = claim_all(zones.landing, zones.processing)
    assert sorted(b.source_name for b in batches) == ["x.csv", "y.csv"]
    assert not staged.exists() and not unstaged.exists()


def test_same_name_and_bytes_landing_twice_never_collide(zones, registry, tmp_path):
    frame = datagen.make_batch(0, 30, seed=1)
    land(zones, frame, "w0.csv")
    ingest(zones, registry)
    for _ in range(2):  # re-sent, twice, under the same name
        land(zones, frame, "w0.csv")
        version, outcomes, _ = ingest(zones, registry)
        assert version is None and [o.status for o in outcomes] == ["duplicate"]
    assert len(list(zones.archive.iterdir())) == 3
    assert sorted(dataset_ids(registry, tmp_path)) == sorted(frame["applicant_id"])  # stored once
    outcome_text = next(p for p in zones.archive.glob("*/outcome.txt") if "duplicate" in p.read_text()).read_text()
    assert "same bytes as batch" in outcome_text


def test_a_bad_file_sent_again_is_quarantined_again(zones, registry):
    for _ in range(2):
        datagen.write_malformed("out_of_range", zones.landing / "bad.csv")
        ingest(zones, registry)
    assert len(list(zones.quarantine.iterdir())) == 2


def test_two_copies_in_one_run_are_stored_once(zones, registry, tmp_path):
    frame = datagen.make_batch(0, 30, seed=1)
    land(zones, frame, "a.csv")
    land(zones, frame, "b.csv")
    version, outcomes, _ = ingest(zones, registry)
    assert sorted(o.status for o in outcomes) == ["duplicate", "versioned"]
    assert version.rows == 30 and len(dataset_ids(registry, tmp_path)) == 30


# -- one bad batch never blocks the others ------------------------------------------------


def _with_timestamps(frame: pd.DataFrame, values: list[str]) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[frame.index[: len(values)], "applied_at"] = values
    return frame


@pytest.mark.parametrize(
    "stamps, rule",
    [
        (["2026-02-30 10:00:00"], REAL_TIMESTAMPS),  # a day February does not have
        (["9999-01-01 00:00:00"], REAL_TIMESTAMPS),  # a year no nanosecond timestamp holds
        (["2099-01-01 00:00:00"], PLAUSIBLE_TIMESTAMPS),  # the future
        (["2001-01-01 00:00:00"], PLAUSIBLE_TIMESTAMPS),  # before the spec's earliest date
    ],
)
def test_impossible_timestamps_quarantine_their_batch_only(zones, registry, tmp_path, stamps, rule):
    good, bad = datagen.make_batch(0, 40, seed=1), datagen.make_batch(1, 40, seed=1)
    land(zones, good, "good.csv")
    land(zones, _with_timestamps(bad, stamps), "bad.csv")
    version, outcomes, _ = ingest(zones, registry)
    assert version is not None and sorted(dataset_ids(registry, tmp_path)) == sorted(good["applicant_id"])
    [quarantined] = zones.quarantine.iterdir()
    report = json.loads((quarantined / "validation.json").read_text())
    assert [f["expectation"] for f in report["failures"]] == [rule]
    assert stamps[0] in (quarantined / "validation.txt").read_text()
    assert sorted(ids_in(quarantined, zones.quarantine)) == sorted(bad["applicant_id"])


def test_unreadable_and_unsupported_files_are_quarantined_while_good_ones_go_on(zones, registry, tmp_path):
    good = datagen.make_batch(0, 40, seed=1)
    land(zones, good, "good.csv")
    (zones.landing / "notes.json").write_text("{}")
    datagen.write_malformed("unparseable", zones.landing / "broken.csv")
    version, _, _ = ingest(zones, registry)
    assert version.rows == 40
    assert len(list(zones.quarantine.iterdir())) == 2


# -- duplicates across the whole dataset, per policy --------------------------------------


def test_reject_policy_quarantines_a_batch_that_repeats_stored_ids(zones, registry, tmp_path):
    first = datagen.make_batch(0, 40, seed=1)
    land(zones, first, "w0.csv")
    ingest(zones, registry)
    again = first.dropna().head(10).copy()
    again["loan_amount"] = again["loan_amount"] + 1  # new bytes, old applicants
    land(zones, again, "w0-fixed.csv")
    version, _, _ = ingest(zones, registry)
    assert version is None and registry.versions("credit_risk") == ["v0001"]
    [quarantined] = zones.quarantine.iterdir()
    report = json.loads((quarantined / "validation.json").read_text())
    assert [f["expectation"] for f in report["failures"]] == [NEW_KEYS]
    text = (quarantined / "validation.txt").read_text()
    assert "10 of 10 rows" in text and not any(i in text for i in first["applicant_id"])  # pseudonymised


def test_drop_repeats_drops_exact_repeats_and_rejects_conflicts(zones, registry, tmp_path):
    spec = spec_with(tmp_path, on_duplicate="drop_repeats")
    first, second = datagen.make_batch(0, 40, seed=1), datagen.make_batch(1, 40, seed=1)
    land(zones, first, "w0.csv")
    ingest(zones, registry, spec)
    land(zones, pd.concat([first.head(5), second]), "w1-with-repeats.csv")  # 5 exact repeats + 40 new
    version, [outcome], _ = ingest(zones, registry, spec)
    assert version.rows == 80 and "5 rows repeat stored rows exactly" in " ".join(outcome.notes)
    conflicting = first.dropna().head(3).copy()
    conflicting["age"] = conflicting["age"] + 1
    land(zones, conflicting, "w0-changed.csv")
    version, [outcome], _ = ingest(zones, registry, spec)
    assert version is None and outcome.status == "rejected"
    assert sorted(dataset_ids(registry, tmp_path)) == sorted([*first["applicant_id"], *second["applicant_id"]])


def test_keep_latest_replaces_old_rows(zones, registry, tmp_path):
    spec = spec_with(tmp_path, on_duplicate="keep_latest")
    first = datagen.make_batch(0, 40, seed=1)
    land(zones, first, "w0.csv")
    ingest(zones, registry, spec)
    corrected = first.dropna().head(4).copy()
    corrected["annual_income"] = 12345.0
    land(zones, corrected, "w0-corrections.csv")
    version, _, _ = ingest(zones, registry, spec)
    assert version.rows == 40 and version.batches == 2
    data = registry.load(version, tmp_path / "pull")
    assert data["applicant_id"].is_unique and len(data) == 40
    fixed = data.set_index("applicant_id").loc[corrected["applicant_id"], "annual_income"]
    assert (fixed == 12345.0).all()
    v1 = registry.load(registry.resolve("credit_risk", "v0001"), tmp_path / "pull-v1")
    assert (v1.set_index("applicant_id").loc[corrected["applicant_id"], "annual_income"] != 12345.0).all()


def test_rows_of_one_batch_that_repeat_each_other_follow_the_policy(zones, registry, tmp_path):
    spec = spec_with(tmp_path, on_duplicate="keep_latest", unique_key=["applicant_id", "applied_at"])
    frame = datagen.make_batch(0, 20, seed=1)
    land(zones, frame, "w0.csv")
    version, _, _ = ingest(zones, registry, spec)
    assert version.rows == 20


def test_a_spec_key_must_name_dataset_columns(tmp_path):
    from loopline.core.spec import SpecError

    with pytest.raises(SpecError, match="unique_key names columns the dataset does not have"):
        spec_with(tmp_path, unique_key=["no_such_column"])
    with pytest.raises(SpecError, match="on_duplicate"):
        spec_with(tmp_path, on_duplicate="merge")


# -- the registry after a crash -----------------------------------------------------------


def test_a_commit_left_untagged_by_a_crash_is_tagged_on_the_next_run(zones, registry, tmp_path):
    land(zones, datagen.make_batch(0, 30, seed=1), "w0.csv")
    ingest(zones, registry)
    registry._git("tag", "-d", "credit_risk-v0001")  # as if the process died between commit and tag
    land(zones, datagen.make_batch(1, 30, seed=1), "w1.csv")
    version, _, _ = ingest(zones, registry)
    assert registry.versions("credit_risk") == ["v0001", "v0002"] and version.rows == 60


def test_a_rewrite_cut_short_is_undone(zones, registry, tmp_path):
    land(zones, datagen.make_batch(0, 30, seed=1), "w0.csv")
    version, _, _ = ingest(zones, registry)
    [stored] = (registry.root / "data" / "credit_risk").glob("*.parquet")
    stored.write_bytes(b"half a rewrite")  # a keep_latest rewrite that never reached its commit
    with registry.stage("credit_risk"):
        pass
    assert len(pd.read_parquet(stored)) == 30
    shutil.rmtree(tmp_path / "pull", ignore_errors=True)
    assert len(registry.load(registry.resolve("credit_risk"), tmp_path / "pull")) == 30
