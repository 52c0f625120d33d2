"""``loopline reproduce`` refuses, saying what to do, when the recorded commit lacks the model's folder or suite."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from loopline.training.reproduce import ReproduceError, Reproduction, check_commit_holds
from tests.unit.test_lineage import git

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    root = tmp_path / "project"
    (root / "include").mkdir(parents=True)
    (root / "include" / "a.py").write_text("v1\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "platform only")
    return root


def onboarded(root: Path) -> list[Path]:
    """A model folder and suite written after the commit (what `loopline onboard` leaves behind)."""
    (root / "models" / "churn").mkdir(parents=True)
    (root / "models" / "churn" / "spec.yaml").write_text("name: churn\n")
    (root / "expectations").mkdir()
    (root / "expectations" / "churn_batch.json").write_text("{}\n")
    return [root / "models" / "churn" / "spec.yaml", root / "expectations" / "churn_batch.json"]


def test_a_commit_without_the_model_folder_explains_what_to_do(repo):
    files = onboarded(repo)
    commit = git(repo, "rev-parse", "HEAD")
    with pytest.raises(ReproduceError) as err:
        check_commit_holds(repo, commit, "churn", files)
    message = str(err.value)
    assert "models/churn/spec.yaml" in message and "expectations/churn_batch.json" in message
    assert "Commit models/churn/" in message and "retrain" in message


def test_a_commit_with_the_folder_but_not_the_suite_names_the_suite(repo):
    files = onboarded(repo)
    git(repo, "add", "models")
    git(repo, "commit", "-qm", "model folder only")
    with pytest.raises(ReproduceError, match=r"has no expectations/churn_batch\.json "):
        check_commit_holds(repo, git(repo, "rev-parse", "HEAD"), "churn", files)


def test_a_commit_holding_both_passes(repo):
    files = onboarded(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "onboard churn")
    check_commit_holds(repo, git(repo, "rev-parse", "HEAD"), "churn", files)


def test_an_unknown_commit_is_named(repo):
    with pytest.raises(ReproduceError, match="0123456789ab is not in the repository"):
        check_commit_holds(repo, "0123456789abcdef0123456789abcdef01234567", "churn", onboarded(repo))


def test_a_version_trained_from_uncommitted_files_says_how_it_was_reproduced():
    done = Reproduction("churn", "1", "r", "abc", "v0001", {"auc": 0.8}, {"auc": 0.8}, 1e-9, note="note: code_dirty")
    assert done.table().splitlines()[-2:] == ["REPRODUCED", "note: code_dirty"]
