"""
### Batch scoring: a file of rows → the service's answers, reason codes, model version

Trigger by hand (**Trigger DAG w/ config**) with the path of a CSV or parquet file of
rows and the model to use (`champion` by default, `challenger`, or a version
number). Results land in `scores/<model>/<run_id>/scores.parquet`: per row the entity id,
then the fields the prediction service answers (binary `score`, `decision`; regression
`prediction`; multiclass `predicted_class`, `probabilities`), `model_version` and `reasons`;
beside it `lineage.json` (input hash, model version and its data version, code commit,
feature version).
"""

from __future__ import annotations

from airflow.sdk import Param, dag, get_current_context, task

from loopline.core.dag_defaults import START_DATE, default_args
from loopline.core.dag_factory import dag_id, models_for
from loopline.core.spec import ModelSpec
from loopline.serving.batch_scoring import MODEL_REF_PATTERN


def build(spec: ModelSpec) -> None:
    """This station's DAG for one model."""
    model = spec.name

    @dag(
        dag_id=dag_id(model, "batch_score"),
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=4,
        tags=["loopline", "serve", model],
        default_args=default_args(),
        params={
            "input_path": Param(
                type="string", minLength=1, title="File to score", description="CSV or parquet of applications"
            ),
            "model": Param(
                "champion",
                type="string",
                pattern=MODEL_REF_PATTERN,
                title="Model",
                description="'champion', 'challenger' or a registered version number",
            ),  # fmt: skip
        },
        doc_md=__doc__,
    )
    def loopline_batch_score():
        if spec.runtime is not None:  # same step, same settings, in the spec's image (loopline.core.runtime_operator)
            from loopline.core.runtime_operator import step_in_image
            from loopline.ops.steps import SCORE

            payload = {"model": model, "input_path": "{{ params.input_path }}", "model_ref": "{{ params.model }}"}
            step_in_image(spec, SCORE, {**payload, "run_id": "{{ run_id }}"})
            return

        @task
        def score() -> dict:
            from loopline.core.runtime import run_step
            from loopline.core.settings import get_settings
            from loopline.ops.steps import SCORE

            context = get_current_context()
            params = context["params"]
            payload = {"model": model, "input_path": params["input_path"], "model_ref": params["model"]}
            return run_step(SCORE, {**payload, "run_id": context["run_id"]}, get_settings())

        score()

    loopline_batch_score()


for _spec in models_for("batch_score"):
    build(_spec)
