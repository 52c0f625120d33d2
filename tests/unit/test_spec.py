from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from loopline.spec import SpecError, load_spec

MODELS = Path(__file__).resolve().parents[2] / "models"


def copy_spec(tmp_path: Path, edit) -> Path:
    models = tmp_path / "models"
    shutil.copytree(MODELS / "credit_risk", models / "credit_risk")
    path = models / "credit_risk" / "spec.yaml"
    raw = yaml.safe_load(path.read_text())
    edit(raw)
    path.write_text(yaml.safe_dump(raw))
    return models


def test_the_shipped_spec_loads():
    spec = load_spec("credit_risk", MODELS)
    assert spec.input_columns[:2] == ["applicant_id", "applied_at"] and spec.input_columns[-1] == "defaulted"
    assert len(spec.features.names) == 15


def test_unknown_key_is_named(tmp_path):
    models = copy_spec(tmp_path, lambda r: r["training"].update(learnign_rate=0.1))
    with pytest.raises(SpecError, match="training.learnign_rate"):
        load_spec("credit_risk", models)


def test_inverted_range_and_duplicate_levels(tmp_path):
    models = copy_spec(tmp_path, lambda r: r["features"]["numeric"]["age"].update(min=200))
    with pytest.raises(SpecError, match="age"):
        load_spec("credit_risk", models)
    models = copy_spec(tmp_path / "b", lambda r: r["features"]["categorical"].update(region=["north", "north"]))
    with pytest.raises(SpecError, match="region"):
        load_spec("credit_risk", models)


def test_missing_model_lists_the_known_ones(tmp_path):
    with pytest.raises(SpecError, match=r"known models: \['credit_risk'\]"):
        load_spec("fraud", MODELS)


def test_name_mismatch_and_bad_yaml(tmp_path):
    models = copy_spec(tmp_path, lambda r: r.update(name="other"))
    with pytest.raises(SpecError, match="declares name"):
        load_spec("credit_risk", models)
    (models / "credit_risk" / "spec.yaml").write_text("name: [unclosed")
    load_spec.cache_clear()
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec("credit_risk", models)
