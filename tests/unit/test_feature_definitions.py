"""Feature definitions (feature_repo/*.yaml) and models' use of them, on repos the tests write themselves."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from loopline.core.dag_factory import discover
from loopline.core.spec import SpecError, load_spec, load_spec_file
from loopline.features.definitions import (
    FEAST_TYPES,
    check_model_uses,
    load_definitions,
    parse_duration,
    views_used_by,
)

CUSTOMERS = {
    "entities": [
        {"name": "customer", "join_key": "customer_id", "value_type": "string", "description": "A shop customer."},
    ],
    "feature_views": [
        {
            "name": "customer_activity",
            "owner": "growth",
            "entities": ["customer"],
            "ttl": "2d",
            "schedule": "@hourly",
            "source": {"dataset": "orders", "event_time": "ordered_at"},
            "features": [
                {"name": "spend_1h", "agg": "sum", "of": "amount", "window": "1h"},
                {"name": "orders_7d", "agg": "count", "window": "7d"},
                {"name": "last_channel", "agg": "last", "of": "channel", "dtype": "string"},
            ],
        }
    ],
}

STORES = {
    "entities": [{"name": "store", "join_key": "store_id", "value_type": "int64"}],
    "feature_views": [
        {
            "name": "store_load",
            "owner": "ops",
            "entities": ["store"],
            "ttl": "1h",
            "schedule": "*/15 * * * *",
            "online": False,
            "source": {"sql": {"url_env": "SHOP_DB", "table": "orders"}, "event_time": "ordered_at"},
            "compute": "store_load.py:compute",
            "features": [{"name": "queue_length", "dtype": "int64"}, {"name": "busy", "dtype": "bool"}],
        }
    ],
}


def write_repo(tmp_path: Path, files: dict[str, dict | str]) -> Path:
    repo = tmp_path / "feature_repo"
    repo.mkdir(exist_ok=True)
    for name, content in files.items():
        (repo / name).write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return repo


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return write_repo(
        tmp_path,
        {
            "customers.yaml": CUSTOMERS,
            "stores.yaml": STORES,
            "store_load.py": "def compute(events):\n    return events\n",
        },
    )


def spec_dict(name: str, entity_id: str, stored: list[str], numeric: tuple[str, ...] = ("basket_size",)) -> dict:
    return {
        "name": name,
        "task": "regression",
        "dataset": {
            "name": name,
            "entity_id": entity_id,
            "timestamp": "at",
            "target": "y",
            "expectation_suite": f"{name}_batch",
        },
        "features": {
            "version": "1",
            "numeric": {col: {"min": 0, "max": 10} for col in numeric},
            "categorical": {"weekday": ["mon", "tue"]},
            "stored": stored,
        },
        "training": {
            "valid_weeks": 1,
            "holdout_weeks": 1,
            "min_train_rows": 10,
            "seed": 1,
            "early_stopping_rounds": 5,
            "params": {"objective": "regression"},
        },
        "quality_gate": {"max_rmse": 10},
    }


def write_model(models: Path, raw: dict) -> Path:
    folder = models / raw["name"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(raw))
    return folder / "spec.yaml"


# -- good definitions --------------------------------------------------------------------------


def test_good_files_load_with_their_feast_mapping(repo):
    defs = load_definitions(repo)
    assert defs.errors == []
    assert sorted(defs.views) == ["customer_activity", "store_load"]
    assert sorted(defs.entities) == ["customer", "store"]
    view = defs.views["customer_activity"]
    assert view.ttl_delta.total_seconds() == 2 * 86400
    assert [f.feast_dtype for f in view.features] == ["Float64", "Int64", "String"]
    assert view.features[0].window_delta.total_seconds() == 3600
    assert defs.join_keys("customer_activity") == ["customer_id"]
    assert defs.view_file("store_load") == "feature_repo/stores.yaml"
    sql = defs.views["store_load"].source.sql.as_source_spec()
    assert (sql.kind, sql.table, sql.url_env) == ("sql", "orders", "SHOP_DB")
    assert set(FEAST_TYPES.values()) == {"Int64", "Float64", "String", "Bool", "UnixTimestamp"}


def test_an_empty_or_missing_repo_has_no_definitions(tmp_path):
    assert load_definitions(tmp_path / "nowhere").views == {}
    assert load_definitions(write_repo(tmp_path, {"empty.yaml": ""})).errors == []


@pytest.mark.parametrize("text", ["30s", "15m", "1h", "7d", "2w"])
def test_durations(text):
    assert parse_duration(text).total_seconds() > 0


# -- each class of broken field ----------------------------------------------------------------


def broken(edit) -> dict:
    raw = copy.deepcopy(CUSTOMERS)
    edit(raw)
    return raw


def _view(raw: dict) -> dict:
    return raw["feature_views"][0]


@pytest.mark.parametrize(
    ("edit", "field", "words"),
    [
        (lambda r: _view(r).update(colour="red"), "feature_views[0].colour", "unknown key"),
        (lambda r: r.update(views=[]), "views", "unknown key"),
        (lambda r: _view(r).update(ttl="2 days"), "feature_views[0].ttl", "not a duration"),
        (lambda r: _view(r).update(ttl=0), "feature_views[0].ttl", ""),
        (lambda r: _view(r).update(schedule="hourly"), "feature_views[0].schedule", "cron"),
        (lambda r: _view(r).pop("owner"), "feature_views[0].owner", "Field required"),
        (lambda r: _view(r).update(name="Customer-Activity"), "feature_views[0].name", "pattern"),
        (lambda r: _view(r).update(entities=[]), "feature_views[0].entities", ""),
        (lambda r: _view(r)["features"][0].update(window="an hour"), "feature_views[0].features[0].window", ""),
        (lambda r: _view(r)["features"][0].update(agg="median"), "feature_views[0].features[0].agg", ""),
        (lambda r: _view(r)["features"][0].pop("of"), "feature_views[0].features[0]", "needs of"),
        (lambda r: _view(r)["features"][0].pop("window"), "feature_views[0].features[0]", "needs a window"),
        (lambda r: _view(r)["features"][0].update(dtype="string"), "feature_views[0].features[0]", "gives float64"),
        (lambda r: _view(r)["features"][2].pop("dtype"), "feature_views[0].features[2]", "needs a dtype"),
        (lambda r: _view(r)["features"][1].update(agg=None), "feature_views[0].features[1]", "add agg"),
        (
            lambda r: _view(r)["features"].__setitem__(1, {"name": "n"}),
            "feature_views[0]",
            "features[1] (n): needs agg",
        ),
        (lambda r: _view(r)["features"].append({"name": "spend_1h", "agg": "count", "window": "1d"}), "", "twice"),
        (lambda r: _view(r)["source"].update(sql={"url_env": "X", "table": "t"}), "feature_views[0].source", "one of"),
        (lambda r: _view(r)["source"].update(dataset=None), "feature_views[0].source", "exactly one"),
        (
            lambda r: _view(r)["source"].update(dataset=None, sql={"table": "t"}),
            "feature_views[0].source.sql",
            "url_env",
        ),
        (lambda r: _view(r)["source"].pop("event_time"), "feature_views[0].source.event_time", "required"),
        (lambda r: r["entities"][0].update(value_type="float"), "entities[0].value_type", ""),
        (lambda r: r["entities"][0].update(join_keys=["a"]), "entities[0].join_keys", "unknown key"),
        (lambda r: _view(r).update(compute="../evil.py:run"), "feature_views[0].compute", "file.py:function"),
        (lambda r: r["entities"].append(dict(r["entities"][0])), "entities[1].name", "defined twice in this file"),
    ],
)
def test_a_broken_field_is_refused_naming_the_file_and_field(tmp_path, edit, field, words):
    defs = load_definitions(write_repo(tmp_path, {"customers.yaml": broken(edit)}))
    assert list(defs.broken) == ["feature_repo/customers.yaml"]
    why = defs.broken["feature_repo/customers.yaml"]
    assert why.startswith("feature_repo/customers.yaml: "), why
    assert f": {field}" in why, why
    assert words in why, why
    assert defs.views == {}


def test_not_yaml_or_not_a_mapping_is_refused(tmp_path):
    defs = load_definitions(write_repo(tmp_path, {"a.yaml": "entities: [unclosed", "b.yaml": "- a list\n"}))
    assert "not valid YAML" in defs.broken["feature_repo/a.yaml"]
    assert "must be a mapping" in defs.broken["feature_repo/b.yaml"]


def test_compute_must_name_a_function_of_a_file_in_the_repo(tmp_path):
    repo = write_repo(tmp_path, {"stores.yaml": STORES})
    assert "no file store_load.py" in load_definitions(repo).broken["feature_repo/stores.yaml"]
    (repo / "store_load.py").write_text("def other(events):\n    return events\n")
    why = load_definitions(repo).broken["feature_repo/stores.yaml"]
    assert "feature_views[0].compute: store_load.py defines no function compute" in why


def test_a_broken_file_breaks_nothing_else(repo):
    (repo / "zz_broken.yaml").write_text(yaml.safe_dump(broken(lambda r: _view(r).update(ttl="soon"))))
    defs = load_definitions(repo)
    assert list(defs.broken) == ["feature_repo/zz_broken.yaml"]
    assert sorted(defs.views) == ["customer_activity", "store_load"]


def test_a_name_defined_in_two_files_is_refused_in_both_naming_both(repo):
    other = copy.deepcopy(CUSTOMERS)
    other["entities"] = []
    (repo / "growth2.yaml").write_text(yaml.safe_dump(other))
    defs = load_definitions(repo)
    assert "customer_activity" not in defs.views and "store_load" in defs.views
    assert (
        "feature_repo/customers.yaml: feature_views[0].name: view 'customer_activity' is also defined in"
        " feature_repo/growth2.yaml" in defs.refused
    )
    assert (
        "feature_repo/growth2.yaml: feature_views[0].name: view 'customer_activity' is also defined in"
        " feature_repo/customers.yaml" in defs.refused
    )


def test_an_entity_defined_in_two_files_is_refused_and_so_are_views_on_it(repo):
    (repo / "more.yaml").write_text(yaml.safe_dump({"entities": CUSTOMERS["entities"]}))
    defs = load_definitions(repo)
    assert "customer" not in defs.entities
    assert any("entity 'customer' is also defined in feature_repo/more.yaml" in line for line in defs.refused)
    assert "customer_activity" not in defs.views and "store_load" in defs.views
    assert (
        "feature_repo/customers.yaml: feature_views[0].entities[0]: entity 'customer' is refused: defined in"
        " feature_repo/customers.yaml, feature_repo/more.yaml" in defs.refused
    )


def test_two_entities_of_a_view_may_not_share_a_join_key(tmp_path):
    raw = broken(lambda r: r["entities"].append({"name": "buyer", "join_key": "customer_id", "value_type": "string"}))
    _view(raw)["entities"].append("buyer")
    defs = load_definitions(write_repo(tmp_path, {"customers.yaml": raw}))
    assert defs.views == {} and "two entities share a join key" in defs.refused[0]


def test_a_view_on_an_unknown_entity_is_refused(tmp_path):
    raw = broken(lambda r: _view(r).update(entities=["customer", "courier"]))
    defs = load_definitions(write_repo(tmp_path, {"customers.yaml": raw}))
    assert defs.views == {} and "customer" in defs.entities
    assert defs.refused == [
        "feature_repo/customers.yaml: feature_views[0].entities[1]: unknown entity 'courier'; known: ['customer']"
    ]


def test_an_entity_may_come_from_another_file(tmp_path):
    entities = {"entities": CUSTOMERS["entities"]}
    views = {"feature_views": CUSTOMERS["feature_views"]}
    defs = load_definitions(write_repo(tmp_path, {"entities.yaml": entities, "views.yaml": views}))
    assert defs.errors == [] and list(defs.views) == ["customer_activity"]


def test_a_feature_named_like_a_join_key_is_refused(tmp_path):
    raw = broken(lambda r: _view(r)["features"].append({"name": "customer_id", "agg": "count", "window": "1h"}))
    defs = load_definitions(write_repo(tmp_path, {"customers.yaml": raw}))
    assert "feature_views[0].features[3].name: 'customer_id' is a join key" in defs.refused[0]


# -- a model's stored features -----------------------------------------------------------------


def test_existing_specs_without_stored_features_are_unchanged():
    spec = load_spec_file(Path(__file__).parents[2] / "models" / "credit_risk" / "spec.yaml")
    assert spec.features.stored == [] and spec.features.stored_columns == []


@pytest.mark.parametrize(
    ("stored", "words"),
    [
        (["customer_activity.spend_1h"], "is not a feature reference view:feature"),
        (["customer_activity:"], "is not a feature reference"),
        (["customer_activity:spend_1h", "customer_activity:spend_1h"], "named twice"),
        ("customer_activity:spend_1h", "valid list"),
    ],
)
def test_the_spec_loader_checks_the_references_form(tmp_path, stored, words):
    path = write_model(tmp_path / "models", spec_dict("basket", "customer_id", stored))
    with pytest.raises(SpecError) as err:
        load_spec_file(path)
    assert "features.stored" in str(err.value) and words in str(err.value)


def test_a_stored_column_may_not_be_a_request_time_feature(tmp_path):
    raw = spec_dict("basket", "customer_id", ["customer_activity:spend_1h"], numeric=("customer_activity__spend_1h",))
    with pytest.raises(SpecError, match="also request-time features"):
        load_spec_file(write_model(tmp_path / "models", raw))


def test_two_models_share_a_view(repo, tmp_path):
    models = tmp_path / "models"
    write_model(models, spec_dict("basket", "customer_id", ["customer_activity:spend_1h"]))
    write_model(
        models, spec_dict("churn", "customer_id", ["customer_activity:orders_7d", "customer_activity:spend_1h"])
    )
    load_spec.cache_clear()
    specs, broken_specs = discover(models)
    assert broken_specs == {}
    defs = load_definitions(repo)
    assert [check_model_uses(defs, spec) for spec in specs] == [[], []]
    assert views_used_by(specs) == {"customer_activity": ["basket", "churn"]}
    assert specs[1].features.stored_columns == ["customer_activity__orders_7d", "customer_activity__spend_1h"]


def test_a_join_key_carried_as_a_request_time_feature_is_enough(repo, tmp_path):
    raw = spec_dict("basket", "order_id", ["store_load:busy"], numeric=("store_id",))
    spec = load_spec_file(write_model(tmp_path / "models", raw))
    assert check_model_uses(load_definitions(repo), spec) == []


def test_a_join_key_carried_as_a_dataset_key_is_enough(repo, tmp_path):
    """dataset.keys: columns in the data and the requests that are no model feature (card_id, store_id)."""
    raw = spec_dict("basket", "order_id", ["store_load:busy", "customer_activity:spend_1h"])
    raw["dataset"]["keys"] = ["store_id", "customer_id"]
    spec = load_spec_file(write_model(tmp_path / "models", raw))
    assert check_model_uses(load_definitions(repo), spec) == []
    assert spec.input_columns[:4] == ["order_id", "at", "store_id", "customer_id"]
    assert "store_id" not in spec.features.names


def test_a_stored_feature_that_is_no_number_is_refused(repo, tmp_path):
    raw = spec_dict("basket", "customer_id", ["customer_activity:last_channel", "customer_activity:orders_7d"])
    spec = load_spec_file(write_model(tmp_path / "models", raw))
    [problem] = check_model_uses(load_definitions(repo), spec)
    assert problem.startswith("models/basket/spec.yaml: features.stored[0]: customer_activity:last_channel is a string")


def test_a_missing_key_is_named_with_the_fix(repo, tmp_path):
    raw = spec_dict("basket", "order_id", ["store_load:busy"])
    raw["dataset"]["keys"] = ["customer_id"]
    spec = load_spec_file(write_model(tmp_path / "models", raw))
    [problem] = check_model_uses(load_definitions(repo), spec)
    assert problem.startswith("models/basket/spec.yaml: features.stored[0]: view store_load is keyed on ['store_id']")
    assert "dataset.keys ['customer_id']" in problem and "add the column to dataset.keys" in problem


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        (
            ["customer_activity:spend_1h", "customer_activty:spend_1h"],
            "models/basket/spec.yaml: features.stored[1]: unknown feature view 'customer_activty'; known:"
            " ['customer_activity', 'store_load']",
        ),
        (
            ["customer_activity:spend_2h"],
            "models/basket/spec.yaml: features.stored[0]: view customer_activity has no feature 'spend_2h'",
        ),
        (
            ["store_load:busy"],
            "models/basket/spec.yaml: features.stored[0]: view store_load is keyed on ['store_id'], which the"
            " model's data does not carry",
        ),
    ],
)
def test_a_model_naming_what_the_store_cannot_give_it_is_refused(repo, tmp_path, stored, message):
    spec = load_spec_file(write_model(tmp_path / "models", spec_dict("basket", "customer_id", stored)))
    problems = check_model_uses(load_definitions(repo), spec)
    assert len(problems) == 1 and problems[0].startswith(message), problems


def test_a_model_naming_a_refused_view_is_told_why(repo, tmp_path):
    (repo / "stores.yaml").write_text(yaml.safe_dump(broken(lambda r: None) | {"entities": []}))
    spec = load_spec_file(write_model(tmp_path / "models", spec_dict("basket", "customer_id", ["store_load:busy"])))
    defs = load_definitions(repo)
    assert "customer_activity" in defs.refused_views
    [problem] = check_model_uses(defs, spec)
    assert "unknown feature view 'store_load'" in problem
    spec = load_spec_file(
        write_model(tmp_path / "models", spec_dict("basket", "customer_id", ["customer_activity:spend_1h"]))
    )
    [problem] = check_model_uses(defs, spec)
    assert "feature view 'customer_activity' is refused: feature_repo/" in problem


# -- loopline features ---------------------------------------------------------------------------


def test_the_cli_lists_views_their_users_and_refused_files(repo, tmp_path, monkeypatch):
    from loopline.core.settings import get_settings
    from loopline.ops.cli import app

    models = tmp_path / "models"
    write_model(models, spec_dict("basket", "customer_id", ["customer_activity:spend_1h"]))
    write_model(models, spec_dict("churn", "customer_id", ["customer_activity:orders_7d"]))
    monkeypatch.setenv("LOOPLINE_MODELS_DIR", str(models))
    get_settings.cache_clear()
    load_spec.cache_clear()
    try:
        runner = CliRunner()
        result = runner.invoke(app, ["features", "--repo", str(repo)])
        assert result.exit_code == 0, result.output
        assert "customer_activity  owner growth  entities customer (customer_id)  ttl 2d  schedule @hourly" in (
            result.output
        )
        assert "used by: basket, churn" in result.output
        assert "store_load  owner ops" in result.output and "offline only" in result.output

        (repo / "zz.yaml").write_text("feature_views: {}\n")
        result = runner.invoke(app, ["features", "--repo", str(repo)])
        assert result.exit_code == 1
        assert "REFUSED feature_repo/zz.yaml: feature_views: " in result.output
        assert "used by: basket, churn" in result.output  # the broken file hides nothing else
    finally:
        get_settings.cache_clear()
        load_spec.cache_clear()


def test_hidden_files_and_feasts_own_configuration_are_not_definitions(repo):
    (repo / ".backup").mkdir()
    (repo / ".backup" / "old.yaml").write_text("nonsense: [")
    (repo / "feature_store.yaml").write_text("project: loopline\nprovider: local\n")
    (repo / "team").mkdir()
    (repo / "team" / "extra.yaml").write_text(
        yaml.safe_dump({"entities": [{"name": "x", "join_key": "x_id", "value_type": "int64"}]})
    )
    defs = load_definitions(repo)
    assert defs.errors == [] and "x" in defs.entities and defs.origin["entity:x"] == "feature_repo/team/extra.yaml"
