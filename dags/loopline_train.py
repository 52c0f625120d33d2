"""
### Train: exact DVC data → GE → features → LightGBM → MLflow → gate → Bento

Runs weekly, whenever the ingest DAG publishes a new dataset version (Asset) or the
pipeline of a feature view the model reads (`features.stored`) writes new values, on a
drift alarm, or by hand (**Trigger DAG w/ config**: data version, hyperparameter
overrides, and a reason, required when you trigger by hand; a value the form cannot use
fails `start_run` at once with a sentence saying what to change).

One MLflow run per DAG run records the DVC data version and content hash, the
feature-set version, the git commit, params, holdout metrics (AUC, KS, Brier,
precision/recall at the decision threshold), the GE result, feature importances
and the model with signature and input example. The model is registered; the
quality gate (absolute floor AND not worse than the champion on the same holdout)
decides whether the version becomes `challenger` (the first one becomes
`champion`); a version that passes is packaged as a Bento.

Re-running with the same inputs (data, code, params) reuses the earlier run and
registry version: no duplicates.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from loopline.core.assets import dataset_asset, feature_view_asset, model_asset
from loopline.core.dag_defaults import START_DATE, default_args, run_actor
from loopline.core.dag_factory import dag_id, models_for
from loopline.core.spec import ModelSpec
from loopline.training.train_form import TRAIN_FIELDS


def _settings():
    from loopline.core.settings import get_settings

    return get_settings()


def _new_inputs(spec: ModelSpec):
    """New data for the model: its dataset and, for a model reading stored features, a new version of
    every view it reads (all of them: the views are usually computed from the same new batch, and a
    training set joined before they are would miss its newest values)."""
    from loopline.features.pipeline_dags import views_used_by_model

    condition = dataset_asset(spec.name)
    for view in views_used_by_model(spec.features.stored):
        condition = condition & feature_view_asset(view)
    return condition


def build(spec: ModelSpec) -> None:
    """This station's DAG for one model."""
    model = spec.name

    @dag(
        dag_id=dag_id(model, "train"),
        schedule=AssetOrTimeSchedule(
            timetable=CronTriggerTimetable(spec.training.schedule, timezone="UTC"), assets=_new_inputs(spec)
        ),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=["loopline", "train", model],
        default_args=default_args(retry_delay=timedelta(minutes=1)),
        params={f.name: Param(**f.param_kwargs()) for f in TRAIN_FIELDS},  # checked in words by start_run
        doc_md=__doc__,
    )
    def loopline_train():
        @task
        def start_run() -> dict:
            """Resolve the exact data version; open (or reuse) the MLflow run with the full lineage."""
            from loopline.core.actor import run_type_name
            from loopline.training.train_flow import start
            from loopline.training.train_form import check_train

            context = get_current_context()
            params = check_train(dict(context["params"]), run_type_name(context["dag_run"].run_type))
            run_tags = {
                "airflow.dag_id": context["dag"].dag_id,
                "airflow.dag_run_id": context["run_id"],
                "mlflow.runName": f"{model}-{context['run_id']}",
            }
            if params["drift_report"]:
                run_tags["loopline.drift_report"] = params["drift_report"]  # lineage: the drift that caused this run
            run = start(
                model, params["data_version"], params["hyperparameters"], params["reason"], run_tags, _settings()
            )
            return run.to_dict()

        @task
        def validate_data(run: dict) -> dict:
            """GE suite over the whole pulled dataset; a failure stops the run before training."""
            from loopline.training.train_flow import TrainRun, validate_data

            return validate_data(TrainRun(**run), _settings())

        def train_and_evaluate(run):
            """Features → LightGBM → holdout metrics → MLflow: in-process, or in the spec's runtime image."""
            if spec.runtime is not None:  # same step, same settings, in a container (loopline.core.runtime_operator)
                from loopline.core.runtime_operator import step_in_image
                from loopline.ops.steps import TRAIN_AND_EVALUATE

                in_image = step_in_image(spec, TRAIN_AND_EVALUATE, "{{ ti.xcom_pull(task_ids='start_run') | tojson }}")
                run >> in_image
                return in_image.output

            @task(task_id="train_and_evaluate")
            def in_process(run: dict) -> dict:
                from loopline.core.runtime import run_step
                from loopline.ops.steps import TRAIN_AND_EVALUATE

                return run_step(TRAIN_AND_EVALUATE, run, _settings())

            return in_process(run)

        @task
        def register_model(run: dict) -> dict:
            from loopline.training.train_flow import TrainRun, register

            return register(TrainRun(**run), _settings()).to_dict()

        @task(outlets=[model_asset(model)])
        def quality_gate(run: dict) -> dict:
            """Floor and champion comparison on one holdout; sets `challenger` (or `champion` for the first)."""
            from loopline.training.train_flow import TrainRun, quality_gate

            result = quality_gate(TrainRun(**run), _settings(), run_actor())
            if not result["passed"]:
                raise AirflowSkipException(
                    f"version {result['version']} rejected by the quality gate: {result['checks']}"
                )
            # The rollout this event starts rolls out exactly this version (or is dropped if a newer one passed).
            get_current_context()["outlet_events"][model_asset(model)].extra = {"version": str(result["version"])}
            return result

        @task
        def package_bento(run: dict, gate: dict) -> str:
            """Import the version into BentoML and build its Bento; the tag is recorded on the model version."""
            from loopline.serving.packaging import build_bento

            return build_bento(run["model_name"], run["model_version"], _settings())

        run = start_run()
        checked = validate_data(run)
        trained = train_and_evaluate(run)
        checked >> trained
        registered = register_model(trained)
        package_bento(registered, quality_gate(registered))

    loopline_train()


for _spec in models_for("train"):
    build(_spec)
