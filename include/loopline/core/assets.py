"""Airflow Assets that connect Loopline's DAGs (data-aware scheduling)."""

from __future__ import annotations

from airflow.sdk import Asset


def dataset_asset(dataset: str) -> Asset:
    """Updated by the ingest DAG whenever a new DVC version of the dataset is committed."""
    return Asset(name=f"{dataset}_dataset", uri=f"dvc://loopline/{dataset}")


def model_asset(model_name: str) -> Asset:
    """Updated by the train DAG when a version passes the quality gate (rollout listens here)."""
    return Asset(name=f"{model_name}_model", uri=f"mlflow://loopline/{model_name}")


def feature_view_asset(view: str) -> Asset:
    """Updated by the feature pipeline DAG when the view's rows are written (and materialised): trains listen here."""
    return Asset(name=f"{view}_feature_view", uri=f"feast://loopline/{view}")
