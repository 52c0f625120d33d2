"""Task extra links: from a Loopline task in the Airflow UI straight to its MLflow run, model version and Bento.

Registered as *global* links by the Loopline plugin (``plugins/loopline_plugin.py``): Airflow
offers every global link on every task, so each link answers only for the train-DAG tasks it
applies to and returns "" elsewhere (the UI then shows no button).

Global links are resolved by the api-server, not the worker: ``get_link`` reads the task's
XCom (the references the train DAG passes along: the TrainRun dict, the Bento tag) from the
Airflow metadata database, the way Airflow's own ``XComOperatorLink`` does.

The MLflow UI base URL is the setting ``LOOPLINE_MLFLOW_UI_URL`` (default http://127.0.0.1:5000,
the ``make up`` MLflow server); the Bento link goes to the BentoML service (``LOOPLINE_SERVICE_URL``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

from loopline.core.dag_factory import station_of

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

log = logging.getLogger(__name__)


# Tasks whose own return value is a TrainRun dict (run_id, experiment_id, model_name, model_version).
TRAIN_RUN_TASKS = ("start_run", "train_and_evaluate", "register_model")
# Train tasks that return something else; their MLflow run is the one start_run opened.
OTHER_TRAIN_TASKS = ("validate_data", "quality_gate", "package_bento")
# Tasks at or after registration: the model version is in register_model's TrainRun.
VERSION_TASKS = ("register_model", "quality_gate", "package_bento")
BENTO_TASK = "package_bento"


# --- URLs (pure) ----------------------------------------------------------------------------------


def mlflow_ui_url() -> str:
    """The MLflow UI people open (not the tracking URI, which may be a database): settings.mlflow_ui_url."""
    from loopline.core.settings import get_settings

    return get_settings().mlflow_ui_url


def mlflow_run_url(experiment_id: str, run_id: str, base: str | None = None) -> str:
    return f"{base or mlflow_ui_url()}/#/experiments/{quote(str(experiment_id))}/runs/{quote(str(run_id))}"


def mlflow_model_url(model_name: str, base: str | None = None) -> str:
    return f"{base or mlflow_ui_url()}/#/models/{quote(str(model_name))}"


def mlflow_version_url(model_name: str, version: str, base: str | None = None) -> str:
    return f"{mlflow_model_url(model_name, base)}/versions/{quote(str(version))}"


def run_link(value: Any) -> str:
    """MLflow run page for a TrainRun dict; "" for anything else."""
    if isinstance(value, dict) and value.get("run_id") and value.get("experiment_id"):
        return mlflow_run_url(value["experiment_id"], value["run_id"])
    return ""


def version_link(value: Any) -> str:
    """MLflow model-version page for a registered TrainRun dict; "" for anything else."""
    if isinstance(value, dict) and value.get("model_name") and value.get("model_version"):
        return mlflow_version_url(value["model_name"], value["model_version"])
    return ""


def bento_link(value: Any, service_url: str) -> str:
    """The BentoML service (its API page) once package_bento returned a Bento tag; "" otherwise."""
    if isinstance(value, str) and ":" in value:
        return f"{service_url.rstrip('/')}/"
    return ""


# --- XCom (api-server side) ------------------------------------------------------------------------


def xcom_return_value(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
    """A task's return value from the metadata DB (None if it has none), as the api-server reads XComs."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(
                key="return_value", run_id=run_id, dag_ids=dag_id, task_ids=task_id, map_indexes=map_index
            ).with_only_columns(XComModel.value)
        ).first()
    return None if row is None else XComModel.deserialize_value(row)


class _LooplineLink(BaseOperatorLink):
    """A link that never fails the task page: any problem is logged and shows as no link."""

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        if (station_of(ti_key.dag_id) or ("", ""))[1] != "train":
            return ""
        try:
            return self.url_for(ti_key)
        except Exception:  # a broken link must not break the task page
            log.exception("%s link for %s failed", self.name, ti_key)
            return ""

    def url_for(self, ti_key: TaskInstanceKey) -> str:
        raise NotImplementedError

    @staticmethod
    def _xcom(ti_key: TaskInstanceKey, task_id: str | None = None) -> Any:
        own = task_id is None or task_id == ti_key.task_id
        return xcom_return_value(
            ti_key.dag_id, ti_key.run_id, task_id or ti_key.task_id, ti_key.map_index if own else -1
        )


class MlflowRunLink(_LooplineLink):
    name = "MLflow run"

    def url_for(self, ti_key: TaskInstanceKey) -> str:
        if ti_key.task_id in TRAIN_RUN_TASKS:
            return run_link(self._xcom(ti_key))
        if ti_key.task_id in OTHER_TRAIN_TASKS:
            return run_link(self._xcom(ti_key, "start_run"))
        return ""


class ModelVersionLink(_LooplineLink):
    name = "Model version"

    def url_for(self, ti_key: TaskInstanceKey) -> str:
        if ti_key.task_id not in VERSION_TASKS:
            return ""
        return version_link(self._xcom(ti_key, "register_model"))


class BentoLink(_LooplineLink):
    name = "Bento"

    def url_for(self, ti_key: TaskInstanceKey) -> str:
        if ti_key.task_id != BENTO_TASK:
            return ""
        from loopline.core.settings import get_settings

        return bento_link(self._xcom(ti_key), get_settings().service_url)


GLOBAL_LINKS = [MlflowRunLink(), ModelVersionLink(), BentoLink()]
