"""MLflow: experiments, runs with lineage, the model registry and its aliases.

Aliases carry the serving roles: ``champion`` (serves), ``challenger`` (passed
the gate, waiting for rollout) and, later, ``previous``. Nothing else in
Loopline keeps a second copy of who is champion.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from loopline.core.lineage import TrainingInputs
from loopline.core.settings import Settings, apply_library_env, ensure_dirs

CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
# PSI between a challenger's and the champion's scores on the gate's holdout (what the canary may differ by)
EXPECTED_SCORE_PSI_TAG = "loopline.expected_score_psi"
GATE_CHAMPION_TAG = "loopline.gate_champion_version"  # the champion a version was gated against
MODEL_ARTIFACT = "model"
INPUTS_ARTIFACT = "lineage/inputs.json"


def use_store(settings: Settings) -> None:
    """Point this process's MLflow (runs and the registry that ``models:/`` loads read) at the settings' store."""
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)


def client_for(settings: Settings) -> MlflowClient:
    apply_library_env(settings)
    ensure_dirs(settings)
    use_store(settings)
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def experiment_id(client: MlflowClient, model_name: str, settings: Settings) -> str:
    existing = client.get_experiment_by_name(model_name)
    if existing is not None:
        return existing.experiment_id
    root = settings.mlflow_artifact_root
    if root.startswith("mlflow-artifacts:"):
        # Artifacts proxied by the tracking server (the full stack): the server's own default location,
        # <its --default-artifact-root>/<experiment id>. MLflow's auth reads the experiment from the first
        # segment of a proxied artifact path, so a folder named after the model would be nobody's to write.
        location = None
    elif "://" in root:
        location = f"{root.rstrip('/')}/{model_name}"
    else:
        location = (Path(root) / model_name).as_uri()
    try:
        return client.create_experiment(model_name, artifact_location=location)
    except MlflowException:  # created concurrently by another task, or refused (then that error)
        created = client.get_experiment_by_name(model_name)
        if created is None:
            raise
        return created.experiment_id


def find_runs(client: MlflowClient, exp_id: str, **tags: str) -> list[Run]:
    clause = " and ".join(f"tags.`{k.replace('__', '.')}` = '{v}'" for k, v in tags.items())
    return client.search_runs([exp_id], filter_string=clause, order_by=["attributes.start_time ASC"])


def start_or_reuse_run(
    client: MlflowClient, exp_id: str, inputs: TrainingInputs, run_tags: dict[str, str]
) -> tuple[str, bool]:
    """The run for these exact inputs: an earlier one that logged a model, else this DAG run's own.

    Returns (run_id, reused) where reused means training already happened.
    """
    fingerprint = inputs.fingerprint()
    for run in find_runs(client, exp_id, loopline__fingerprint=fingerprint):
        if run.data.tags.get("loopline.model_uri"):
            return run.info.run_id, True
    dag_run = run_tags.get("airflow.dag_run_id")
    if dag_run:
        for run in find_runs(client, exp_id, loopline__fingerprint=fingerprint, airflow__dag_run_id=dag_run):
            return run.info.run_id, False  # a retry of this DAG run resumes its own run
    run = client.create_run(exp_id, tags={**inputs.tags(), **run_tags}, run_name=run_tags.get("mlflow.runName"))
    for key, value in inputs.params.items():
        client.log_param(run.info.run_id, key, value)
    log_dict(client, run.info.run_id, asdict(inputs), INPUTS_ARTIFACT)
    return run.info.run_id, False


def recorded_inputs(client: MlflowClient, run_id: str) -> dict[str, Any]:
    """The exact training inputs a run recorded (typed, unlike MLflow params which are strings)."""
    return mlflow.artifacts.load_dict(f"{client.get_run(run_id).info.artifact_uri}/{INPUTS_ARTIFACT}")


def recorded_params(client: MlflowClient, run_id: str) -> dict[str, Any]:
    return recorded_inputs(client, run_id)["params"]


def log_dict(client: MlflowClient, run_id: str, payload: Any, artifact_file: str) -> None:
    client.log_dict(run_id, json.loads(json.dumps(payload, default=str)), artifact_file)


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], prefix: str = "") -> None:
    for key, value in metrics.items():
        client.log_metric(run_id, f"{prefix}{key}", float(value))


def registered_version_for_run(client: MlflowClient, model_name: str, run_id: str) -> str | None:
    versions = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    return str(min(int(v.version) for v in versions)) if versions else None


def register(client: MlflowClient, model_name: str, run_id: str) -> tuple[str, bool]:
    """Register the run's model once; a second call returns the same version. (version, created)."""
    existing = registered_version_for_run(client, model_name, run_id)
    if existing:
        return existing, False
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name, description=f"Loopline model {model_name}")
    run = client.get_run(run_id)
    model_uri = run.data.tags["loopline.model_uri"]
    lineage = {k: v for k, v in run.data.tags.items() if k.startswith("loopline.")}
    version = client.create_model_version(
        model_name, source=model_uri, run_id=run_id, tags=lineage, model_id=run.data.tags.get("loopline.model_id")
    )
    return str(version.version), True


def alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None
