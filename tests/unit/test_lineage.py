from __future__ import annotations

import subprocess
from dataclasses import replace

import pytest

from loopline.lineage import TrainingInputs, code_version

INPUTS = TrainingInputs("m", "v0001", "abc", "md5.dir", "1", "deadbeef", False, {"learning_rate": 0.05, "seed": 1})


def test_fingerprint_is_stable_and_sensitive_to_every_input():
    assert INPUTS.fingerprint() == replace(INPUTS).fingerprint()
    for change in (
        {"data_md5": "other.dir"},
        {"feature_version": "2"},
        {"code_commit": "cafe"},
        {"params": {"learning_rate": 0.06, "seed": 1}},
    ):
        assert replace(INPUTS, **change).fingerprint() != INPUTS.fingerprint()


def test_tags_carry_the_whole_lineage():
    tags = INPUTS.tags()
    for key in ("data_version", "data_rev", "data_md5", "feature_version", "code_commit", "fingerprint"):
        assert f"loopline.{key}" in tags
    assert tags["mlflow.source.git.commit"] == "deadbeef"


def test_code_version_reads_git(tmp_path, monkeypatch):
    monkeypatch.delenv("LOOPLINE_GIT_COMMIT", raising=False)
    assert code_version(tmp_path).commit == "unknown"

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)  # fmt: skip

    git("init", "-q")
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "a.py").write_text("x = 1\n")
    git("add", "-A")
    git("commit", "-qm", "c")
    clean = code_version(tmp_path)
    assert len(clean.commit) == 40 and clean.dirty is False
    (tmp_path / "scratch.txt").write_text("untracked does not count")
    assert code_version(tmp_path).dirty is False
    (tmp_path / "include" / "a.py").write_text("x = 2\n")
    assert code_version(tmp_path).dirty is True
    monkeypatch.setenv("LOOPLINE_GIT_COMMIT", "0123abc")
    assert code_version(tmp_path).commit == "0123abc"


@pytest.mark.parametrize("field", ["data_rev", "code_commit"])
def test_tags_are_strings(field):
    assert isinstance(INPUTS.tags()[f"loopline.{field}"], str)
