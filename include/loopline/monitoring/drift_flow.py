"""The drift DAG's step: compare live traffic with the champion's data, grade it and decide.

From the exact DVC data version the champion was trained on (read from its MLflow
lineage): its training split is the inputs' reference; its validation and holdout
splits (rows it never fitted), scored by the champion, are the reference of its answers
and of its estimated quality. Current = the prediction log of the last ``window_hours``.
The fitted detector is kept per champion version and reused. Three channels: the inputs
(alibi-detect, run in .venv-drift by the drift worker; effect sizes), the impact on the model
(estimated quality before labels, the answers' mix: ``impact``) and realised quality from
delayed outcomes (``concept``);
``verdicts`` grades the check and decides alert and retrain, the storm guard (cooldown,
max retrains per week) whether a retrain may start now. Every check is recorded, the
report logged to MLflow.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from loopline.core.errors import LooplineError
from loopline.core.settings import Settings
from loopline.core.spec import ModelSpec

log = logging.getLogger(__name__)
REFERENCE_ROWS = 20_000


class NoChampion(LooplineError, LookupError):
    """There is no champion to monitor yet."""


@dataclass(frozen=True)
class Champion:
    version: str
    run_id: str
    data_version: str
    holdout_quality: float  # the task's live metric on the champion's holdout
    importances: dict[str, float]
    calibration: Any = None  # calibration.Calibration recorded at training; None: an older champion


def champion_of(spec: ModelSpec, settings: Settings) -> Champion:
    import mlflow

    from loopline.core import tracking
    from loopline.core.tasks import task_of

    model = spec.name

    client = tracking.client_for(settings)
    version = tracking.alias_version(client, model, tracking.CHAMPION_ALIAS)
    if version is None:
        raise NoChampion(f"model {model} has no champion to monitor")
    run = client.get_run(client.get_model_version(model, version).run_id)
    importances = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/feature_importance.json")
    return Champion(
        version=version,
        run_id=run.info.run_id,
        data_version=run.data.tags["loopline.data_version"],
        holdout_quality=float(run.data.metrics[f"holdout.{task_of(spec).live_metric}"]),
        importances=importances,
        calibration=_recorded_calibration(run),
    )


def _recorded_calibration(run: Any):
    """The calibration the champion's training run recorded (``calibration.json``); None for older runs."""
    import mlflow

    from loopline.training import calibration

    if calibration.TAG not in run.data.tags:
        return None
    data = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/{calibration.ARTIFACT}")
    return calibration.Calibration.from_dict(data)


@dataclass(frozen=True)
class Reference:
    train: pd.DataFrame  # the champion's training rows (bounded sample): the inputs' reference
    valid: pd.DataFrame  # its validation rows, with its answers (score, decision) and the label as outcome
    holdout: pd.DataFrame  # its holdout rows, likewise
    answer: Callable[[pd.DataFrame], pd.DataFrame]  # raw rows -> with the champion's answers and the outcome

    @property
    def unseen(self) -> pd.DataFrame:
        """The rows the champion never fitted, with its answers: the reference of what it answers live."""
        return pd.concat([self.valid, self.holdout], ignore_index=True)


def reference_of(spec: ModelSpec, champion: Champion, settings: Settings) -> Reference:
    """The champion's splits of its exact data version, and how the champion answers raw rows."""
    import mlflow.lightgbm

    from loopline.core import tracking
    from loopline.training import trainer as training
    from loopline.training.train_flow import load_dataset, registry_for

    model = spec.name
    version = registry_for(settings).resolve(spec.dataset.name, champion.data_version)
    split = training.time_split(training.labelled(load_dataset(version, settings), spec), spec)
    train_rows = split.train
    if len(train_rows) > REFERENCE_ROWS:
        train_rows = train_rows.sample(REFERENCE_ROWS, random_state=0)
    tracking.use_store(settings)
    booster = mlflow.lightgbm.load_model(f"models:/{model}/{champion.version}")

    def answered(rows: pd.DataFrame) -> pd.DataFrame:  # no reason codes: nothing here reads them
        return rows.reset_index(drop=True).assign(**training.answers(booster, rows, spec))

    return Reference(train_rows.reset_index(drop=True), answered(split.valid), answered(split.holdout), answered)


def labelled_live(
    model: str, version: str | None, settings: Settings, logged: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Every logged prediction of ``version`` whose outcome has arrived (score, decision, outcome, model_version,
    logged_at).

    ``logged``: the whole prediction log when the caller has read it already; ``version`` None: all versions.
    """
    from loopline.monitoring import outcomes
    from loopline.serving.prediction_log import read_window

    known = outcomes.read(settings, model)
    rows = logged if logged is not None else read_window(settings.prediction_log_dir, model).rows
    columns = ["score", "decision", "outcome", "model_version", "logged_at"]
    if known is None or rows.empty:
        return pd.DataFrame(columns=columns)
    if version is not None:  # None: every version's answers (each its last per entity)
        rows = rows[rows["model_version"] == version]
    rows = rows.drop_duplicates(["model_version", "entity_hash"], keep="last")
    return rows.merge(known[["entity_hash", "outcome"]], on="entity_hash")[columns]


def check(
    model: str, window_end: datetime, dag_run: str, settings: Settings, window_start: datetime | None = None
) -> dict[str, Any]:
    """One drift check; returns what the DAG branches on (trigger or not) and where the report is.

    The window is the spec's ``window_hours`` before ``window_end``, unless ``window_start`` is given
    (a manual run looking at one incident).
    """
    from loopline.core import tracking
    from loopline.core.spec import load_spec
    from loopline.monitoring import concept as concept_drift
    from loopline.monitoring import detection, estimate_error, impact, refusals, retrain_policy, verdicts
    from loopline.monitoring.monitoring_state import MonitoringState
    from loopline.serving.prediction_log import read_window
    from loopline.serving.refusal_log import read_refusals

    spec = load_spec(model, settings.models_dir)
    policy = spec.monitoring
    champion = champion_of(spec, settings)
    ref = reference_of(spec, champion, settings)
    reference = ref.train
    since = window_start or window_end - timedelta(hours=policy.window_hours)
    logged = read_window(settings.prediction_log_dir, model).rows  # read once: the window and the labelled rows
    if logged.empty:
        window = logged
    else:
        window = logged[logged["logged_at"].between(since.timestamp(), window_end.timestamp(), inclusive="left")]
    current = window if window.empty else window[window["model_version"] == champion.version]
    detector_dir = settings.monitoring_dir / "detectors" / model / f"v{champion.version}"
    unseen = ref.unseen
    cur_scores = current["score"].to_numpy(float) if not current.empty else None
    current_features = current if not current.empty else pd.DataFrame(columns=spec.features.names)
    report = detection.check(  # the detector is fitted once per champion at detector_dir, in .venv-drift
        detector_dir, reference, current_features, spec, champion.importances, unseen["score"].to_numpy(), cur_scores,
        policy, python=settings.drift_python,
    )  # fmt: skip
    estimator = impact.fit_estimator(spec, ref.valid, ref.holdout, champion.calibration)
    effect = impact.judge(estimator, unseen, current, spec, policy, answer=ref.answer)
    labelled = labelled_live(model, champion.version, settings, logged)
    quality = concept_drift.live_quality(labelled, spec)
    concept = concept_drift.concept_verdict(
        quality.get(champion.version), champion.holdout_quality, policy, spec,
        outcomes=concept_drift.outcome_shifts(labelled, unseen, spec, policy),
        holdout_se=concept_drift.holdout_se(ref.holdout, spec),
    )  # fmt: skip
    verdict = verdicts.grade(report, effect, concept)

    state = MonitoringState(settings.state_db_uri)
    # The earlier windows whose labels have arrived since: their realised quality beside their estimate.
    earlier = [c for c in state.latest(model, limit=estimate_error.LOOK_BACK) if c.dag_run != dag_run]
    every_version = labelled_live(model, None, settings, logged) if earlier else labelled
    for check_id, updated in estimate_error.window_realised(
        earlier, every_version, spec, policy.window_hours, policy.min_labelled
    ).items():
        state.update_impact(check_id, updated)
    history = [c for c in state.latest(model, limit=200) if c.dag_run != dag_run and c.at <= window_end]
    wanted, why = verdicts.wants_retrain(verdict, history, policy)
    if wanted:  # the storm guard decides whether it may start now
        past = state.triggers_since(model, window_end - timedelta(days=7))
        decision = retrain_policy.decide_trigger(True, window_end, past, policy)
    else:
        decision = retrain_policy.TriggerDecision(False, why)
    alert = verdicts.decide_alert(verdict, window_end, history, policy)
    # Refused requests and unknown levels: a channel of its own beside the verdict (alert only, no retrain).
    refused = refusals.check(
        read_refusals(settings.prediction_log_dir, model, since, window_end), window, spec, policy.max_refused_share
    )
    refused_alert = refusals.decide_alert(refused, window_end, history, policy.reminder_hours)
    alerted = alert.alert or refused_alert.alert
    alert_reason = alert.reason
    if refused_alert.alert:  # the verdict's own alerts (episodes) stay as they are: recorded as `alerted`
        also = f"refused requests: {refused_alert.reason}"
        alert_reason = f"{alert.reason}; {also}" if alert.alert else also
    # Stored features: served vs offline point-in-time values (skew) and each view's freshness (alert only).
    store_check, store_record = None, None
    if spec.features.stored:
        from loopline.monitoring import skew
        from loopline.serving.stored import open_store

        store, defs = open_store(settings)
        store_check = skew.check(window, spec, store, defs, window_end, policy.max_feature_skew, policy.skew_sample)
        store_alert = skew.decide_alert(store_check, window_end, history, policy.reminder_hours)
        store_record = {**store_check.to_dict(), "alerted": store_alert.alert}
        if store_alert.alert:
            alerted = True
            also = store_alert.reason
            alert_reason = f"{alert_reason}; {also}" if alert.alert or refused_alert.alert else also
    impact_record = {
        **effect.to_dict(), "realised": concept.live, "realised_n": concept.n, "alert": alert_reason,
        "window_start": since.isoformat(), "window_end": window_end.isoformat(),
        "refusals": {**refused.to_dict(), "alerted": refused_alert.alert},
        **({"feature_store": store_record} if store_record is not None else {}),
    }  # fmt: skip
    own = estimate_error.realised_in_window(labelled, champion.version, since, window_end, spec, policy.min_labelled)
    impact_record = estimate_error.with_realised(impact_record, own)
    errors = estimate_error.history([{"at": window_end.isoformat(), "champion_version": champion.version,
                                      "impact": impact_record}, *(c.to_dict() for c in history)])  # fmt: skip
    report_uri = _log_report(
        model, champion, report, effect, concept, verdict, decision, window_end, dag_run, settings, errors,
        impact_record["refusals"],
    )  # fmt: skip
    record = state.record(
        at=window_end, model=model, champion_version=champion.version, n_rows=len(current), verdict=verdict,
        confirmed=wanted, triggered=decision.trigger, trigger_reason=decision.reason,
        drift_share=report.drift_share, score_psi=report.score_psi, report_uri=report_uri,
        features=report.feature_rows(), dag_run=dag_run, alerted=alert.alert, impact=impact_record,
    )  # fmt: skip
    text = "\n".join([
        explain(verdict, report, effect, concept, decision, policy), *refused.lines(),
        *(store_check.lines() if store_check is not None else []),
    ])  # fmt: skip
    summary = f"{model} v{champion.version}: {text}"
    log.info("%s; alert: %s", summary, alert_reason)
    tracking_client = tracking.client_for(settings)
    tracking_client.set_model_version_tag(model, champion.version, "loopline.last_drift_verdict", verdict)
    return {
        "check_id": record.id,
        "champion_version": champion.version,
        "verdict": verdict,
        "confirmed": wanted,
        "trigger": decision.trigger,
        "reason": decision.reason,
        "alert": alerted,
        "alert_reason": alert_reason,
        "refused": refused.headline(),
        "feature_store": store_check.headline() if store_check is not None else "",
        "summary": summary,
        "report_uri": report_uri,
        "rows": len(current),
    }


def explain(verdict, report, effect, concept, decision, policy) -> str:
    """The check in words a person can act on: the verdict, what moved and how much it matters, what happens."""
    from loopline.monitoring.detection import effect_text
    from loopline.monitoring.verdicts import HEADLINES

    lines = [HEADLINES[verdict]]
    drifted = sorted((f for f in report.features if f.drifted), key=lambda f: -f.importance)
    if drifted:
        lines.append(
            "inputs that moved: "
            + ", ".join(f"{f.name} ({effect_text(f)}, {f.importance:.0%} of the model's importance)" for f in drifted)
        )
    if report.score is not None and report.score.shifted:
        lines.append(f"the score distribution moved (PSI {report.score.psi:.3f} >= {policy.score_psi})")
    lines += effect.reasons(policy)
    lines.append(f"labels: {concept.reason}")
    lines.append(f"retrain: {decision.reason}")
    return "\n".join(lines)


def _log_report(
    model, champion, report, effect, concept, verdict, decision, window_end, dag_run, settings, errors=None,
    refused=None,
) -> str:  # fmt: skip
    """Report JSON + HTML: a file under monitoring_dir and an MLflow run tagged with the champion version."""
    from loopline.core import tracking

    stamp = window_end.strftime("%Y%m%dT%H%M%S")
    folder = settings.monitoring_dir / "reports" / model / stamp
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        **report.to_dict(),
        "verdict": verdict,
        "inputs_verdict": report.verdict,
        "impact": effect.to_dict(),
        "concept": concept.to_dict(),
        "decision": decision.to_dict(),
        "champion_version": champion.version,
        "calibration": effect.calibration,
        "estimate_history": errors,
        "refusals": refused,
        "window_end": window_end.isoformat(),
        "dag_run": dag_run,
    }
    (folder / "drift_report.json").write_text(json.dumps(payload, indent=2, default=str))
    context = {"model": model, "champion": f"v{champion.version}", "window end": window_end.isoformat()}
    if effect.calibration:
        context["calibration (estimate)"] = effect.calibration
    from loopline.monitoring.report_page import render_html

    html = render_html(
        report, f"Drift: {model} v{champion.version}", context, verdict, impact=effect, history=errors, concept=concept
    )
    from loopline.monitoring.refusals import into_report

    (folder / "drift_report.html").write_text(into_report(html, refused))
    client = tracking.client_for(settings)
    exp_id = tracking.experiment_id(client, f"{model}-monitoring", settings)
    run = client.create_run(
        exp_id,
        run_name=f"drift-{model}-v{champion.version}-{stamp}",
        tags={
            "loopline.model": model,
            "loopline.model_version": champion.version,
            "loopline.drift_verdict": verdict,
            "loopline.triggered": str(decision.trigger).lower(),
            "airflow.dag_run_id": dag_run,
        },
    )
    client.log_metric(run.info.run_id, "drift_share", float(report.drift_share or 0.0))
    if report.score_psi is not None:
        client.log_metric(run.info.run_id, "score_psi", float(report.score_psi))
    if effect.estimated is not None:
        client.log_metric(run.info.run_id, f"estimated_{effect.metric}", float(effect.estimated))
    if concept.live is not None:
        client.log_metric(run.info.run_id, f"realised_{effect.metric}", float(concept.live))
    client.log_artifacts(run.info.run_id, str(folder), "drift")
    client.set_terminated(run.info.run_id)
    return f"runs:/{run.info.run_id}/drift/drift_report.html"
