"""Lineage: the training fingerprint, its MLflow tags, and the code version read from a real git repo."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import pytest

from loopline.core.lineage import CodeVersion, TrainingInputs, code_version

PROJECT_ROOT = Path(__file__).resolve().parents[2]
INPUTS = TrainingInputs(
    model_name="credit_risk",
    data_version="v0001",
    data_rev="abc123",
    data_md5="d41d8cd98f00b204e9800998ecf8427e.dir",
    feature_version="1",
    code_commit="deadbeef",
    code_dirty=False,
    params={"learning_rate": 0.05, "num_leaves": 31, "seed": 42},
)
LINEAGE_TAGS = {
    "loopline.model",
    "loopline.data_version",
    "loopline.data_rev",
    "loopline.data_md5",
    "loopline.feature_version",
    "loopline.code_commit",
    "loopline.code_dirty",
    "loopline.fingerprint",
    "loopline.runtime",
    "mlflow.source.git.commit",
}

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


# --- fingerprint --------------------------------------------------------------------------------


def test_fingerprint_is_stable():
    same = TrainingInputs(**{f.name: getattr(INPUTS, f.name) for f in fields(INPUTS)})
    assert INPUTS.fingerprint() == same.fingerprint() == INPUTS.fingerprint()
    assert re.fullmatch(r"[0-9a-f]{16}", INPUTS.fingerprint())


def test_fingerprint_is_known_across_processes():
    # a hash of the inputs, not of object identity: another process computes the same key
    code = (
        "from loopline.core.lineage import TrainingInputs as T;"
        "print(T('credit_risk','v0001','abc123','d41d8cd98f00b204e9800998ecf8427e.dir','1','deadbeef',False,"
        "{'seed': 42, 'num_leaves': 31, 'learning_rate': 0.05}).fingerprint())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == INPUTS.fingerprint()


def test_fingerprint_ignores_param_order():
    reordered = replace(INPUTS, params={"seed": 42, "num_leaves": 31, "learning_rate": 0.05})
    assert reordered.fingerprint() == INPUTS.fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        {"model_name": "fraud"},
        {"data_version": "v0002"},
        {"data_rev": "abc124"},
        {"data_md5": "other.dir"},
        {"feature_version": "2"},
        {"code_commit": "cafebabe"},
        {"code_dirty": True},
        {"params": {"learning_rate": 0.06, "num_leaves": 31, "seed": 42}},
        {"params": {"learning_rate": 0.05, "num_leaves": 31, "seed": 43}},
        {"params": {"learning_rate": 0.05, "num_leaves": 31, "seed": 42, "max_depth": 6}},
        {"runtime": "image loopline:local"},
    ],
    ids=[
        "model",
        "data_version",
        "data_rev",
        "data_md5",
        "features",
        "commit",
        "dirty",
        "lr",
        "seed",
        "new-param",
        "runtime",
    ],  # fmt: skip
)
def test_fingerprint_changes_when_any_input_changes(change):
    assert replace(INPUTS, **change).fingerprint() != INPUTS.fingerprint()


def test_every_field_takes_part_in_the_fingerprint():
    changed = {
        "model_name": "x",
        "data_version": "x",
        "data_rev": "x",
        "data_md5": "x",
        "feature_version": "x",
        "code_commit": "x",
        "code_dirty": True,
        "params": {},
        "runtime": "image x",
        "stored": {"card_activity": {"definition_sha": "d", "offline_version": "o"}},
    }
    assert set(changed) == {f.name for f in fields(TrainingInputs)}  # a new field must be added here too
    prints = {replace(INPUTS, **{name: value}).fingerprint() for name, value in changed.items()}
    assert len(prints) == len(changed) and INPUTS.fingerprint() not in prints


def test_an_in_process_run_keeps_the_fingerprint_it_had_before_runtimes_were_recorded():
    # the known-across-processes key above is built without a runtime: in-process is the default
    assert INPUTS.runtime == "in-process"
    assert replace(INPUTS, runtime="image loopline:local").fingerprint() != INPUTS.fingerprint()


# --- tags ---------------------------------------------------------------------------------------


def test_tags_carry_the_whole_lineage():
    tags = INPUTS.tags()
    assert set(tags) == LINEAGE_TAGS
    assert tags["loopline.runtime"] == "in-process"
    assert replace(INPUTS, runtime="image loopline:local").tags()["loopline.runtime"] == "image loopline:local"
    assert tags["loopline.model"] == "credit_risk"
    assert tags["loopline.data_version"] == "v0001" and tags["loopline.data_rev"] == "abc123"
    assert tags["loopline.data_md5"] == INPUTS.data_md5 and tags["loopline.feature_version"] == "1"
    assert tags["loopline.code_commit"] == tags["mlflow.source.git.commit"] == "deadbeef"
    assert tags["loopline.fingerprint"] == INPUTS.fingerprint()


@pytest.mark.parametrize("dirty,text", [(False, "false"), (True, "true")])
def test_tags_are_strings(dirty, text):
    tags = replace(INPUTS, code_dirty=dirty).tags()
    assert tags["loopline.code_dirty"] == text
    assert all(isinstance(v, str) for v in tags.values())


# --- code version -------------------------------------------------------------------------------


@pytest.fixture
def no_override(monkeypatch):
    monkeypatch.delenv("LOOPLINE_GIT_COMMIT", raising=False)
    return monkeypatch


@pytest.fixture
def repo(tmp_path, no_override) -> Path:
    """A committed git repo shaped like the project: include/, models/, dags/ and a README."""
    root = tmp_path / "project"
    for rel in ("include/loopline/a.py", "models/m/spec.yaml", "dags/train.py", "README.md"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("v1\n")
    # never let git climb out of the temp folder into an enclosing repository
    no_override.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "first")
    return root


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false", *args],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


@needs_git
def test_a_clean_checkout_reports_its_commit(repo):
    version = code_version(repo)
    assert version == CodeVersion(commit=git(repo, "rev-parse", "HEAD"), dirty=False)
    assert re.fullmatch(r"[0-9a-f]{40}", version.commit)


@needs_git
@pytest.mark.parametrize("tracked", ["include/loopline/a.py", "models/m/spec.yaml", "dags/train.py"])
def test_modifying_tracked_code_makes_it_dirty(repo, tracked):
    (repo / tracked).write_text("v2\n")
    assert code_version(repo).dirty is True


@needs_git
def test_a_staged_change_is_dirty_too(repo):
    (repo / "include" / "loopline" / "a.py").write_text("v2\n")
    git(repo, "add", "include")
    assert code_version(repo).dirty is True


@needs_git
def test_a_new_commit_is_clean_with_a_new_commit_id(repo):
    before = code_version(repo).commit
    (repo / "include" / "loopline" / "a.py").write_text("v2\n")
    git(repo, "commit", "-qam", "second")
    after = code_version(repo)
    assert after.dirty is False and after.commit != before


@needs_git
def test_untracked_files_and_docs_do_not_make_it_dirty(repo):
    (repo / "scratch.txt").write_text("untracked")
    (repo / "include" / "loopline" / "new_module.py").write_text("untracked, inside include/")
    (repo / "README.md").write_text("v2\n")  # tracked, but not code that trains
    assert code_version(repo).dirty is False


def model_files(repo: Path, name: str = "m") -> list[Path]:
    return [repo / "models" / name, repo / "expectations" / f"{name}_batch.json"]


@needs_git
def test_an_untracked_model_folder_and_suite_are_dirty(repo):
    # a freshly onboarded model: its folder and suite exist but were never committed
    (repo / "models" / "new").mkdir()
    (repo / "models" / "new" / "spec.yaml").write_text("name: new\n")
    (repo / "expectations").mkdir()
    (repo / "expectations" / "new_batch.json").write_text("{}\n")
    assert code_version(repo).dirty is False  # the platform's code alone is clean ...
    assert code_version(repo, model_files(repo, "new")).dirty is True  # ... the model's own files are not
    assert code_version(repo, model_files(repo, "m")[:1]).dirty is False  # another model's folder stays clean


@needs_git
@pytest.mark.parametrize("what", ["suite-untracked", "suite-modified", "new-file-in-folder"])
def test_the_suite_or_a_new_file_in_a_committed_folder_is_dirty(repo, what):
    (repo / "expectations").mkdir()
    suite = repo / "expectations" / "m_batch.json"
    suite.write_text("{}\n")
    if what != "suite-untracked":
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "suite")
        assert code_version(repo, model_files(repo)).dirty is False
    if what == "suite-modified":
        suite.write_text('{"changed": true}\n')
    elif what == "new-file-in-folder":
        (repo / "models" / "m" / "features.py").write_text("# untracked feature code\n")
    assert code_version(repo, model_files(repo)).dirty is True


@needs_git
def test_a_model_folder_git_ignores_or_outside_the_repo_is_dirty(repo, tmp_path):
    (repo / ".gitignore").write_text("models/hidden/\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "ignore")
    (repo / "models" / "hidden").mkdir()
    (repo / "models" / "hidden" / "spec.yaml").write_text("name: hidden\n")
    assert code_version(repo, [repo / "models" / "hidden"]).dirty is True
    outside = tmp_path / "elsewhere" / "models" / "m"
    outside.mkdir(parents=True)
    assert code_version(repo, [outside]).dirty is True


@needs_git
def test_the_override_wins_even_over_a_dirty_repo(repo, no_override):
    (repo / "include" / "loopline" / "a.py").write_text("v2\n")
    no_override.setenv("LOOPLINE_GIT_COMMIT", "  0123abc  ")
    assert code_version(repo) == CodeVersion(commit="0123abc", dirty=False)


@needs_git
def test_a_blank_override_is_ignored(repo, no_override):
    no_override.setenv("LOOPLINE_GIT_COMMIT", "   ")
    assert code_version(repo).commit == git(repo, "rev-parse", "HEAD")


def test_a_folder_outside_git_is_unknown(tmp_path, no_override):
    no_override.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    version = code_version(tmp_path)
    assert version.commit == "unknown" and version.dirty is True


def test_the_override_applies_outside_git(tmp_path, no_override):
    no_override.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    no_override.setenv("LOOPLINE_GIT_COMMIT", "feedface")
    assert code_version(tmp_path) == CodeVersion(commit="feedface", dirty=False)


@needs_git
def test_the_project_itself_reports_its_head():
    if not (PROJECT_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    expected = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert code_version(PROJECT_ROOT).commit == expected


def test_no_git_binary_is_unknown_not_a_crash(tmp_path, no_override):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    no_override.setenv("PATH", str(empty_bin))
    assert code_version(tmp_path).commit == "unknown"
