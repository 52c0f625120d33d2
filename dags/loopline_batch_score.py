"""
### Batch scoring: a file of applications → scores, decisions, reason codes

Trigger by hand (**Trigger DAG w/ config**) with the path of a CSV or parquet file of
applications and the model to use (`champion` by default, `challenger`, or a version
number). Results land in `scores/<model>/<run_id>/scores.parquet` with the model
version on every row, beside `lineage.json` (input hash, model version and its data
version, code commit, feature version).
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
        @task
        def score() -> dict:
            from loopline.core.settings import get_settings
            from loopline.serving.batch_scoring import score_file

            context = get_current_context()
            settings = get_settings()
            out_dir = settings.scores_dir / model / context["run_id"].replace(":", "_").replace("+", "_")
            result = score_file(model, context["params"]["input_path"], context["params"]["model"], out_dir, settings)
            return result.to_dict()

        score()

    loopline_batch_score()


for _spec in models_for("batch_score"):
    build(_spec)
