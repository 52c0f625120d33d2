"""
### Rollout control: change what serves traffic now (manual actions)

Trigger with config from the UI form (no action is preselected; a reason is required):

- **promote**: the chosen version (empty: the `challenger`) takes 100% now; the old
  champion keeps the MLflow alias `previous`;
- **rollback**: the chosen earlier version (empty: `previous`, or a number) becomes champion again;
- **pin**: serve the chosen version as canary to a fixed share of applicants (A/B test);
- **abort**: canary traffic back to 0 at once (after a blue/green switch, use rollback).

Every change is written to the serving state store with an audit record (who: the Airflow
user who pressed Trigger, next to this DAG run; why: the reason you give) and picked up by
the running service within seconds. Any action here also ends a rollout of
`<model>_rollout` that is running (recorded with your name and reason; its remaining steps
are skipped and it never changes the route again) or queued (it is skipped when it starts).
A value the form cannot use fails the run at once with a sentence saying what to change.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, get_current_context, task

from loopline.core.dag_defaults import START_DATE, default_args, run_actor
from loopline.core.dag_factory import dag_id, models_for
from loopline.core.spec import ModelSpec
from loopline.rollout.forms import CONTROL_FIELDS


def build(spec: ModelSpec) -> None:
    """This station's DAG for one model."""
    model = spec.name

    @dag(
        dag_id=dag_id(model, "rollout_control"),
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,  # actions apply one at a time, in order
        tags=["loopline", "serve", model],
        default_args=default_args(),
        params={f.name: Param(**f.param_kwargs()) for f in CONTROL_FIELDS},  # checked in words by apply_action
        doc_md=__doc__,
    )
    def loopline_rollout_control():
        @task
        def apply_action() -> dict:
            from loopline.core.settings import get_settings
            from loopline.rollout.actions import apply
            from loopline.rollout.forms import check_control

            p = check_control(dict(get_current_context()["params"]))  # a bad value: a sentence, nothing changed
            return apply(p["action"], model, p["version"], p["weight"], run_actor(), p["reason"], get_settings())

        apply_action()

    loopline_rollout_control()


for _spec in models_for("rollout_control"):
    build(_spec)
