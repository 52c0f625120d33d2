"""
### Feature pipeline: source events → computed view → GE check → offline store → online store

One DAG per feature view of the feature repo (`feature_repo/*.yaml`), id `feature_<view>`. It runs
on the view's `schedule` and, for a view over a data-registry dataset, whenever that dataset gets a
new version (the ingest DAG's dataset Asset):

- **read_source**: the source's data version (the registry's latest; a SQL table first lands its
  new watermark slices);
- **compute**: the view's window aggregates or its `compute` function over exactly that version's
  events; events with a null key or event time are set aside and counted;
- **validate**: a Great Expectations suite built from the view (keys and event time present,
  counts not negative, each column of its declared type); a failure moves the batch to
  `quarantine/features/<view>/<batch>/` with its report and fails the run: nothing is written;
- **write_offline**: the rows into the offline store, one part per source part (a re-run replaces,
  never duplicates);
- **materialise**: the new values into the online store (skipped for `online: false` views);
- **publish**: the view's Asset event, which (with their dataset's) schedules the train DAGs of the
  models that use the view; skipped when the run changed no offline part (a re-run over the same
  events), so an hourly pipeline over unchanged data never retrains anything.
"""

from __future__ import annotations

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from loopline.core.assets import dataset_asset, feature_view_asset
from loopline.core.dag_defaults import START_DATE, default_args
from loopline.features.definitions import FeatureViewDef
from loopline.features.pipeline_dags import dag_id, source_assets_of, views_for


def _settings():
    from loopline.core.settings import get_settings

    return get_settings()


def _schedule(view: FeatureViewDef):
    assets = [dataset_asset(name) for name in source_assets_of(view)]
    if not assets:
        return view.schedule
    condition = assets[0]
    for asset in assets[1:]:
        condition = condition | asset
    if view.schedule == "@once":
        return condition
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(view.schedule, timezone="UTC"), assets=condition)


def build(view: FeatureViewDef) -> None:
    """The pipeline DAG of one feature view."""
    name = view.name

    @dag(
        dag_id=dag_id(name),
        schedule=_schedule(view),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=["loopline", "features", name, f"owner:{view.owner}"],
        default_args=default_args(),
        doc_md=__doc__,
    )
    def feature_pipeline():
        @task
        def read_source() -> dict:
            from loopline.features.pipeline import read_source

            return read_source(name, _settings())

        @task
        def compute(source: dict) -> dict:
            from loopline.features.pipeline import compute

            return compute(name, source, _settings())

        @task
        def validate(batch: dict) -> dict:
            from loopline.features.pipeline import validate

            return validate(batch, _settings())

        @task
        def write_offline(batch: dict) -> dict:
            from loopline.features.pipeline import write_offline

            return write_offline(batch, _settings())

        @task
        def materialise(written: dict) -> dict:
            from loopline.features.pipeline import materialize

            return {**materialize(written, _settings()), "written": written}

        @task(outlets=[feature_view_asset(name)])
        def publish(done: dict) -> dict:
            """A new version of the view, as an Asset event; skipped when the run changed nothing."""
            from airflow.sdk import get_current_context

            written = done["written"]
            if not written.get("changed", True):
                raise AirflowSkipException(f"{name}: offline data unchanged ({written['offline_version'][:12]})")
            get_current_context()["outlet_events"][feature_view_asset(name)].extra = {
                "batch": written["batch_id"],
                "offline_version": written["offline_version"],
            }
            return {key: value for key, value in done.items() if key != "written"}

        publish(materialise(write_offline(validate(compute(read_source())))))

    feature_pipeline()


_views, _defs = views_for()
for _view in _views:
    build(_view)
