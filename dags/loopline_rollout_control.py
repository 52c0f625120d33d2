"""
### Rollout control: change what serves traffic now (manual actions)

Trigger with config from the UI form:

- **promote**: the chosen version (default: the `challenger`) takes 100% now; the old
  champion keeps the MLflow alias `previous`;
- **rollback**: the chosen earlier version (e.g. `previous`, or a number) becomes champion again;
- **pin**: serve the chosen version as canary to a fixed share of applicants (A/B test);
- **abort**: canary traffic back to 0 at once.

Every change is written to the serving state store with an audit record (who: this DAG
run; why: the reason you give) and picked up by the running service within seconds.
This DAG runs even while `<model>_rollout` is rolling a version out: an **abort** or a
**rollback** here stops that rollout (it sees the route change and records itself as aborted).
"""

from __future__ import annotations

from airflow.sdk import Param, dag, get_current_context, task

from loopline.core.dag_defaults import START_DATE, default_args, run_actor
from loopline.core.dag_factory import dag_id, models_for
from loopline.core.spec import ModelSpec


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
        params={
            "action": Param("promote", enum=["promote", "rollback", "pin", "abort"], title="Action"),
            "version": Param(
                "challenger",
                type="string",
                pattern=r"^(challenger|previous|champion|[1-9][0-9]*)$",
                title="Version",
                description="'challenger', 'previous', or a registered version number (ignored by abort)",
            ),
            "weight": Param(0.05, type="number", minimum=0, maximum=1, title="Canary share (pin only)"),
            "reason": Param(type="string", minLength=3, maxLength=500, title="Reason (goes into the audit trail)"),
        },  # fmt: skip
        doc_md=__doc__,
    )
    def loopline_rollout_control():
        @task
        def apply_action() -> dict:
            from loopline.core.settings import get_settings
            from loopline.rollout.actions import apply

            context = get_current_context()
            p = context["params"]
            return apply(p["action"], model, p["version"], p["weight"], run_actor(), p["reason"], get_settings())

        apply_action()

    loopline_rollout_control()


for _spec in models_for("rollout_control"):
    build(_spec)
