"""
### Ingest: landing zone → Great Expectations → DVC

Waits for batch files in `landing/credit_risk/` (without holding a worker slot),
validates each against the GE suite `expectations/credit_risk_batch.json`, and:

- **rejected** batches move whole to `quarantine/credit_risk/<batch_id>/`, with
  `validation.json` and a readable `validation.txt` beside the untouched file, and an alert;
- **accepted** batches are appended to the dataset in the DVC data registry as one new
  version (git tag `credit_risk-vNNNN`), pushed to the DVC remote, and the
  `credit_risk_dataset` Asset is updated, which schedules the train DAG.

A re-run or a crash leaves every batch in exactly one place; the same bytes are never ingested twice.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import PokeReturnValue, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from loopline.assets import dataset_asset
from loopline.dag_defaults import START_DATE, default_args
from loopline.notifiers import LooplineNotifier, fail_fast

MODEL = "credit_risk"


@dag(
    dag_id="loopline_ingest",
    schedule=timedelta(minutes=10),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    tags=["loopline", "ingest", MODEL],
    default_args=default_args(),
    doc_md=__doc__,
)
def loopline_ingest():
    @task.sensor(poke_interval=30, timeout=9 * 60, mode="reschedule", soft_fail=True)
    def wait_for_batches() -> PokeReturnValue:
        """Done when a file is in the landing zone or a crashed run left one in processing."""
        from loopline.ingest import batches_waiting
        from loopline.settings import get_settings

        return PokeReturnValue(is_done=batches_waiting(MODEL, get_settings()))

    @task
    def claim_batches() -> list[dict]:
        from loopline.ingest import claim_step
        from loopline.settings import get_settings

        return claim_step(MODEL, get_settings())

    @task(map_index_template="{{ task.op_kwargs['batch']['source_name'] }}")
    def validate_batch(batch: dict) -> dict:
        from loopline.ingest import validate_step
        from loopline.settings import get_settings

        with fail_fast():
            return validate_step(batch, MODEL, get_settings())

    @task
    def quarantine_rejected(outcomes: list[dict]) -> list[dict]:
        from loopline.ingest import quarantine_step
        from loopline.settings import get_settings

        moved = quarantine_step(list(outcomes), MODEL, get_settings())
        if moved:
            LooplineNotifier(
                title=f"Loopline: {len(moved)} {MODEL} batch(es) quarantined",
                body="\n\n".join(f"{m['summary']}\n-> {m['folder']}" for m in moved),
            )(get_current_context())
        return moved

    @task(outlets=[dataset_asset(MODEL)])
    def version_accepted(outcomes: list[dict]) -> dict:
        """One DVC version for all accepted batches; skipped (no Asset event) when none were new."""
        from loopline.ingest import version_step
        from loopline.settings import get_settings

        version = version_step(list(outcomes), MODEL, get_current_context()["run_id"], get_settings())
        if version is None:
            raise AirflowSkipException("no new accepted batch: dataset unchanged")
        return version

    claimed = claim_batches()
    wait_for_batches() >> claimed
    outcomes = validate_batch.expand(batch=claimed)
    quarantine_rejected(outcomes)
    version_accepted(outcomes)


loopline_ingest()
