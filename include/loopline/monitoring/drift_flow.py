"""The drift DAG's step: compare live traffic with the champion's training data and decide.

Reference = the training split of the exact DVC data version the champion was
trained on (read from its MLflow lineage), scored by the champion for the score
reference. Current = the prediction log of the last ``window_hours``. The fitted
detector is kept per champion version and reused. Covariate/score drift (alibi-detect,
effect sizes) and concept drift (the task's live metric from delayed outcomes) both count; the
storm guard (cooldown, max retrains per week) decides whether a confirmed drift
may trigger a retrain now. Every check is recorded, the report logged to MLflow.
"""

from __future__ import annotations

import json
import logging
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
    )


def reference_of(spec: ModelSpec, champion: Champion, settings: Settings) -> tuple[pd.DataFrame, Any]:
    """The champion's training rows (bounded sample) and the champion booster."""
    import mlflow.lightgbm

    from loopline.training import trainer as training
    from loopline.training.train_flow import load_dataset, registry_for

    model = spec.name
    version = registry_for(settings).resolve(spec.dataset.name, champion.data_version)
    train_rows = training.time_split(training.labelled(load_dataset(version, settings), spec), spec).train
    if len(train_rows) > REFERENCE_ROWS:
        train_rows = train_rows.sample(REFERENCE_ROWS, random_state=0)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    booster = mlflow.lightgbm.load_model(f"models:/{model}/{champion.version}")
    return train_rows.reset_index(drop=True), booster


def labelled_live(model: str, version: str, settings: Settings, logged: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every logged prediction of ``version`` whose outcome has arrived (score, decision, outcome, model_version).

    ``logged``: the whole prediction log when the caller has read it already.
    """
    from loopline.monitoring import outcomes
    from loopline.serving.prediction_log import read_window

    known = outcomes.read(settings, model)
    rows = logged if logged is not None else read_window(settings.prediction_log_dir, model).rows
    columns = ["score", "decision", "outcome", "model_version"]
    if known is None or rows.empty:
        return pd.DataFrame(columns=columns)
    rows = rows[rows["model_version"] == version].drop_duplicates("entity_hash", keep="last")
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
    from loopline.monitoring import detection, retrain_policy
    from loopline.monitoring.monitoring_state import MonitoringState
    from loopline.serving.prediction_log import read_window
    from loopline.serving.scoring import score_frame

    spec = load_spec(model, settings.models_dir)
    policy = spec.monitoring
    champion = champion_of(spec, settings)
    reference, booster = reference_of(spec, champion, settings)
    since = window_start or window_end - timedelta(hours=policy.window_hours)
    logged = read_window(settings.prediction_log_dir, model).rows  # read once: the window and the labelled rows
    if logged.empty:
        window = logged
    else:
        window = logged[logged["logged_at"].between(since.timestamp(), window_end.timestamp(), inclusive="left")]
    current = window if window.empty else window[window["model_version"] == champion.version]
    detector_dir = settings.monitoring_dir / "detectors" / model / f"v{champion.version}"
    detector = detection.load_or_fit(detector_dir, reference, spec, policy.p_value)
    ref_scores = score_frame(booster, reference[spec.features.names], spec, num_threads=0)["score"].to_numpy()
    cur_scores = current["score"].to_numpy(float) if not current.empty else None
    current_features = current if not current.empty else pd.DataFrame(columns=spec.features.names)
    report = detection.check(
        detector, reference, current_features, spec, champion.importances, ref_scores, cur_scores, policy
    )
    quality = concept_drift.live_quality(labelled_live(model, champion.version, settings, logged), spec)
    concept = concept_drift.concept_verdict(quality.get(champion.version), champion.holdout_quality, policy, spec)

    state = MonitoringState(settings.state_db_uri)
    confirmed = bool(report.confirmed or concept.confirmed)
    past = state.triggers_since(model, window_end - timedelta(days=7))
    decision = retrain_policy.decide_trigger(confirmed, window_end, past, policy)
    verdict = "concept_drift" if concept.confirmed else report.verdict
    report_uri = _log_report(model, champion, report, concept, decision, window_end, dag_run, settings)
    features = report.feature_rows()
    record = state.record(
        at=window_end, model=model, champion_version=champion.version, n_rows=len(current), verdict=verdict,
        confirmed=confirmed, triggered=decision.trigger, trigger_reason=decision.reason,
        drift_share=report.drift_share, score_psi=report.score_psi, report_uri=report_uri,
        features=features, dag_run=dag_run,
    )  # fmt: skip
    summary = f"{report.summary()}; concept: {concept.reason}; trigger: {decision.reason}"
    log.info("%s", summary)
    tracking_client = tracking.client_for(settings)
    tracking_client.set_model_version_tag(model, champion.version, "loopline.last_drift_verdict", verdict)
    return {
        "check_id": record.id,
        "champion_version": champion.version,
        "verdict": verdict,
        "confirmed": confirmed,
        "trigger": decision.trigger,
        "reason": decision.reason,
        "summary": summary,
        "report_uri": report_uri,
        "rows": len(current),
    }


def _log_report(model, champion, report, concept, decision, window_end, dag_run, settings) -> str:
    """Report JSON + HTML: a file under monitoring_dir and an MLflow run tagged with the champion version."""
    from loopline.core import tracking

    stamp = window_end.strftime("%Y%m%dT%H%M%S")
    folder = settings.monitoring_dir / "reports" / model / stamp
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        **report.to_dict(),
        "concept": concept.to_dict(),
        "decision": decision.to_dict(),
        "champion_version": champion.version,
        "window_end": window_end.isoformat(),
        "dag_run": dag_run,
    }
    (folder / "drift_report.json").write_text(json.dumps(payload, indent=2, default=str))
    context = {"model": model, "champion": f"v{champion.version}", "window end": window_end.isoformat()}
    html = report.to_html(title=f"Drift: {model} v{champion.version}", context=context)
    (folder / "drift_report.html").write_text(html)
    client = tracking.client_for(settings)
    exp_id = tracking.experiment_id(client, f"{model}-monitoring", settings)
    run = client.create_run(
        exp_id,
        run_name=f"drift-{model}-v{champion.version}-{stamp}",
        tags={
            "loopline.model": model,
            "loopline.model_version": champion.version,
            "loopline.drift_verdict": "concept_drift" if concept.confirmed else report.verdict,
            "loopline.triggered": str(decision.trigger).lower(),
            "airflow.dag_run_id": dag_run,
        },
    )
    client.log_metric(run.info.run_id, "drift_share", float(report.drift_share or 0.0))
    if report.score_psi is not None:
        client.log_metric(run.info.run_id, "score_psi", float(report.score_psi))
    client.log_artifacts(run.info.run_id, str(folder), "drift")
    client.set_terminated(run.info.run_id)
    return f"runs:/{run.info.run_id}/drift/drift_report.html"
