"""The DVC data registry on a real git + DVC repo with a local remote (no Airflow)."""

from __future__ import annotations

import subprocess

import pandas as pd
import pytest

from loopline.ingestion.data_registry import BatchRecord, DataRegistry, RegistryError


def frame(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"applicant_id": [f"A{i}" for i in range(start, start + n)], "x": range(n)})


def record(batch_id: str, sha: str, rows: int) -> BatchRecord:
    return BatchRecord(batch_id=batch_id, sha256=sha, source_name=f"{batch_id}.csv", rows=rows, ingested_for="test")


@pytest.fixture
def registry(tmp_path):
    reg = DataRegistry(tmp_path / "registry", str(tmp_path / "remote"))
    reg.init()
    return reg


def test_init_is_idempotent_and_configures_the_remote(registry, tmp_path):
    registry.init()
    config = (registry.root / ".dvc" / "config").read_text()
    assert str(tmp_path / "remote") in config
    log = subprocess.run(["git", "log", "--oneline"], cwd=registry.root, capture_output=True, text=True).stdout
    assert len(log.strip().splitlines()) == 1


def test_each_commit_is_a_tagged_version_pushed_to_the_remote(registry, tmp_path):
    v1 = registry.commit_batches("ds", [(record("b1", "a" * 64, 3), frame(3))], "first")
    v2 = registry.commit_batches("ds", [(record("b2", "b" * 64, 2), frame(2, 3))], "second")
    assert (v1.version, v2.version) == ("v0001", "v0002")
    assert (v1.rows, v2.rows) == (3, 5) and v2.batches == 2
    assert v1.md5 != v2.md5 and v1.md5.endswith(".dir")
    assert registry.versions("ds") == ["v0001", "v0002"]
    assert any((tmp_path / "remote").rglob("*.dir")), "dataset not pushed"


def test_known_content_is_never_added_twice(registry):
    registry.commit_batches("ds", [(record("b1", "a" * 64, 3), frame(3))], "first")
    assert registry.commit_batches("ds", [(record("b1-again", "a" * 64, 3), frame(3))], "again") is None
    both = [(record("c1", "c" * 64, 1), frame(1)), (record("c2", "c" * 64, 1), frame(1))]
    version = registry.commit_batches("ds", both, "same bytes twice in one run")
    assert version.batches == 2  # b1 + one copy of c


def test_resolve_latest_tag_and_commit(registry):
    v1 = registry.commit_batches("ds", [(record("b1", "a" * 64, 3), frame(3))], "first")
    registry.commit_batches("ds", [(record("b2", "b" * 64, 2), frame(2, 3))], "second")
    assert registry.resolve("ds", "latest").version == "v0002"
    assert registry.resolve("ds", "v0001") == v1
    assert registry.resolve("ds", v1.rev[:10]) == v1
    with pytest.raises(RegistryError, match="no version v0009"):
        registry.resolve("ds", "v0009")
    with pytest.raises(RegistryError, match="not 'latest'"):
        registry.resolve("ds", "yesterday")
    with pytest.raises(RegistryError, match="no versions yet"):
        registry.resolve("other", "latest")


def test_pull_fetches_exactly_that_version_from_the_remote(registry, tmp_path):
    v1 = registry.commit_batches("ds", [(record("b1", "a" * 64, 3), frame(3))], "first")
    registry.commit_batches("ds", [(record("b2", "b" * 64, 2), frame(2, 3))], "second")
    old = registry.load(v1, tmp_path / "pulled-v1")
    assert list(old["applicant_id"]) == ["A0", "A1", "A2"]
    latest = registry.load(registry.resolve("ds"), tmp_path / "pulled-latest")
    assert len(latest) == 5


def test_a_crash_before_commit_leaves_no_trace(registry):
    registry.commit_batches("ds", [(record("b1", "a" * 64, 3), frame(3))], "first")
    # what a crash between writing files and committing leaves behind:
    frame(4).to_parquet(registry.root / "data" / "ds" / "stray.parquet")
    (registry.root / "manifests" / "ds.json").write_text("[]")
    version = registry.commit_batches("ds", [(record("b2", "b" * 64, 2), frame(2, 3))], "second")
    assert version.batches == 2 and version.rows == 5
    assert not (registry.root / "data" / "ds" / "stray.parquet").exists()
