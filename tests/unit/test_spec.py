"""The model spec: the shipped one loads, and every kind of mistake fails loudly, naming its key."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from loopline.core.errors import LooplineError
from loopline.core.spec import ModelSpec, SpecError, load_spec, load_spec_file, spec_path

MODELS = Path(__file__).resolve().parents[2] / "models"
SHIPPED = MODELS / "credit_risk" / "spec.yaml"


@pytest.fixture(autouse=True)
def _fresh_cache():
    load_spec.cache_clear()
    yield
    load_spec.cache_clear()


def models_with(tmp_path: Path, edit: Callable[[dict], None] | None = None, name: str = "credit_risk") -> Path:
    """A fresh models/ folder holding an (edited) copy of the shipped spec under models/<name>/."""
    models = tmp_path / "models"
    folder = models / name
    folder.mkdir(parents=True)
    raw = yaml.safe_load(SHIPPED.read_text())
    if edit is not None:
        edit(raw)
    (folder / "spec.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return models


# --- the shipped spec ---------------------------------------------------------------------------


def test_the_shipped_spec_loads_with_its_schema():
    spec = load_spec("credit_risk", MODELS)
    assert isinstance(spec, ModelSpec) and spec.name == "credit_risk"
    assert (spec.dataset.entity_id, spec.dataset.timestamp, spec.dataset.target) == (
        "applicant_id",
        "applied_at",
        "defaulted",
    )
    assert len(spec.features.numeric) == 11 and len(spec.features.categorical) == 4
    assert spec.features.categorical["home_ownership"] == ["RENT", "OWN", "MORTGAGE", "OTHER"]
    assert (spec.features.numeric["age"].min, spec.features.numeric["age"].max) == (18.0, 100.0)
    assert spec.training.seed == 42 and spec.training.holdout_weeks == 1 and spec.training.valid_weeks == 1
    assert spec.quality_gate["min_auc"] == pytest.approx(0.70) and spec.task == "binary"


def test_input_columns_are_id_time_features_label_in_spec_order():
    spec = load_spec("credit_risk", MODELS)
    assert spec.features.names == [*spec.features.numeric, *spec.features.categorical]
    assert spec.input_columns == ["applicant_id", "applied_at", *spec.features.names, "defaulted"]
    assert spec.features.names[0] == "age" and spec.features.names[-1] == "region"


def test_load_spec_is_cached_per_model_and_folder():
    assert load_spec("credit_risk", MODELS) is load_spec("credit_risk", MODELS)


def test_the_spec_is_frozen():
    spec = load_spec("credit_risk", MODELS)
    with pytest.raises(ValidationError):
        spec.name = "other"  # type: ignore[misc]


def test_spec_path_and_load_spec_file_agree_with_load_spec():
    assert spec_path("credit_risk", MODELS) == SHIPPED
    assert load_spec_file(SHIPPED) == load_spec("credit_risk", MODELS)


def test_a_copy_of_the_shipped_spec_loads(tmp_path):
    copy = load_spec("credit_risk", models_with(tmp_path))
    assert copy.model_dump() == load_spec("credit_risk", MODELS).model_dump()
    assert copy.model_dir == tmp_path / "models" / "credit_risk"  # a spec knows its folder (and its feature code)
    assert load_spec("credit_risk", MODELS).model_dir == SHIPPED.parent


# --- unknown keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "edit,path",
    [
        (lambda r: r.update(owner="me"), "owner"),
        (lambda r: r["training"].update(learnign_rate=0.1), "training.learnign_rate"),
        (lambda r: r["rollout"]["gates"].update(max_auc_dorp=0.1), "rollout.gates.max_auc_dorp"),
        (lambda r: r["features"]["numeric"]["age"].update(mn=1), "features.numeric.age.mn"),
        (lambda r: r["dataset"].update(label="defaulted"), "dataset.label"),
    ],
)
def test_an_unknown_key_fails_naming_its_path(tmp_path, edit, path):
    models = models_with(tmp_path, edit)
    with pytest.raises(SpecError) as err:
        load_spec("credit_risk", models)
    message = str(err.value)
    assert f"{path}: unknown key; allowed here: " in message
    assert str(models / "credit_risk" / "spec.yaml") in message  # and the file


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda r: r["quality_gate"].update(min_rmse=3.0),
            "['min_rmse'] are not gate keys of a binary model; allowed:",
        ),
        (lambda r: r["quality_gate"].update(max_auc=0.9), "['max_auc'] are not gate keys"),  # AUC: higher is better
        (lambda r: r.update(quality_gate={"auc_tolerance": 0.01}), "needs at least one absolute floor or ceiling"),
        (
            lambda r: r["quality_gate"].update(auc_tolerance=-0.1),
            "quality_gate.auc_tolerance: a tolerance must be >= 0",
        ),
        (lambda r: r["training"]["params"].update(objective="regression"), "objective 'regression' does not fit"),
        (lambda r: r["training"]["params"].update(num_class=3), "num_class is set by the platform"),
        (lambda r: r["training"].pop("decision_threshold"), "a binary model needs one"),
        (lambda r: r["dataset"].update(classes=["a", "b", "c"]), "applies to task multiclass only"),
        (lambda r: r.update(task="multiclass"), "a multiclass model needs at least 3 distinct classes"),
        (
            lambda r: r.update(task="regression"),
            "'max_brier', 'min_auc'] are not gate keys of a regression",
        ),
        (lambda r: r.update(task="ranking"), "task: Input should be 'binary', 'regression' or 'multiclass'"),
    ],
)
def test_a_spec_must_fit_its_task_type(tmp_path, edit, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        load_spec("credit_risk", models_with(tmp_path, edit))


def test_a_missing_required_key_is_named(tmp_path):
    models = models_with(tmp_path, lambda r: r["dataset"].pop("target"))
    with pytest.raises(SpecError, match=r"dataset\.target: Field required"):
        load_spec("credit_risk", models)


@pytest.mark.parametrize(
    "edit,path",
    [
        (lambda r: r["training"].update(decision_threshold=1.0), "training.decision_threshold"),
        (lambda r: r["training"].update(holdout_weeks=0), "training.holdout_weeks"),
        (lambda r: r["training"].update(seed="forty-two"), "training.seed"),
        (lambda r: r["quality_gate"].update(min_auc=1.5), "quality_gate.min_auc"),
        (lambda r: r["rollout"].update(shadow_seconds=-1), "rollout.shadow_seconds"),
        (lambda r: r["rollout"].update(shadow_seconds="ten minutes"), "rollout.shadow_seconds"),
        (lambda r: r["rollout"]["gates"].update(max_disagreement=1.5), "rollout.gates.max_disagreement"),
    ],
)
def test_a_value_out_of_bounds_or_of_the_wrong_type_is_named(tmp_path, edit, path):
    with pytest.raises(SpecError, match=re.escape(f"{path}: ")):
        load_spec("credit_risk", models_with(tmp_path, edit))


# --- feature schema rules -----------------------------------------------------------------------


def test_min_above_max_is_an_error(tmp_path):
    models = models_with(tmp_path, lambda r: r["features"]["numeric"]["age"].update(min=200))
    with pytest.raises(SpecError, match=r"features\.numeric\.age: min 200\.0 > max 100\.0"):
        load_spec("credit_risk", models)


def test_min_equal_to_max_is_allowed(tmp_path):
    models = models_with(tmp_path, lambda r: r["features"]["numeric"]["age"].update(min=100))
    assert load_spec("credit_risk", models).features.numeric["age"].min == 100.0


def test_duplicate_categorical_levels_are_an_error(tmp_path):
    models = models_with(tmp_path, lambda r: r["features"]["categorical"].update(region=["north", "south", "north"]))
    with pytest.raises(SpecError, match=r"categorical feature 'region' needs distinct, non-empty levels"):
        load_spec("credit_risk", models)


def test_empty_categorical_levels_are_an_error(tmp_path):
    models = models_with(tmp_path, lambda r: r["features"]["categorical"].update(region=[]))
    with pytest.raises(SpecError, match=r"'region' needs distinct, non-empty levels"):
        load_spec("credit_risk", models)


def test_a_feature_cannot_be_both_numeric_and_categorical(tmp_path):
    models = models_with(tmp_path, lambda r: r["features"]["categorical"].update(age=["young", "old"]))
    with pytest.raises(SpecError, match=r"both numeric and categorical: \['age'\]"):
        load_spec("credit_risk", models)


# --- finding the file ---------------------------------------------------------------------------


def test_a_name_that_does_not_match_the_folder_is_an_error(tmp_path):
    models = models_with(tmp_path, lambda r: r.update(name="other"))
    with pytest.raises(SpecError, match=r"declares name 'other', expected 'credit_risk'"):
        load_spec("credit_risk", models)


def test_a_missing_spec_lists_the_known_models(tmp_path):
    models = models_with(tmp_path)
    models_with(tmp_path, lambda r: r.update(name="churn"), name="churn")
    (models / "notes").mkdir()  # a folder without spec.yaml is not a model
    with pytest.raises(SpecError) as err:
        load_spec("fraud", models)
    assert "no spec for model 'fraud'" in str(err.value)
    assert str(models / "fraud" / "spec.yaml") in str(err.value)
    assert "known models: ['churn', 'credit_risk']" in str(err.value)


def test_a_missing_spec_in_the_shipped_models_names_credit_risk():
    with pytest.raises(SpecError, match=r"known models: \[.*'credit_risk'.*\]"):
        load_spec("fraud", MODELS)


def test_a_missing_models_folder_lists_no_models(tmp_path):
    with pytest.raises(SpecError, match=r"known models: \[\]"):
        load_spec("credit_risk", tmp_path / "nowhere")


# --- unreadable files ---------------------------------------------------------------------------


def test_invalid_yaml_is_an_error_naming_the_file(tmp_path):
    models = models_with(tmp_path)
    path = models / "credit_risk" / "spec.yaml"
    path.write_text("name: credit_risk\nfeatures: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML") as err:
        load_spec("credit_risk", models)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("text", ["", "- a list\n- not a mapping\n", "just a string\n"])
def test_yaml_that_is_not_a_mapping_is_an_error(tmp_path, text):
    models = models_with(tmp_path)
    (models / "credit_risk" / "spec.yaml").write_text(text)
    with pytest.raises(SpecError, match="is invalid"):
        load_spec("credit_risk", models)


def test_spec_errors_are_loopline_value_errors():
    assert issubclass(SpecError, LooplineError) and issubclass(SpecError, ValueError)


def test_an_unreadable_spec_file_is_a_spec_error(tmp_path):
    from loopline.core.spec import load_spec_file

    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec_file(tmp_path / "absent.yaml")
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec_file(tmp_path / "latin1.yaml")


def test_an_unknown_key_error_lists_the_keys_allowed_there(tmp_path):
    import yaml

    from loopline.core.spec import SpecError, load_spec_file

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "models/credit_risk/spec.yaml").read_text())
    raw["dataset"]["rules"]["on_dupe"] = "reject"
    raw["monitoring"]["schedule"] = "every hour"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError) as err:
        load_spec_file(path)
    text = str(err.value)
    assert str(path) in text
    assert "dataset.rules.on_dupe: unknown key; allowed here: earliest_timestamp, future_tolerance_minutes" in text
    assert "monitoring.schedule" in text and "is not a cron expression" in text


def test_required_features_must_be_features_of_the_spec(tmp_path):
    shipped = load_spec("credit_risk", models_with(tmp_path / "a"))
    assert shipped.features.required and shipped.features.max_missing_share == 0.3

    def bad(raw: dict) -> None:
        raw["features"]["required"] = ["age", "shoe_size"]

    with pytest.raises(SpecError, match=r"features: .*required must list distinct features.*shoe_size"):
        load_spec("credit_risk", models_with(tmp_path / "b", bad))

    def share(raw: dict) -> None:
        raw["features"]["max_missing_share"] = 1.5

    with pytest.raises(SpecError, match="features.max_missing_share"):
        load_spec("credit_risk", models_with(tmp_path / "c", share))


def test_a_spec_without_required_features_takes_every_feature_as_optional(tmp_path):
    def plain(raw: dict) -> None:
        raw["features"].pop("required")
        raw["features"].pop("max_missing_share")

    spec = load_spec("credit_risk", models_with(tmp_path, plain))
    assert spec.features.required == [] and spec.features.max_missing_share is None


# --- reading specs once per process ------------------------------------------------------------------


def _copies(models_dir: Path, count: int) -> list[str]:
    raw = yaml.safe_load(SHIPPED.read_text())
    names = [f"m{i:02d}" for i in range(count)]
    for name in names:
        (models_dir / name).mkdir(parents=True)
        (models_dir / name / "spec.yaml").write_text(yaml.safe_dump({**raw, "name": name}))
    return names


def test_every_dag_file_parse_reads_each_spec_once_however_many_models(tmp_path):
    """Each station file asks for every model; more models than any small LRU bound must not mean re-reading."""
    from loopline.core import spec as spec_module
    from loopline.core.dag_factory import STATIONS, discover

    names = _copies(tmp_path, 40)
    for _ in range(len(STATIONS) + 1):  # the station files plus loopline_model_folders.py, in one process
        good, broken = discover(tmp_path)
        assert [s.name for s in good] == names and broken == {}
    info = spec_module._load_spec_cached.cache_info()
    assert info.misses == len(names) and info.hits == len(names) * len(STATIONS)


def test_an_edited_spec_is_read_again(tmp_path):
    (name,) = _copies(tmp_path, 1)
    assert load_spec(name, tmp_path).description != "edited"
    path = spec_path(name, tmp_path)
    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**raw, "description": "edited"}))  # another size, so a new cache key
    assert load_spec(name, tmp_path).description == "edited"
    path.write_text(yaml.safe_dump({**raw, "name": "other"}))
    with pytest.raises(SpecError, match="declares name 'other'"):
        load_spec(name, tmp_path)


# --- rollout: the shadow phase --------------------------------------------------------------------


def test_the_shadow_phase_runs_as_long_as_a_step_unless_set():
    from loopline.core.spec import RolloutSpec

    assert RolloutSpec().shadow_bake_seconds == RolloutSpec().bake_seconds == 600  # on by default
    assert RolloutSpec(bake_seconds=30).shadow_bake_seconds == 30
    assert RolloutSpec(shadow_seconds=0).shadow_bake_seconds == 0  # no shadow phase
    assert RolloutSpec(shadow_seconds=120).shadow_bake_seconds == 120
    assert load_spec("credit_risk", MODELS).rollout.shadow_bake_seconds == 600


def test_a_shadow_phase_longer_than_a_step_may_last_is_an_error(tmp_path):
    def edit(raw):
        raw["rollout"].update(shadow_seconds=7200, max_step_seconds=3600)

    with pytest.raises(SpecError, match=r"rollout: shadow_seconds \(7200\) must be <= max_step_seconds \(3600\)"):
        load_spec("credit_risk", models_with(tmp_path, edit))


# --- runtime image ------------------------------------------------------------------------------


def test_without_a_runtime_section_the_model_runs_in_process():
    assert load_spec("credit_risk", MODELS).runtime is None


@pytest.mark.parametrize(
    "image",
    ["loopline:local", "localhost/loopline:local", "registry.example:5000/team/loopline:1.4", "loopline",
     f"localhost/loopline@sha256:{'a' * 64}", "my-org/loop_line__x:v1.2-rc"],
)  # fmt: skip
def test_a_runtime_image_reference_loads(tmp_path, image):
    spec = load_spec("credit_risk", models_with(tmp_path, lambda r: r.update(runtime={"image": image})))
    assert spec.runtime is not None and spec.runtime.image == image


@pytest.mark.parametrize(
    "runtime,message",
    [
        ({"image": "Loopline Local"}, "runtime.image: 'Loopline Local' is not an image reference"),
        ({"image": "loopline:"}, "runtime.image: 'loopline:' is not an image reference"),
        ({"image": "loopline:local; rm -rf /"}, "is not an image reference"),
        ({"image": ""}, "runtime.image: '' is not an image reference"),
        ({}, "runtime.image: Field required"),
        ({"image": "loopline:local", "pull": True}, "runtime.pull: unknown key; allowed here: image"),
        ("loopline:local", "runtime: Input should be a valid dictionary"),
    ],
)
def test_a_bad_runtime_section_is_named_with_what_is_allowed(tmp_path, runtime, message):
    models = models_with(tmp_path, lambda r: r.update(runtime=runtime))
    with pytest.raises(SpecError) as err:
        load_spec("credit_risk", models)
    assert message in str(err.value)
    assert str(models / "credit_risk" / "spec.yaml") in str(err.value)


# --- dataset.keys: join keys of stored features, carried but never a feature ---------------------


def test_without_keys_a_dataset_has_none_and_its_columns_are_unchanged():
    spec = load_spec("credit_risk", MODELS)
    assert spec.dataset.keys == []
    assert spec.input_columns == ["applicant_id", "applied_at", *spec.features.names, "defaulted"]


def test_keys_come_after_the_time_in_a_batchs_columns(tmp_path):
    models = models_with(tmp_path, lambda raw: raw["dataset"].update(keys=["branch_id", "broker_id"]))
    spec = load_spec("credit_risk", models)
    assert spec.dataset.keys == ["branch_id", "broker_id"]
    assert spec.input_columns == [
        "applicant_id",
        "applied_at",
        "branch_id",
        "broker_id",
        *spec.features.names,
        "defaulted",
    ]


def test_a_key_may_be_the_unique_key(tmp_path):
    def edit(raw):
        raw["dataset"].update(keys=["branch_id"])
        raw["dataset"]["rules"]["unique_key"] = ["applicant_id", "branch_id"]

    assert load_spec("credit_risk", models_with(tmp_path, edit)).dataset.unique_key == ["applicant_id", "branch_id"]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (["branch_id", "branch_id"], "dataset: Value error, keys: listed twice: ['branch_id']"),
        (["Branch ID"], "keys: ['Branch ID'] are not column names"),
        (["applicant_id"], "keys: applicant_id (the entity_id) already has a role in the dataset"),
        (["applied_at"], "keys: applied_at (the timestamp) already has a role"),
        (["defaulted"], "keys: defaulted (the target) already has a role"),
        (["age"], "dataset.keys: ['age'] are also features; a key is carried beside the features"),
        ("branch_id", "dataset.keys: Input should be a valid list"),
    ],
)
def test_bad_keys_are_refused_naming_the_field(tmp_path, keys, message):
    models = models_with(tmp_path, lambda raw: raw["dataset"].update(keys=keys))
    with pytest.raises(SpecError) as err:
        load_spec("credit_risk", models)
    text = str(err.value).replace("dataset: Value error, ", "dataset: ")
    assert (
        "credit_risk/spec.yaml is invalid" in text and message.replace("dataset: Value error, ", "dataset: ") in text
    ), text
