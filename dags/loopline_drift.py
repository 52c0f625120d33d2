"""
### Drift: is the model still doing its job? Alert people when something moved, retrain when it is at risk

Runs on the schedule in `models/<model>/spec.yaml` (`monitoring.schedule`, hourly by
default). `ingest_outcomes` first takes in delayed outcome labels (files in
`landing/<model>_outcomes/`; bad files are quarantined with a report).
`check_drift` compares the last `window_hours` of the prediction log with the champion's
exact DVC data version on three channels: the **inputs** (alibi-detect's TabularDrift, run in .venv-drift,
FDR-corrected, each feature with an effect size and its importance), the **impact on the
model** (its quality estimated without labels: CBPE for classifiers, DLE for regressors;
its answers' mix: decision or class shares, prediction quantiles) and **realised
quality** once outcomes arrive. The report (JSON + HTML) is logged to MLflow (experiment
`<model>-monitoring`) and recorded (`loopline drift-status`, the Loopline page).

Verdicts: `insufficient`, `stable`, `feature_drift` (inputs moved, the model's answers
held: alert only), `output_shift` (the answers moved, quality estimated to hold: alert
only), `performance_risk` (estimated quality dropped: alert and retrain), `concept_drift`
(realised quality dropped, or the outcomes moved away from the predictions: alert and
retrain); the spec's
`alert_on` / `retrain_on` say which does what. `alert_people` alerts once per episode
(a reminder every `reminder_hours`), never at every check. A retrain is held back by
`min_consecutive_windows` and the storm guard (cooldown, max retrains per week); allowed →
`trigger_retrain` starts **<model>_train** with the reason and the report in its conf.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, get_current_context, task

from loopline.core.dag_defaults import START_DATE, default_args
from loopline.core.dag_factory import dag_id, models_for
from loopline.core.notifiers import LooplineNotifier
from loopline.core.settings import get_settings
from loopline.core.spec import ModelSpec


def build(spec: ModelSpec) -> None:
    """This station's DAG for one model."""
    model = spec.name
    monitoring = spec.monitoring

    @dag(
        dag_id=dag_id(model, "drift"),
        schedule=monitoring.schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=["loopline", "watch", model],
        default_args=default_args(),
        params={
            "window_start": Param(
                None,
                type=["null", "string"],
                format="date-time",
                title="Window start (manual runs)",
                description="Check the traffic since this time (UTC, ISO 8601) instead of the spec's window_hours",
            ),
        },
        doc_md=__doc__,
    )
    def loopline_drift():
        @task
        def ingest_outcomes() -> dict:
            """Delayed outcomes → label store (live AUC) and labelled production batches (→ ingest → DVC)."""
            from loopline.monitoring.feedback import ingest_outcomes

            return ingest_outcomes(model, get_settings())

        @task
        def check_drift() -> dict:
            """Compare the window ending at this run's data interval end with the champion's reference."""
            from loopline.monitoring.drift_flow import NoChampion, check

            context = get_current_context()
            # The window ends with the run's data interval (a re-run checks the same hour), never in the future.
            window_end = min(context["data_interval_end"] or context["logical_date"], datetime.now(UTC))
            start = context["params"]["window_start"]
            window_start = datetime.fromisoformat(start) if start else None
            try:
                return check(model, window_end, context["run_id"], get_settings(), window_start)
            except NoChampion as err:
                return {"trigger": False, "verdict": "no_champion", "reason": str(err), "summary": str(err)}

        @task
        def alert_people(result: dict) -> str:
            """The check in words, to the configured channels, when its episode starts (then reminders)."""
            if not result.get("alert"):
                return f"no alert: {result.get('alert_reason') or result['reason']}"
            LooplineNotifier(
                title=f"Loopline: {result['verdict']} for {model} ({result['alert_reason']})",
                body=f"{result['summary']}\nreport: {result['report_uri']}",
            ).notify(get_current_context())
            return "alerted"

        @task.branch
        def decide(result: dict) -> str:
            return "trigger_retrain" if result["trigger"] else "no_retrain"

        result = check_drift()
        ingest_outcomes() >> result
        alert_people(result)
        trigger_retrain = TriggerDagRunOperator(
            task_id="trigger_retrain",
            trigger_dag_id=dag_id(model, "train"),
            conf={
                "data_version": "latest",
                "reason": "drift: {{ ti.xcom_pull(task_ids='check_drift')['verdict'] }} "
                "(check #{{ ti.xcom_pull(task_ids='check_drift')['check_id'] }})",
                "drift_report": "{{ ti.xcom_pull(task_ids='check_drift')['report_uri'] }}",
            },
            doc_md="Starts loopline_train with the drift verdict and report in its conf (it records them on the run).",
        )
        decide(result) >> [trigger_retrain, EmptyOperator(task_id="no_retrain")]

    loopline_drift()


for _spec in models_for("drift"):
    build(_spec)
