"""DAG integrity: every DAG imports cleanly and cheaply and follows the project's policy."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from loopline.core.dag_defaults import PERMANENT_ERRORS

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(DAGS.glob("*.py"))
# alibi_detect is not in this environment at all (.venv-drift; tests/unit/test_drift_worker.py guards that).
HEAVY = ("pandas", "lightgbm", "mlflow", "great_expectations", "bentoml", "dvc", "feast", "dask", "sklearn", "pyarrow")
MODELS = ("credit_risk", "delivery_time")  # the demo models shipped in models/
STATIONS = ("ingest", "train", "batch_score", "rollout", "rollout_control", "drift")
EXPECTED = {f"{model}_{station}" for model in MODELS for station in STATIONS}
# They write shared state: one run at a time.
STATEFUL = {f"{model}_{station}" for model in MODELS for station in ("ingest", "train", "rollout", "rollout_control")}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_every_dag_imports_without_error(dagbag):
    from loopline.core.settings import get_settings
    from loopline.features.definitions import load_definitions

    assert dagbag.import_errors == {}
    views = load_definitions(get_settings().feature_repo).views  # one feature pipeline per shipped view
    assert set(dagbag.dag_ids) == EXPECTED | {f"feature_{view}" for view in views}


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_no_heavy_library_at_top_level(path):
    """Parsing happens every few seconds in the dag-processor: heavy imports belong inside tasks."""
    code = (
        "import importlib.util, json, sys\n"
        "import airflow.sdk\n"
        f"spec = importlib.util.spec_from_file_location('dagfile', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        f"print(json.dumps({{'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], f"{path.name} imports {result['heavy']} at parse time"
    # How long a parse takes is measured by `make bench-dags` (no timing threshold in a test).


def test_policy_schedule_tags_retries_docs(dagbag):
    for dag in dagbag.dags.values():
        assert "loopline" in dag.tags, dag.dag_id
        assert dag.catchup is False, dag.dag_id
        assert dag.doc_md and len(dag.doc_md) > 100, dag.dag_id
        if dag.dag_id in STATEFUL:
            assert dag.max_active_runs == 1, dag.dag_id
        for task in dag.tasks:
            assert task.retries >= 2, f"{dag.dag_id}.{task.task_id}"
            assert task.on_failure_callback, f"{dag.dag_id}.{task.task_id} has no failure notifier"
            assert task.retry_policy is PERMANENT_ERRORS, f"{dag.dag_id}.{task.task_id} would retry permanent errors"


def test_permanent_errors_are_not_retried_transient_ones_are():
    """The policy every task has: a LooplineError fails at once; a RetryableError or anything else retries."""
    from airflow.sdk.definitions.retry_policy import RetryAction

    from loopline.core.serving_state import RouteConflict
    from loopline.core.spec import SpecError
    from loopline.ingestion.data_registry import RegistryError
    from loopline.ingestion.validation import SuiteError

    def action(err: BaseException) -> RetryAction:
        return PERMANENT_ERRORS.evaluate(err, try_number=1, max_tries=3).action

    for permanent in (SpecError("bad spec"), SuiteError("bad suite"), RegistryError("no version v0009")):
        assert action(permanent) is RetryAction.FAIL, permanent
    for transient in (RouteConflict("route changed meanwhile"), ConnectionError("reset"), OSError("disk")):
        assert action(transient) is RetryAction.DEFAULT, transient


def test_no_cycles(dagbag):
    from airflow.utils.dag_cycle_tester import check_cycle

    for dag in dagbag.dags.values():
        check_cycle(dag)


def test_expected_schedules(dagbag):
    from airflow.sdk import AssetOrTimeSchedule

    ingest, train = dagbag.dags["credit_risk_ingest"], dagbag.dags["credit_risk_train"]
    assert ingest.timetable.delta == timedelta(minutes=10)  # frequent polls; the sensor waits for files
    assert isinstance(train.timetable, AssetOrTimeSchedule)
    assert train.timetable.timetable.expression == "0 3 * * 1"  # weekly, Monday 03:00 UTC
    produced = {o.uri for t in ingest.tasks for o in t.outlets}
    assert produced == {"dvc://loopline/credit_risk"}
    assert train.timetable.asset_condition.uri == "dvc://loopline/credit_risk"  # new data triggers training


def test_each_model_has_its_own_assets_schedule_and_tags(dagbag):
    """Two models never share an Asset, so new data for one never trains the other."""
    seen = {}
    for model in MODELS:
        ingest, train = dagbag.dags[f"{model}_ingest"], dagbag.dags[f"{model}_train"]
        produced = {o.uri for t in ingest.tasks for o in t.outlets}
        assert produced == {f"dvc://loopline/{model}"} == {train.timetable.asset_condition.uri}
        assert all(model in dagbag.dags[f"{model}_{s}"].tags for s in STATIONS)
        seen[model] = train.timetable.timetable.expression
    assert seen == {"credit_risk": "0 3 * * 1", "delivery_time": "30 3 * * 1"}  # each from its own spec


def test_ingest_sensor_frees_its_worker_slot(dagbag):
    sensor = dagbag.dags["credit_risk_ingest"].get_task("wait_for_batches")
    assert sensor.mode == "reschedule"
    assert sensor.soft_fail is True


def test_train_params_are_typed_and_explained(dagbag):
    """The form draws typed fields with descriptions; start_run's check explains a bad value in words."""
    from loopline.core.forms import FormError
    from loopline.training.train_form import check_train

    params = dagbag.dags["credit_risk_train"].params
    assert set(params.keys()) == {"data_version", "hyperparameters", "reason", "drift_report"}
    assert all(params.get_param(k).description for k in params.keys())
    params.validate()  # the defaults are valid: a scheduled run needs nothing
    assert params["reason"] is None  # no made-up reason; a person's run must give one
    values = params.dump()
    for key, bad in [
        ("data_version", "last week"),
        ("hyperparameters", {"num_leaves": "many"}),
        ("hyperparameters", {"learning_rate": 5}),
        ("hyperparameters", {"unknown": 1}),
        ("reason", ""),
    ]:
        with pytest.raises(FormError):
            check_train({**values, key: bad}, "manual")
    check_train({**values, "data_version": "v0003", "hyperparameters": {"learning_rate": 0.1}}, "scheduled")


def test_batch_scoring_params(dagbag):
    from airflow.sdk.definitions.param import ParamValidationError

    params = copy.deepcopy(dagbag.dags["credit_risk_batch_score"].params)
    params.update({"input_path": "/data/applications.csv"})
    params.validate()
    for key, bad in [("model", "best"), ("model", "0"), ("input_path", "")]:
        trial = copy.deepcopy(params)
        with pytest.raises(ParamValidationError):
            trial[key] = bad
            trial.validate()


def test_rollout_and_drift_params(dagbag):
    from airflow.sdk.definitions.param import ParamValidationError

    from loopline.core.forms import FormError
    from loopline.rollout.forms import check_control, check_rollout

    rollout = dagbag.dags["credit_risk_rollout"]
    assert [t.task_id for t in rollout.tasks if t.task_id.startswith("canary_")] == [
        "canary_5pct",
        "canary_20pct",
        "canary_50pct",
    ]  # steps from the spec; the last one (100%) is the promotion
    shadow = rollout.get_task("shadow")  # the shadow phase comes first, then the canary steps
    assert shadow.downstream_task_ids >= {"canary_5pct", "put_champion_back"}
    assert rollout.get_task("choose_mode").downstream_task_ids == {"shadow", "pre_switch_check"}
    rollout.params.validate()  # an asset-triggered run uses the defaults
    with pytest.raises(ParamValidationError):  # a choice outside the list: refused by the form itself
        trial = copy.deepcopy(rollout.params)
        trial["mode"] = "shadow"
        trial.validate()
    with pytest.raises(FormError, match="enter 'challenger' or a registered version number"):
        check_rollout({**rollout.params.dump(), "version": "latest"})

    control = dagbag.dags["credit_risk_rollout_control"].params
    from airflow.sdk.definitions._internal.types import is_arg_set

    assert not is_arg_set(control.get_param("action").value) and not is_arg_set(control.get_param("reason").value)
    assert all(control.get_param(k).description for k in control.keys())
    with pytest.raises(ParamValidationError):  # nothing preselected: the person picks an action
        copy.deepcopy(control).validate()
    chosen = {**{k: control.get_param(k).value for k in ("version", "weight")}, "action": "pin", "reason": "A/B"}
    with pytest.raises(FormError, match="Canary share .* out of range"):
        check_control({**chosen, "weight": 1.5})
    assert check_control({**chosen, "weight": 0.1})["version"] == "challenger"
    drift = copy.deepcopy(dagbag.dags["credit_risk_drift"].params)
    drift.validate()  # no window_start: the spec's window


def _bag_for(models_dir, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    from loopline.core.settings import get_settings

    monkeypatch.setenv("LOOPLINE_MODELS_DIR", str(models_dir))
    get_settings.cache_clear()
    try:
        return DagBag(dag_folder=str(DAGS))
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def _copy_model(models_dir, name, edit=None):
    import yaml

    src = Path(__file__).resolve().parents[2] / "models" / "credit_risk" / "spec.yaml"
    raw = yaml.safe_load(src.read_text())
    raw["name"], raw["dataset"]["name"] = name, name
    if edit:
        edit(raw)
    (models_dir / name).mkdir(parents=True)
    (models_dir / name / "spec.yaml").write_text(yaml.safe_dump(raw))


def test_every_model_folder_gets_its_own_line(tmp_path, monkeypatch):
    from loopline.core.dag_factory import STATIONS

    for name in ("credit_risk", "churn"):
        _copy_model(tmp_path, name)
    bag = _bag_for(tmp_path, monkeypatch)
    assert not bag.import_errors
    for model in ("credit_risk", "churn"):
        for station in STATIONS:
            dag = bag.dags[f"{model}_{station}"]
            assert model in dag.tags
    assets = {o.uri for t in bag.dags["churn_ingest"].tasks for o in t.outlets}
    assert assets == {"dvc://loopline/churn"}  # its own Asset, never the other model's


def test_a_broken_model_folder_names_itself_and_hides_no_other_dag(tmp_path, monkeypatch):
    _copy_model(tmp_path, "credit_risk")
    _copy_model(tmp_path, "broken", lambda raw: raw["training"].update(valid_weeks=0))
    bag = _bag_for(tmp_path, monkeypatch)
    [(path, error)] = bag.import_errors.items()
    assert path.endswith("loopline_model_folders.py")
    assert "models/broken" in error and "training.valid_weeks" in error and "greater than or equal to 1" in error
    assert "credit_risk_train" in bag.dags and not any(d.startswith("broken_") for d in bag.dags)


def test_a_model_with_a_runtime_image_trains_and_scores_in_it_and_the_rest_is_unchanged(tmp_path, monkeypatch):
    from airflow.providers.docker.operators.docker import DockerOperator

    _copy_model(tmp_path, "credit_risk")
    _copy_model(tmp_path, "boxed", lambda raw: raw.update(runtime={"image": "loopline:local"}))
    bag = _bag_for(tmp_path, monkeypatch)
    assert not bag.import_errors
    plain, boxed = bag.dags["credit_risk_train"], bag.dags["boxed_train"]
    assert not isinstance(plain.get_task("train_and_evaluate"), DockerOperator)  # the embedded default: in-process
    step = boxed.get_task("train_and_evaluate")
    assert isinstance(step, DockerOperator) and step.image == "loopline:local"
    assert step.network_mode == "host" and step.retry_policy is PERMANENT_ERRORS and step.retries >= 2
    # the same graph around it: the downstream tasks read its XCom as they read the in-process task's
    for dag in (plain, boxed):
        task = dag.get_task("train_and_evaluate")
        assert task.upstream_task_ids == {"start_run", "validate_data"}, dag.dag_id
        assert task.downstream_task_ids == {"register_model"}, dag.dag_id
    assert {t.task_id for t in plain.tasks} == {t.task_id for t in boxed.tasks}
    score = bag.dags["boxed_batch_score"].get_task("score")
    assert isinstance(score, DockerOperator) and score.image == "loopline:local"
    assert not isinstance(bag.dags["credit_risk_batch_score"].get_task("score"), DockerOperator)


def test_a_broken_folder_is_named_by_airflow_dags_test_and_list_import_errors(tmp_path):
    """The embedded default without a dag-processor: `airflow dags test` of the broken model's DAG says
    which file and field, and records the error, so `airflow dags list-import-errors` shows it; a test
    of a sound model's DAG records it too, instead of clearing it (real CLIs, an isolated AIRFLOW_HOME)."""
    from tests.e2e.isolated_line import BIN, PROJECT, IsolatedLine

    line = IsolatedLine(tmp_path)
    _copy_model(line.models, "credit_risk")
    _copy_model(line.models, "churn", lambda raw: raw["training"].update(valid_weeks=0))
    line.run(str(BIN / "airflow"), "db", "migrate")

    def airflow(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "airflow"), *args], env=line.env, cwd=PROJECT, capture_output=True, text=True, timeout=600
        )

    def import_errors() -> str:
        done = airflow("dags", "list-import-errors", "-o", "json")  # exit code 1 when there are some
        return done.stdout

    what = f"models/churn: {line.models / 'churn' / 'spec.yaml'} is invalid: training.valid_weeks"
    tested = airflow("dags", "test", "churn_train", "2026-06-01T00:00:00+00:00")
    assert tested.returncode != 0
    assert what in tested.stdout + tested.stderr  # beside Airflow's own "could not be found"
    assert what in import_errors()

    sound = airflow("dags", "test", "credit_risk_rollout_control", "2026-06-01T00:00:00+00:00")
    assert what in sound.stdout + sound.stderr  # its run fails (no action chosen); the parse still names churn
    assert what in import_errors()
