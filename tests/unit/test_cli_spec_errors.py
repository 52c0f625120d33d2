"""A broken model spec stops every ``loopline`` command about that model with the spec error's one line.

The commands are found in the real CLI (every one with a ``--model`` option), run through typer's
CliRunner against a models folder written here: one spec with a bad field, one with bad YAML.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.main import get_command
from typer.testing import CliRunner

from loopline.core.settings import get_settings
from loopline.ops.cli import app

PROJECT = Path(__file__).resolve().parents[2]


def _commands_with_a_model_option() -> list[tuple[str, list[str]]]:
    """(command, its required arguments filled with a placeholder) for each command that takes --model."""
    found = []
    for name, command in get_command(app).commands.items():
        if any("--model" in getattr(p, "opts", ()) for p in command.params):
            args = [
                ("1" if p.name != "kinds" else "empty")
                for p in command.params
                if p.required and not p.opts[0].startswith("-")
            ]
            found.append((name, args))
    return sorted(found)


COMMANDS = _commands_with_a_model_option()


def _spec(edit) -> str:
    raw = yaml.safe_load((PROJECT / "models" / "credit_risk" / "spec.yaml").read_text())
    raw["name"] = raw["dataset"]["name"] = "churn"
    edit(raw)
    return yaml.safe_dump(raw)


@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOPLINE_MODELS_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    monkeypatch.undo()
    get_settings.cache_clear()


def _write(models: Path, text: str) -> Path:
    (models / "churn").mkdir(exist_ok=True)
    path = models / "churn" / "spec.yaml"
    path.write_text(text)
    return path


def test_every_model_command_is_covered():
    names = {name for name, _ in COMMANDS}
    assert {"status", "audit", "generate", "reproduce", "trace", "pull-data", "drift-status"} <= names


@pytest.mark.parametrize("command,args", COMMANDS, ids=[c for c, _ in COMMANDS])
@pytest.mark.parametrize(
    "spec_text,field",
    [
        (lambda: _spec(lambda raw: raw["training"].update(valid_weeks=0)), "training.valid_weeks"),
        (lambda: _spec(lambda raw: raw["features"].update(colour=["red"])), "features.colour: unknown key"),
        (lambda: "name: churn\ndataset: [unclosed\n", "is not valid YAML"),
    ],
    ids=["bad-value", "unknown-key", "bad-yaml"],
)
def test_a_broken_spec_is_one_line_naming_file_and_field(models, command, args, spec_text, field):
    path = _write(models, spec_text())
    # named, or the only folder there is (plain `loopline status` is the overview of every folder, broken ones named)
    for model_args in (["-m", "churn"], [] if command != "status" else ["-m", "churn"]):
        result = CliRunner().invoke(app, [command, *args, *model_args])
        assert result.exit_code == 2, (command, result.output)
        assert isinstance(result.exception, SystemExit), (command, result.exception)  # not an exception's traceback
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and str(path) in lines[0] and field in lines[0], (command, result.output)


def test_an_unknown_model_names_the_ones_there_are(models):
    _write(models, _spec(lambda raw: None))
    result = CliRunner().invoke(app, ["audit", "-m", "chrun"])
    assert result.exit_code == 2 and "no spec for model 'chrun'" in result.output and "['churn']" in result.output
