"""
### Ingest: landing zone → Great Expectations → DVC

Waits for complete batch files in `landing/<model>/` (without holding a worker slot):
a file counts once it has a `<name>.done` marker or its size and mtime stood still for
`LOOPLINE_LANDING_SETTLE_SECONDS`; temporary names (`.x.tmp`, `*.part`) are waited for,
sub-directories and hidden files are reported as ignored, symlinks and special files refused.
Each batch is validated against the GE suite `expectations/<model>_batch.json` and the
spec's data rules (real, plausible timestamps; keys unique across the whole dataset), and:

- **rejected** batches move whole to `quarantine/<model>/<batch_id>/`, with
  `validation.json` and a readable `validation.txt` beside the untouched file, and an alert;
- **accepted** batches are appended to the dataset in the DVC data registry as one new
  version (git tag `<model>-vNNNN`), pushed to the DVC remote, and archived;
- **the same bytes again** are archived as a duplicate, never stored twice;
- `announce_versions` updates the `<model>_dataset` Asset (which schedules the train DAG)
  for every data version no event has named yet, so a crash never loses a version's event.

A re-run or a crash at any point leaves every batch in exactly one place.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import PokeReturnValue, TriggerRule, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from loopline.core.assets import dataset_asset
from loopline.core.dag_defaults import START_DATE, default_args
from loopline.core.dag_factory import dag_id, models_for
from loopline.core.notifiers import LooplineNotifier, fail_fast
from loopline.core.spec import ModelSpec


def _alert_quarantined(model: str, moved: list[dict]) -> None:
    if moved:
        LooplineNotifier(
            title=f"Loopline: {len(moved)} {model} batch(es) quarantined",
            body="\n\n".join(f"{m['summary']}\n-> {m['folder']}" for m in moved),
        )(get_current_context())


def build(spec: ModelSpec) -> None:
    """This station's DAG for one model."""
    model = spec.name

    @dag(
        dag_id=dag_id(model, "ingest"),
        schedule=timedelta(minutes=10),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=["loopline", "ingest", model],
        default_args=default_args(),
        doc_md=__doc__,
    )
    def loopline_ingest():
        dataset = dataset_asset(model)

        @task.sensor(poke_interval=30, timeout=9 * 60, mode="reschedule", soft_fail=True, inlets=[dataset])
        def wait_for_batches() -> PokeReturnValue:
            """Done for a complete landed file, a crashed run's batch in processing, or an unannounced version."""
            from loopline.core.settings import get_settings
            from loopline.ingestion.ingest import batches_waiting, last_announced, unannounced_versions

            settings = get_settings()
            if batches_waiting(model, settings):
                return PokeReturnValue(is_done=True)
            events = get_current_context()["inlet_events"][dataset].ascending(False).limit(20)
            return PokeReturnValue(is_done=bool(unannounced_versions(model, settings, last_announced(events))))

        @task
        def claim_batches() -> list[dict]:
            from loopline.core.settings import get_settings
            from loopline.ingestion.ingest import claim_step

            def alert(title: str, body: str) -> None:  # a SQL pull with rows unaccounted for or without watermark
                LooplineNotifier(title=title, body=body)(get_current_context())

            with fail_fast():
                return claim_step(model, get_settings(), alert)

        @task(map_index_template="{{ task.op_kwargs['batch']['source_name'] }}")
        def validate_batch(batch: dict) -> dict:
            from loopline.core.settings import get_settings
            from loopline.ingestion.ingest import validate_step

            with fail_fast():
                return validate_step(batch, model, get_settings())

        @task
        def quarantine_rejected(outcomes: list[dict]) -> list[dict]:
            from loopline.core.settings import get_settings
            from loopline.ingestion.ingest import quarantine_step

            with fail_fast():
                moved = quarantine_step(list(outcomes), model, get_settings())
            _alert_quarantined(model, moved)
            return moved

        @task
        def version_accepted(outcomes: list[dict]) -> dict:
            """One DVC version for all accepted batches; a batch that breaks a dataset rule is quarantined."""
            from loopline.core.settings import get_settings
            from loopline.ingestion.ingest import version_step

            with fail_fast():
                result = version_step(list(outcomes), model, get_current_context()["run_id"], get_settings())
            _alert_quarantined(model, result["quarantined"])
            return result

        @task(inlets=[dataset], outlets=[dataset], trigger_rule=TriggerRule.NONE_FAILED)
        def announce_versions() -> list[str]:
            """One dataset event naming every data version that no earlier event named (skipped when none)."""
            from loopline.core.faults import crash_point
            from loopline.core.settings import get_settings
            from loopline.ingestion.ingest import last_announced, unannounced_versions

            context = get_current_context()
            events = context["inlet_events"][dataset].ascending(False).limit(20)
            pending = unannounced_versions(model, get_settings(), last_announced(events))
            if not pending:
                raise AirflowSkipException("every data version has had its dataset event")
            context["outlet_events"][dataset].extra = {"version": pending[-1], "versions": pending}
            crash_point("emit")
            return pending

        claimed = claim_batches()
        wait_for_batches() >> claimed
        outcomes = validate_batch.expand(batch=claimed)
        quarantine_rejected(outcomes)
        version_accepted(outcomes) >> announce_versions()

    loopline_ingest()


for _spec in models_for("ingest"):
    build(_spec)
