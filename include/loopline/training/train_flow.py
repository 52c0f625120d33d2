"""The steps of the train DAG, each a plain function of plain values (what XCom carries).

Every step re-derives what it needs from shared stores (the DVC remote, MLflow),
never from a previous task's local files, so steps can run on different workers
and be retried alone. Pulled data is cached per content hash, which makes the
repeated pulls cheap on one machine.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from loopline.core.errors import LooplineError
from loopline.core.features import build_features
from loopline.core.lineage import TrainingInputs, code_version
from loopline.core.runtime import IMAGE_ID_TAG
from loopline.core.runtime import describe as describe_runtime
from loopline.core.settings import Settings
from loopline.core.spec import ModelSpec, load_spec
from loopline.core.tasks import task_of
from loopline.ingestion.data_registry import DataRegistry, DataVersion
from loopline.training.gate import CHALLENGER, CHAMPION, GATE_FAILED_TAG, judge
from loopline.training.hyperparams import merge_params
from loopline.training.stored import LINEAGE_ARTIFACT, SET_SHA_TAG, stored_versions, with_stored_features

log = logging.getLogger(__name__)


class DataValidationError(LooplineError, RuntimeError):
    """The training dataset failed its expectation suite; nothing was trained."""


@dataclass
class TrainRun:
    """What flows between train tasks: references only."""

    model_name: str
    run_id: str
    experiment_id: str
    data: dict[str, Any]
    fingerprint: str
    reused: bool
    model_version: str | None = None

    @property
    def data_version(self) -> DataVersion:
        return DataVersion(**self.data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def registry_for(settings: Settings) -> DataRegistry:
    return DataRegistry(settings.data_registry, settings.dvc_remote_url)


def spec_for(model_name: str, settings: Settings) -> ModelSpec:
    return load_spec(model_name, settings.models_dir)


def model_files(spec: ModelSpec, settings: Settings) -> list:
    """The model's own folder and its suite: what the recorded commit must hold to train this model again."""
    folder = spec.model_dir or settings.models_dir / spec.name
    return [folder, settings.expectations_dir / f"{spec.dataset.expectation_suite}.json"]


def load_dataset(version: DataVersion, settings: Settings) -> pd.DataFrame:
    dest = settings.work_dir / "data" / version.dataset / version.md5.replace(".dir", "")
    return registry_for(settings).load(version, dest)


def training_frame(version: DataVersion, spec: ModelSpec, settings: Settings) -> tuple[pd.DataFrame, dict | None]:
    """The labelled rows the model learns and is judged on, with its stored features joined (and their lineage).

    A model naming stored features (``features.stored``) gets them through the feature store's
    point-in-time join (``loopline.training.stored``) before its own feature code runs; any other
    model gets its labelled rows as before and None.
    """
    from loopline.training import trainer as training

    return with_stored_features(training.labelled(load_dataset(version, settings), spec), spec, settings)


def start(
    model_name: str,
    data_ref: str,
    overrides: dict[str, Any],
    reason: str,
    run_tags: dict[str, str],
    settings: Settings,
) -> TrainRun:
    """Resolve the exact data version and open (or reuse) the MLflow run for these inputs."""
    from loopline.core import tracking

    spec = spec_for(model_name, settings)
    version = registry_for(settings).resolve(spec.dataset.name, data_ref)
    code = code_version(settings.project_root, model_files(spec, settings))
    inputs = TrainingInputs(
        model_name=model_name,
        data_version=version.version,
        data_rev=version.rev,
        data_md5=version.md5,
        feature_version=spec.features.version,
        code_commit=code.commit,
        code_dirty=code.dirty,
        params={**merge_params(spec.training.params, overrides), "seed": spec.training.seed},
        runtime=describe_runtime(spec),
        stored=stored_versions(spec, settings),
    )
    client = tracking.client_for(settings)
    exp_id = tracking.experiment_id(client, model_name, settings)
    tags = {**run_tags, "loopline.reason": reason or "unspecified"}
    run_id, reused = tracking.start_or_reuse_run(client, exp_id, inputs, tags)
    log.info("data %s (rev %s, md5 %s); MLflow run %s reused=%s", version.tag, version.rev, version.md5, run_id, reused)
    return TrainRun(model_name, run_id, exp_id, version.to_dict(), inputs.fingerprint(), reused)


def validate_data(run: TrainRun, settings: Settings) -> dict[str, Any]:
    """Validate the whole pulled dataset with the batch suite; log the GE result to the run."""
    from loopline.core import tracking
    from loopline.ingestion.validation import validate_frame

    spec = spec_for(run.model_name, settings)
    frame = load_dataset(run.data_version, settings)
    raw = frame.assign(**{spec.dataset.timestamp: frame[spec.dataset.timestamp].dt.strftime("%Y-%m-%d %H:%M:%S")})
    report = validate_frame(
        raw,
        run.data_version.tag,
        spec.dataset.expectation_suite,
        settings.expectations_dir,
        entity_id=spec.dataset.entity_id,
        secret=settings.pseudonym_secret,
        spec=spec,
    )
    client = tracking.client_for(settings)
    tracking.log_dict(client, run.run_id, report.to_dict(), "validation/ge_result.json")
    client.set_tag(run.run_id, "loopline.data_validation", "passed" if report.success else "failed")
    client.log_metric(run.run_id, "data.rows", float(len(frame)))
    if not report.success:
        raise DataValidationError(report.summary())
    return {"success": True, "rows": len(frame), "summary": report.summary()}


def train_and_evaluate(run: TrainRun, settings: Settings, image_id: str | None = None) -> TrainRun:
    """Features → LightGBM → holdout metrics → MLflow (params, metrics, importances, calibration, model).

    ``image_id``: the runtime image this runs in (recorded on the run), None in-process.
    """
    if run.reused:
        log.info("MLflow run %s already holds a model for these exact inputs; not retraining", run.run_id)
        return run
    import mlflow
    from mlflow.models import infer_signature

    from loopline.core import tracking
    from loopline.training import trainer as training

    spec = spec_for(run.model_name, settings)
    frame, stored_lineage = training_frame(run.data_version, spec, settings)
    split = training.time_split(frame, spec)
    client = tracking.client_for(settings)
    model = training.train(split, spec, tracking.recorded_params(client, run.run_id))
    metrics = training.evaluate(model.booster, split.holdout, spec)
    valid_metrics = training.evaluate(model.booster, split.valid, spec)
    calibration = training.calibration_of(model.booster, split, spec)
    features = build_features(split.holdout.head(200), spec)
    signature = infer_signature(features, model.booster.predict(features))
    with mlflow.start_run(run_id=run.run_id):
        mlflow.log_param("best_iteration", model.best_iteration)
        mlflow.log_params({f"split.{k}": v for k, v in split.describe(spec.dataset.timestamp).items()})
        mlflow.log_metrics({f"holdout.{k}": v for k, v in metrics.items()})
        mlflow.log_metrics({f"valid.{k}": v for k, v in valid_metrics.items()})
        mlflow.log_dict(training.feature_importance(model.booster), "feature_importance.json")
        if stored_lineage is not None:  # the exact feature data: views, definition hashes, offline versions, set hash
            mlflow.log_dict(stored_lineage, LINEAGE_ARTIFACT)
            mlflow.set_tag(SET_SHA_TAG, stored_lineage["set_sha"])
        if calibration is not None:  # classifiers: measured on the holdout, the map (if any) fitted on validation
            from loopline.training.calibration import ARTIFACT, TAG

            mlflow.log_metric("holdout_ece", calibration.holdout_ece)
            if calibration.calibrated_ece is not None:
                mlflow.log_metric("holdout_ece_calibrated", calibration.calibrated_ece)
            mlflow.log_dict(calibration.to_dict(), ARTIFACT)
            mlflow.set_tag(TAG, calibration.describe())
        info = mlflow.lightgbm.log_model(
            model.booster, name=tracking.MODEL_ARTIFACT, signature=signature, input_example=features.head(5)
        )
        mlflow.set_tags({"loopline.model_uri": info.model_uri, "loopline.model_id": info.model_id or ""})
        if image_id:
            mlflow.set_tag(IMAGE_ID_TAG, image_id)
    return run


def train_step(payload: dict[str, Any], settings: Settings, image_id: str | None) -> dict[str, Any]:
    """The train DAG's heavy step (``loopline step train_and_evaluate``): in-process, or in the spec's image."""
    return train_and_evaluate(TrainRun(**payload), settings, image_id=image_id).to_dict()


def register(run: TrainRun, settings: Settings) -> TrainRun:
    from loopline.core import tracking

    client = tracking.client_for(settings)
    version, created = tracking.register(client, run.model_name, run.run_id)
    log.info("model %s version %s (%s)", run.model_name, version, "new" if created else "already registered")
    run.model_version = version
    return run


def _holdout_scores(model_uri: str, holdout: pd.DataFrame, spec: ModelSpec) -> tuple[dict[str, float], pd.DataFrame]:
    """Metrics and answers (score, decision) of one registered version on the holdout."""
    import mlflow.lightgbm

    from loopline.training import trainer as training

    booster = mlflow.lightgbm.load_model(model_uri)
    raw = training.predict_scores(booster, holdout, spec)
    out = task_of(spec).outputs(raw, spec)
    return training.evaluate_scores(holdout, raw, spec), pd.DataFrame({"score": out.score, "decision": out.decision})


def _serve_first_champion(name: str, version: str, actor: str, gate: dict[str, Any], settings: Settings) -> None:
    """The very first model takes all traffic at once: there is nothing to roll out against."""
    from loopline.core.serving_state import Route, ServingState

    state = ServingState(settings.state_db_uri)
    current = state.route(name)
    if current.champion_version is None:
        first = Route(name, champion_version=version, revision=current.revision)
        state.change(first, "first_champion", actor, "first model to pass the quality gate", {"gate": gate})


def quality_gate(run: TrainRun, settings: Settings, actor: str = "cli") -> dict[str, Any]:
    """Judge the new version against the floor and the champion on the same holdout; set aliases."""
    from loopline.core import tracking
    from loopline.training import trainer as training

    spec = spec_for(run.model_name, settings)
    client = tracking.client_for(settings)
    name, version = run.model_name, str(run.model_version)
    holdout = training.time_split(training_frame(run.data_version, spec, settings)[0], spec).holdout
    candidate, candidate_scores = _holdout_scores(f"models:/{name}/{version}", holdout, spec)
    champion_version = tracking.alias_version(client, name, tracking.CHAMPION_ALIAS)
    champion, expected_psi = None, None
    if champion_version and champion_version != version:
        champion, champion_scores = _holdout_scores(f"models:/{name}/{champion_version}", holdout, spec)
        # How differently the two score the same applicants: the canary's score gate allows this much.
        expected_psi = round(task_of(spec).output_shift(champion_scores, candidate_scores), 4)
    result = judge(candidate, spec.quality_gate, task_of(spec), champion, champion_version, version)
    if result.decision == CHAMPION:
        client.set_registered_model_alias(name, tracking.CHAMPION_ALIAS, version)
        _serve_first_champion(name, version, actor, result.to_dict(), settings)
    elif result.decision == CHALLENGER:
        client.set_registered_model_alias(name, tracking.CHALLENGER_ALIAS, version)
    payload = {**result.to_dict(), "candidate": candidate, "champion": champion, "version": version}
    payload["expected_score_psi"] = expected_psi
    tracking.log_dict(client, run.run_id, payload, f"gate/version-{version}.json")
    tracking.log_metrics(client, run.run_id, {c.name: float(c.passed) for c in result.checks}, prefix="gate.")
    values = {f"{c.name}.value": float(c.value) for c in result.checks if math.isfinite(c.value)}
    tracking.log_metrics(client, run.run_id, values, prefix="gate.")
    client.set_tag(run.run_id, "loopline.gate_decision", result.decision)
    client.set_model_version_tag(name, version, "loopline.gate_decision", result.decision)
    if not result.passed:  # what `loopline status` shows beside "rejected": the numbers, not only the word
        client.set_model_version_tag(name, version, GATE_FAILED_TAG, result.failed())
    client.set_model_version_tag(name, version, tracking.GATE_CHAMPION_TAG, champion_version or "none")
    if expected_psi is not None:
        client.set_model_version_tag(name, version, tracking.EXPECTED_SCORE_PSI_TAG, str(expected_psi))
    return payload
