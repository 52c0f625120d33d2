"""Loopline's Airflow 3 plugin: the "Loopline" page in the UI's navigation, and task extra links.

- ``fastapi_apps``: the page (server-rendered HTML) and its JSON, mounted on the api-server
  under ``/loopline`` (``/loopline/`` and ``/loopline/api/overview``). Airflow does not guard
  plugin apps, so every route first checks the caller's Airflow login (the UI's session
  cookie or an ``Authorization: Bearer`` token from ``/auth/token``).
- ``external_views``: a "Loopline" entry in the navigation that shows the page inside the UI
  (an iframe at ``/plugin/loopline``). The href is relative (no leading slash), so it follows
  the UI's base URL behind a proxy.
- ``global_operator_extra_links``: "MLflow run", "Model version" and "Bento" on the train
  DAG's tasks (see ``loopline.ops.links``).

The logic lives in ``loopline.ops.ui`` and ``loopline.ops.links``; this file only wires them in.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, Request

from loopline.ops.links import GLOBAL_LINKS
from loopline.ops.ui import create_app

URL_PREFIX = "/loopline"


async def require_airflow_login(request: Request) -> None:
    """Airflow's own check (401 without a valid login, 403 without access to the UI), imported on first use.

    Imported lazily: the api-server's security module is heavy, and plugins are also loaded by
    the scheduler, the dag-processor and task runners, which never serve this page.
    """
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user, requires_access_view

    user = await get_user(request, None, await bearer_scheme(request))
    requires_access_view(AccessView.WEBSITE)(request, user)


class LooplinePlugin(AirflowPlugin):
    name = "loopline"
    fastapi_apps = [
        {
            "app": create_app(dependencies=[Depends(require_airflow_login)]),
            "url_prefix": URL_PREFIX,
            "name": "Loopline",
        }
    ]
    external_views = [
        {
            "name": "Loopline",
            "href": URL_PREFIX.lstrip("/") + "/",
            "destination": "nav",
            "url_route": "loopline",
            "nav_top_level": True,
        }
    ]
    global_operator_extra_links = GLOBAL_LINKS
