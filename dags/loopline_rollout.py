"""
### Rollout: a challenger reaches 100% only through steps judged automatically

Starts when the train DAG publishes the `<model>_model` Asset (a version passed
the quality gate), or by hand (**Trigger DAG w/ config**: which version, which mode).
Nothing to do (no challenger, or it already serves) → the run is skipped.

**canary** (default, steps from `models/<model>/spec.yaml`, e.g. shadow → 5 → 20 → 50 → 100%):
first `shadow` (unless the spec's `shadow_seconds` is 0): the candidate scores a copy of
every request and answers none (the champion answers), judged like a step against the
champion's answers on the same rows (errors, p95 latency, score PSI, decision
disagreement); a failing shadow stops the rollout before any applicant saw the candidate.
Then each `canary_<n>pct` task sets the canary's share of applicants, then compares canary
and champion over the same window — error rate (service `/metrics`), p95 latency and
score PSI (prediction log), live AUC once outcomes arrived — until the step has baked
and every gate passes. A failing gate puts the canary back to 0% at once, records the
gate results in the rollout record and audit trail, and alerts. After the last step,
`promote` moves the MLflow alias `champion` (the old one keeps `previous`).

**bluegreen**: `pre_switch_check` scores recent live traffic with the candidate offline,
`switch` moves all traffic at once, `post_switch_watch` switches straight back if the
new champion fails its gates.

People stay in control: any action in **<model>_rollout_control** (promote, rollback,
pin, abort) ends a running rollout, recorded with who and why; its remaining steps are
skipped and it never touches the route again (its clean-up undoes only a change it made
itself). An automatic run (asset event) that was queued when a person acted, or whose
version is no longer the newest challenger, is skipped at `prepare`, with the reason.
"""

from __future__ import annotations

from airflow.sdk import Param, PokeReturnValue, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from loopline.core.assets import model_asset
from loopline.core.dag_defaults import START_DATE, default_args, run_actor
from loopline.core.dag_factory import dag_id, models_for
from loopline.core.notifiers import LooplineNotifier
from loopline.core.settings import get_settings
from loopline.core.spec import ModelSpec
from loopline.rollout.forms import ROLLOUT_FIELDS


def _expected(prepared: dict) -> float:
    """The score difference the quality gate measured (0 for rollouts prepared without one)."""
    return prepared.get("expected_score_psi", 0.0)


def _or_skip(call):
    """A rollout a person ended, or a run with nothing to do, is skipped (not failed: nothing to undo)."""
    from loopline.rollout.rollout_flow import NothingToRollOut, RolloutEnded

    try:
        return call()
    except (RolloutEnded, NothingToRollOut) as err:
        raise AirflowSkipException(str(err)) from None


def _judge(verdict) -> PokeReturnValue:
    if verdict.status == "fail":
        raise AirflowFailException(verdict.summary())
    return PokeReturnValue(is_done=verdict.status == "pass", xcom_value=verdict.to_dict())


def _canary_step(step: float, rollout):
    @task.sensor(
        task_id=f"canary_{round(step * 100)}pct",
        poke_interval=rollout.poll_seconds,
        timeout=rollout.max_step_seconds + 5 * rollout.poll_seconds,
        mode="reschedule",
        doc_md=f"Canary at {step:.0%} of applicants: passes once baked with every gate passed; a bad gate fails it.",
    )
    def canary_step(prepared: dict) -> PokeReturnValue:
        from loopline.rollout.rollout_flow import canary_step

        settings, actor = get_settings(), run_actor()
        return _judge(_or_skip(lambda: canary_step(prepared["rollout_id"], step, actor, settings, _expected(prepared))))

    return canary_step


def _shadow_phase(rollout):
    @task.sensor(
        task_id="shadow",
        poke_interval=rollout.poll_seconds,
        timeout=rollout.max_step_seconds + 5 * rollout.poll_seconds,
        mode="reschedule",
        doc_md="Shadow: the candidate scores a copy of live traffic, answers nothing; judged like a canary step.",
    )
    def shadow(prepared: dict) -> PokeReturnValue:
        from loopline.rollout.rollout_flow import shadow_step

        settings, actor = get_settings(), run_actor()
        return _judge(_or_skip(lambda: shadow_step(prepared["rollout_id"], actor, settings, _expected(prepared))))

    return shadow


def build(spec: ModelSpec) -> None:
    """This station's DAG for one model."""
    model = spec.name
    rollout = spec.rollout  # steps, bake and poll interval (spec file)
    canary_steps = rollout.steps[:-1]  # the last step (100%) is the promotion itself

    @dag(
        dag_id=dag_id(model, "rollout"),
        schedule=[model_asset(model)],
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=["loopline", "serve", model],
        default_args=default_args(),
        params={f.name: Param(**f.param_kwargs()) for f in ROLLOUT_FIELDS},  # checked in words by prepare
        doc_md=__doc__,
    )
    def loopline_rollout():
        @task
        def prepare() -> dict:
            """Open a rollout record for the candidate, or skip the run when there is nothing to roll out."""
            from loopline.core.actor import is_automatic
            from loopline.rollout.forms import check_rollout
            from loopline.rollout.rollout_flow import prepare

            context = get_current_context()
            params, dag_run = check_rollout(dict(context["params"])), context["dag_run"]
            mode = None if params["mode"] == "spec" else params["mode"]
            events = [e for evs in context["triggering_asset_events"].values() for e in evs]
            versions = [str(e.extra["version"]) for e in events if (e.extra or {}).get("version")]
            automatic = is_automatic(dag_run.run_type)
            return _or_skip(
                lambda: prepare(
                    model, params["version"], mode, run_actor(), get_settings(), automatic=automatic,
                    queued_at=dag_run.run_after, event_versions=versions if automatic else (),
                )
            )  # fmt: skip

        @task.branch
        def choose_mode(prepared: dict) -> str:
            first_step = "shadow" if rollout.shadow_bake_seconds else f"canary_{round(canary_steps[0] * 100)}pct"
            return first_step if prepared["mode"] == "canary" else "pre_switch_check"

        @task(
            on_success_callback=LooplineNotifier(
                title=f"Loopline: {model} v" + "{{ ti.xcom_pull('prepare')['candidate'] }} promoted to champion",
                body="rollout passed every step; run {{ run_id }}",
            )
        )
        def promote(prepared: dict) -> dict:
            from loopline.rollout.rollout_flow import promote

            settings, actor = get_settings(), run_actor()
            return _or_skip(lambda: promote(prepared["rollout_id"], actor, settings))

        @task
        def pre_switch_check(prepared: dict) -> dict:
            from loopline.rollout.rollout_flow import pre_switch_check

            settings = get_settings()
            verdict = _or_skip(lambda: pre_switch_check(prepared["rollout_id"], settings, _expected(prepared)))
            if verdict.status == "fail":
                raise AirflowFailException(verdict.summary())
            return verdict.to_dict()

        @task
        def switch(prepared: dict) -> dict:
            from loopline.rollout.rollout_flow import switch

            settings, actor = get_settings(), run_actor()
            return _or_skip(lambda: switch(prepared["rollout_id"], actor, settings))

        @task.sensor(
            poke_interval=rollout.poll_seconds,
            timeout=rollout.max_step_seconds + 5 * rollout.poll_seconds,
            mode="reschedule",
        )
        def post_switch_watch(prepared: dict) -> PokeReturnValue:
            from loopline.rollout.rollout_flow import post_switch_watch

            settings, actor = get_settings(), run_actor()
            rollout_id = prepared["rollout_id"]
            return _judge(_or_skip(lambda: post_switch_watch(rollout_id, actor, settings, _expected(prepared))))

        @task(trigger_rule="one_failed", retries=3)
        def put_champion_back(prepared: dict) -> None:
            """Runs only when a step failed or crashed: the rollout's own change undone; fails the run, alerts."""
            from loopline.rollout.rollout_flow import fail

            rollout = fail(prepared["rollout_id"], run_actor(), get_settings())
            if rollout["ended_by"]:
                raise AirflowSkipException(f"rollout #{rollout['id']} was ended by {rollout['ended_by']}; route left")
            raise AirflowFailException(
                f"rollout #{rollout['id']} of v{rollout['candidate_version']} failed; "
                f"v{rollout['champion_version']} serves all traffic again. {rollout['outcome']}"
            )

        prepared = prepare()
        branch = choose_mode(prepared)
        shadow_tasks = [_shadow_phase(rollout)(prepared)] if rollout.shadow_bake_seconds else []
        step_tasks = [*shadow_tasks, *[_canary_step(step, rollout)(prepared) for step in canary_steps]]
        branch >> step_tasks[0]
        for earlier, later in zip(step_tasks, step_tasks[1:], strict=False):
            earlier >> later
        promoted = promote(prepared)
        step_tasks[-1] >> promoted
        check = pre_switch_check(prepared)
        switched = switch(prepared)
        watched = post_switch_watch(prepared)
        branch >> check >> switched >> watched
        [*step_tasks, check, switched, watched, promoted] >> put_champion_back(prepared)

    loopline_rollout()


for _spec in models_for("rollout"):
    build(_spec)
