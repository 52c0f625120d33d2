"""The Loopline page in the Airflow UI: what the line holds, gathered from its stores, rendered as HTML.

One page per deployment, one section per model (with a picker at the top): every model
folder ``dag_factory.discover()`` finds, a broken one named with its error, plus any model the
stores still know of. Per model: its DAGs, registered versions with their aliases
(champion / challenger / previous) and quality-gate decisions (MLflow registry), the
current traffic split (and a shadow version, which scores a copy and answers nothing) and
its history as a small inline SVG chart, recent rollouts with every step's gate verdicts (the
shadow phase's disagreement and score shift first) and the audit trail (serving state store),
and recent drift verdicts with their DAG runs and reports (monitoring store, MLflow); and a form that
traces one decision from its request id (``trace``: what ``loopline trace`` prints, on a page of its own).
Above the models, one row per feature view of the feature repo: owner, schedule (its pipeline DAG),
last materialisation, freshness and the models that use it (``loopline.ops.feature_views``, the same
rows ``loopline features`` prints).

On the page, DAG runs link to the Airflow UI (``/dags/<dag_id>/runs/<run_id>``), stored outcomes
read as text (a route is "v2 + v3 at 10%", not a Python dict) and every time is shown one way,
in UTC ("2026-12-02 14:05 UTC"); the JSON keeps ISO 8601 timestamps.

Plain functions returning dataclasses, plus a small FastAPI app (server-rendered HTML and
the same data as JSON under ``api/overview``); no Airflow here, so all of it is tested
without an Airflow server. The plugin (``plugins/loopline_plugin.py``) mounts the app under
``/loopline`` with Airflow's own authentication in front of it.

Every section is read on its own: a store that cannot be read (no MLflow database yet, the
drift table not created yet) shows as a note in that section, never as a broken page.
"""

from __future__ import annotations

import ast
import html
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from loopline.core.clock import as_utc
from loopline.core.dag_factory import STATIONS, dag_id
from loopline.core.errors import LooplineError
from loopline.core.settings import Settings, get_settings
from loopline.ops.feature_views import FeatureViews, gather_feature_views
from loopline.ops.links import mlflow_model_url, mlflow_run_url, mlflow_ui_url, mlflow_version_url

log = logging.getLogger(__name__)

ROLE_ALIASES = ("champion", "challenger", "previous")
GATE_TAG = "loopline.gate_decision"
GATE_CHAMPION_TAG = "loopline.gate_champion_version"
DATA_VERSION_TAG = "loopline.data_version"
BENTO_TAG = "loopline.bento_tag"


@dataclass(frozen=True)
class VersionRow:
    """One registered model version, as the page shows it."""

    version: str
    aliases: list[str]
    gate_decision: str
    gate_champion_version: str
    data_version: str
    bento_tag: str
    run_id: str
    status: str
    created: str
    url: str
    run_url: str


@dataclass(frozen=True)
class ModelOverview:
    name: str
    url: str
    aliases: dict[str, str]
    versions: list[VersionRow]
    route: dict[str, Any]
    rollouts: list[dict[str, Any]]
    drift: list[dict[str, Any]]
    audit: list[dict[str, Any]]
    errors: list[str] = field(default_factory=list)
    spec_error: str = ""  # the folder's spec does not load: what to fix (its DAGs are not generated)
    has_folder: bool = True  # False: known only to the stores (a folder since removed)
    traffic_history: list[dict[str, Any]] = field(default_factory=list)  # route after each change, oldest first
    dags: dict[str, str] = field(default_factory=dict)  # station -> DAG id (only for a folder that loads)


@dataclass(frozen=True)
class Overview:
    generated_at: str
    mlflow_ui_url: str
    models: list[ModelOverview]
    errors: list[str] = field(default_factory=list)
    features: FeatureViews | None = None  # the feature repo's views, their freshness and users (None: not read)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["features"] = self.features.to_dict() if self.features is not None else None
        return out


# --- gathering ------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str:
    return as_utc(value).isoformat(timespec="seconds") if value is not None else ""


def _from_millis(millis: int | None) -> str:
    return "" if not millis else _iso(datetime.fromtimestamp(millis / 1000, tz=UTC))


@lru_cache(maxsize=8)
def _serving_state(url: str):
    from loopline.core.serving_state import ServingState

    return ServingState(url)


@lru_cache(maxsize=8)
def _monitoring_state(url: str):
    from loopline.monitoring.monitoring_state import MonitoringState

    return MonitoringState(url)


def spec_models(settings: Settings) -> list[str]:
    """Models with a spec folder (``models/<name>/spec.yaml``): known before anything is trained."""
    good, broken = model_folders(settings)
    return sorted([*good, *broken])


def model_folders(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """(folders whose spec loads, folder -> error for those whose spec does not), as the DAG files see them."""
    from loopline.core.dag_factory import discover

    good, broken = discover(settings.models_dir)
    return [spec.name for spec in good], broken


def registered_models(client) -> list[str]:
    return sorted(m.name for m in client.search_registered_models())


def routed_models(state_db_uri: str) -> list[str]:
    from sqlalchemy import select

    from loopline.core.serving_state import routes

    with _serving_state(state_db_uri).engine.connect() as conn:
        return sorted(conn.execute(select(routes.c.model)).scalars().all())


def registry_versions(client, model: str) -> tuple[dict[str, str], list[VersionRow]]:
    """(alias -> version, versions newest first) of one registered model; empty if it is not registered."""
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(model)
    except MlflowException:  # not registered yet
        return {}, []
    aliases = {alias: str(version) for alias, version in (registered.aliases or {}).items()}
    by_version: dict[str, list[str]] = {}
    for alias, version in sorted(aliases.items()):
        by_version.setdefault(version, []).append(alias)
    experiment_by_run: dict[str, str] = {}
    rows = []
    for mv in sorted(client.search_model_versions(f"name = '{model}'"), key=lambda v: int(v.version), reverse=True):
        tags = mv.tags or {}
        run_url = ""
        if mv.run_id:
            if mv.run_id not in experiment_by_run:
                try:
                    experiment_by_run[mv.run_id] = client.get_run(mv.run_id).info.experiment_id
                except MlflowException:  # run deleted
                    experiment_by_run[mv.run_id] = ""
            if experiment_by_run[mv.run_id]:
                run_url = mlflow_run_url(experiment_by_run[mv.run_id], mv.run_id)
        rows.append(
            VersionRow(
                version=str(mv.version),
                aliases=by_version.get(str(mv.version), []),
                gate_decision=tags.get(GATE_TAG, ""),
                gate_champion_version=tags.get(GATE_CHAMPION_TAG, ""),
                data_version=tags.get(DATA_VERSION_TAG, ""),
                bento_tag=tags.get(BENTO_TAG, ""),
                run_id=mv.run_id or "",
                status=str(mv.status or ""),
                created=_from_millis(mv.creation_timestamp),
                url=mlflow_version_url(model, str(mv.version)),
                run_url=run_url,
            )
        )
    return aliases, rows


def traffic(state_db_uri: str, model: str) -> dict[str, Any]:
    """The stored route, plus each version's share of traffic (what the service does with it)."""
    route = _serving_state(state_db_uri).route(model).to_dict()
    split: dict[str, float] = {}
    if route["champion_version"]:
        split[str(route["champion_version"])] = round(1.0 - float(route["canary_weight"] or 0.0), 6)
    if route["canary_version"]:
        split[str(route["canary_version"])] = round(float(route["canary_weight"] or 0.0), 6)
    return {**route, "split": split}


def rollouts(state_db_uri: str, model: str, limit: int = 10) -> list[dict[str, Any]]:
    """Recent rollouts, newest first (the running one, if any, is the newest), with their gate results."""
    return [r.to_dict() for r in _serving_state(state_db_uri).rollouts(model, limit)]


def audit_trail(state_db_uri: str, model: str, limit: int = 50) -> list[dict[str, Any]]:
    out = []
    for record in _serving_state(state_db_uri).trail(model, limit):
        out.append({**asdict(record), "at": _iso(record.at), "line": record.line()})
    return out


def drift_verdicts(state_db_uri: str, model: str, limit: int = 20) -> list[dict[str, Any]]:
    """Recent drift checks, newest first; [] while the monitoring table is empty."""
    out = []
    for check in _monitoring_state(state_db_uri).latest(model, limit):
        row = check.to_dict()
        row["at"] = _iso(check.at)
        row["dag_id"] = dag_id(model, "drift") if check.dag_run else ""  # the drift DAG recorded its run id
        row["report_url"] = ""
        out.append(row)
    return out


def traffic_history(trail: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The route after each change, oldest first, from the audit trail (newest first): what the chart draws."""
    points = []
    for record in reversed(trail):
        after = record.get("after") or {}
        points.append(
            {
                "at": record.get("at", ""),
                "champion_version": after.get("champion_version"),
                "canary_version": after.get("canary_version"),
                "canary_weight": float(after.get("canary_weight") or 0.0),
                "action": record.get("action", ""),
            }
        )
    return points


_RUNS_URI = re.compile(r"^runs:/([0-9A-Za-z_-]+)/(.+)$")


def artifact_url(client, uri: str | None, experiments: dict[str, str]) -> str:
    """The MLflow UI page of a ``runs:/<run id>/<path>`` artifact (a drift report); "" if it cannot be found."""
    from mlflow.exceptions import MlflowException

    match = _RUNS_URI.match(uri or "")
    if client is None or match is None:
        return ""
    run_id, path = match.groups()
    if run_id not in experiments:
        try:
            experiments[run_id] = client.get_run(run_id).info.experiment_id
        except MlflowException:  # run deleted
            experiments[run_id] = ""
    if not experiments[run_id]:
        return ""
    return f"{mlflow_run_url(experiments[run_id], run_id)}/artifacts/{quote(path)}"


def with_report_links(client, checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    experiments: dict[str, str] = {}
    return [{**check, "report_url": artifact_url(client, check.get("report_uri"), experiments)} for check in checks]


def _section(errors: list[str], name: str, read: Callable[[], Any], empty: Any) -> Any:
    try:
        return read()
    except Exception as err:  # one unreadable store must not take the whole page down
        log.warning("Loopline page: %s could not be read", name, exc_info=True)
        errors.append(f"{name}: {type(err).__name__}: {err}")
        return empty


def gather_model(
    model: str,
    settings: Settings,
    client=None,
    *,
    audit_limit: int = 50,
    drift_limit: int = 20,
    history_limit: int = 200,
    spec_error: str = "",
    has_folder: bool = True,
) -> ModelOverview:
    """One model's section; ``spec_error`` / ``has_folder`` say what ``discover()`` found for its folder."""
    errors: list[str] = []
    aliases, versions = ({}, [])
    if client is not None:
        aliases, versions = _section(errors, "model registry", lambda: registry_versions(client, model), ({}, []))
    url = settings.state_db_uri
    trail = _section(errors, "audit trail", lambda: audit_trail(url, model, max(audit_limit, history_limit)), [])
    drift = _section(errors, "drift checks", lambda: drift_verdicts(url, model, drift_limit), [])
    if drift and client is not None:
        drift = _section(errors, "drift reports", lambda: with_report_links(client, drift), drift)
    loads = has_folder and not spec_error
    return ModelOverview(
        name=model,
        url=mlflow_model_url(model),
        aliases=aliases,
        versions=versions,
        route=_section(errors, "traffic", lambda: traffic(url, model), {}),
        rollouts=_section(errors, "rollouts", lambda: rollouts(url, model), []),
        drift=drift,
        audit=trail[:audit_limit],
        errors=errors,
        spec_error=spec_error,
        has_folder=has_folder,
        traffic_history=traffic_history(trail[:history_limit]),
        dags={station: dag_id(model, station) for station in STATIONS} if loads else {},
    )


def gather(settings: Settings, models: Sequence[str] | None = None, client=None) -> Overview:
    """Everything the page shows, for the given models (default: every model the line knows of).

    Every model folder ``discover()`` finds gets a section, a broken one with its error; so does
    a model only the registry or the serving state still knows (its folder was removed).
    """
    errors: list[str] = []
    if client is None:
        from loopline.core import tracking

        client = _section(errors, "MLflow", lambda: tracking.client_for(settings), None)
    found = _section(errors, "model folders", lambda: model_folders(settings), None)
    good, broken = found if found is not None else ([], {})
    folders = {*good, *broken}
    if models is None:
        names = set(folders)
        if client is not None:
            names |= set(_section(errors, "model registry", lambda: registered_models(client), []))
        names |= set(_section(errors, "serving state", lambda: routed_models(settings.state_db_uri), []))
        models = sorted(names)
    features = _section(errors, "feature views", lambda: gather_feature_views(settings), None)
    return Overview(
        generated_at=_iso(datetime.now(UTC)),
        mlflow_ui_url=mlflow_ui_url(),
        models=[
            gather_model(
                name, settings, client, spec_error=broken.get(name, ""), has_folder=found is None or name in folders
            )
            for name in models
        ],
        errors=errors,
        features=features,
    )


# --- HTML -----------------------------------------------------------------------------------------

# The page is served at <airflow>/loopline/, so the Airflow UI's own pages are one level up; relative,
# so the links follow the UI's base URL behind a proxy.
AIRFLOW_ROOT = "../"


def esc(value: Any) -> str:
    """Every value on the page goes through here: text and attribute safe."""
    return html.escape("" if value is None else str(value), quote=True)


def when(value: Any) -> str:
    """One time format on the page: UTC, minutes, "2026-12-02 14:05 UTC" (from a datetime or an ISO string)."""
    if value in (None, ""):
        return ""
    at = value
    if isinstance(value, str):
        try:
            at = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    if not isinstance(at, datetime):
        return str(value)
    return f"{as_utc(at):%Y-%m-%d %H:%M} UTC"


def dag_run_url(dag_id_: str, run_id: str) -> str:
    """The Airflow 3 UI page of one DAG run (``/dags/<dag_id>/runs/<run_id>``), relative to this page."""
    return f"{AIRFLOW_ROOT}dags/{quote(dag_id_, safe='')}/runs/{quote(run_id, safe='')}"


def dag_url(dag_id_: str) -> str:
    return f"{AIRFLOW_ROOT}dags/{quote(dag_id_, safe='')}"


def _pct(value: Any) -> str:
    try:
        return f"{float(value):.0%}"
    except (TypeError, ValueError):
        return esc(value)


def _link(url: str, text: Any) -> str:
    if not url:
        return esc(text)
    return f'<a href="{esc(url)}" target="_blank" rel="noopener">{esc(text)}</a>'


def _airflow_link(url: str, text: Any) -> str:
    """A link to a page of the Airflow UI: opened in the UI itself (the top window), not a new tab."""
    return f'<a class="airflow" href="{esc(url)}" target="_top">{esc(text)}</a>'


def actor_html(actor: Any) -> str:
    """Who made a change: a DAG run (``dag:<dag_id>/<run_id>``, see ``run_actor()``) links to that run."""
    text = "" if actor is None else str(actor)
    if text.startswith("dag:") and "/" in text:
        dag, run = text[len("dag:") :].split("/", 1)
        if dag and run:
            return _airflow_link(dag_run_url(dag, run), f"{dag} / {run}")
    return esc(text or "-")


def route_text(route: dict[str, Any]) -> str:
    """A stored route as people say it: "v2", "v2 + v3 at 10%", "nothing"."""
    if not route or not route.get("champion_version"):
        return "nothing"
    canary = (
        f" + v{route['canary_version']} at {_pct(route.get('canary_weight') or 0.0)}"
        if route.get("canary_version")
        else ""
    )
    shadow = f" + shadow v{route['shadow_version']}" if route.get("shadow_version") else ""
    return f"v{route['champion_version']}{canary}{shadow}"


def _value_text(value: Any) -> str:
    if isinstance(value, dict):
        if "champion_version" in value or "canary_version" in value or "shadow_version" in value:
            return route_text(value)
        return ", ".join(f"{k.replace('_', ' ')} {_value_text(v)}" for k, v in value.items() if v not in (None, ""))
    if isinstance(value, (list, tuple)):
        return ", ".join(_value_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def readable(text: Any) -> str:
    """Stored outcome text with any embedded Python dict or list (a route, counters) spelled out as words."""
    if isinstance(text, (dict, list, tuple)):
        return _value_text(text)
    text = "" if text is None else str(text)
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        return text
    try:
        value = ast.literal_eval(text[start:].strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text  # brackets that are not a literal: "[error_rate=pass]" stays as it is
    if not isinstance(value, (dict, list, tuple)):
        return text
    return f"{text[:start]}{_value_text(value)}".strip()


def _table(headers: Sequence[str], rows: list[list[str]], empty: str, css: str = "") -> str:
    if not rows:
        return f'<p class="empty">{esc(empty)}</p>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{esc(css)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _badges(aliases: list[str]) -> str:
    return " ".join(f'<span class="badge alias-{esc(a)}">{esc(a)}</span>' for a in aliases) or "-"


def _versions_html(model: ModelOverview) -> str:
    rows = [
        [
            _link(v.url, f"v{v.version}"),
            _badges(v.aliases),
            f'<span class="gate gate-{esc(v.gate_decision or "none")}">{esc(v.gate_decision or "-")}</span>'
            + (f" vs v{esc(v.gate_champion_version)}" if v.gate_champion_version not in ("", "none") else ""),
            esc(v.data_version or "-"),
            esc(v.bento_tag or "-"),
            _link(v.run_url, v.run_id[:12] or "-"),
            esc(when(v.created)),
        ]
        for v in model.versions
    ]
    headers = ["version", "aliases", "gate decision", "data", "bento", "MLflow run", "registered"]
    return _table(headers, rows, "No registered versions yet.", "versions")


def _traffic_html(route: dict[str, Any]) -> str:
    if not route or not route.get("champion_version"):
        return '<p class="empty">Nothing serves traffic yet.</p>'
    bars = []
    for version, share in route.get("split", {}).items():
        role = "champion" if version == str(route["champion_version"]) else "canary"
        bars.append(
            f'<div class="share {role}" style="flex: {max(float(share), 0.0001):.4f}">'
            f"{esc(role)} v{esc(version)} {_pct(share)}</div>"
        )
    detail = (
        f'<p class="route">champion <b>v{esc(route["champion_version"])}</b>'
        + (
            f", canary <b>v{esc(route['canary_version'])}</b> at <b>{_pct(route['canary_weight'])}</b>"
            if route.get("canary_version")
            else ", no canary"
        )
        + f" &middot; mode {esc(route.get('mode'))} &middot; revision {esc(route.get('revision'))}</p>"
    )
    if route.get("shadow_version"):
        detail += (
            f'<p class="route shadow"><b>shadow v{esc(route["shadow_version"])} (scores a copy, answers nothing)</b>: '
            "the champion answers every request</p>"
        )
    return f'<div class="split">{"".join(bars)}</div>{detail}'


CHART_WIDTH, CHART_HEIGHT, CHART_LEFT, CHART_BOTTOM = 640, 110, 38, 18
CHAMPION_FILL, CANARY_FILL = "#9ae6b4", "#fbd38d"  # as the split bar above it; inline, so the SVG stands alone


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return as_utc(value)
    try:
        return as_utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except ValueError:
        return None


def traffic_chart_svg(history: Sequence[dict[str, Any]], now: Any) -> str:
    """The canary's share over time as an inline SVG step chart (no script, no library).

    One band per stretch between two changes of the route: the champion's share from the
    bottom (green), the canary's above it (orange), each with a tooltip; the version
    serving is written in the band when it is wide enough. Time runs from the first
    recorded change to ``now`` (the page's "as of").
    """
    points = [(t, p) for p in history if (t := _parse_time(p.get("at"))) is not None]
    if not points:
        return '<p class="empty">No changes to traffic recorded yet.</p>'
    start = points[0][0]
    end = max(_parse_time(now) or points[-1][0], points[-1][0])
    span = max((end - start).total_seconds(), 1.0)
    plot_w, plot_h = CHART_WIDTH - CHART_LEFT - 4, CHART_HEIGHT - CHART_BOTTOM - 4
    top = 4

    def x(at: datetime) -> float:
        return CHART_LEFT + (at - start).total_seconds() / span * plot_w

    shapes = []
    for i, (at, point) in enumerate(points):
        until = points[i + 1][0] if i + 1 < len(points) else end
        x0, x1 = x(at), max(x(until), x(at) + 0.5)
        if not point.get("champion_version"):
            continue
        weight = min(max(float(point.get("canary_weight") or 0.0), 0.0), 1.0)
        canary_h = plot_h * weight
        period = f"{when(at)} to {when(until)}"
        tip = f"{period}: {route_text(point)}"
        shapes.append(
            f'<rect class="champion" fill="{CHAMPION_FILL}" x="{x0:.1f}" y="{top + canary_h:.1f}" '
            f'width="{x1 - x0:.1f}" height="{plot_h - canary_h:.1f}"><title>{esc(tip)}</title></rect>'
        )
        if canary_h > 0:
            shapes.append(
                f'<rect class="canary" fill="{CANARY_FILL}" x="{x0:.1f}" y="{top:.1f}" width="{x1 - x0:.1f}" '
                f'height="{canary_h:.1f}"><title>{esc(tip)}</title></rect>'
            )
        # The band's route in words where it fits (about 5.5 px a character), else the champion alone.
        label = route_text(point)
        if len(label) * 5.5 + 6 > x1 - x0:
            label = f"v{point['champion_version']}"
        if len(label) * 5.5 + 6 <= x1 - x0:
            shapes.append(
                f'<text class="label" fill="#22543d" x="{x0 + 3:.1f}" y="{top + plot_h - 4:.1f}">{esc(label)}</text>'
            )
    axis_y = top + plot_h
    right, bottom = CHART_LEFT + plot_w, CHART_HEIGHT - 4
    axis = (
        f'<line class="axis" stroke="#a0aec0" x1="{CHART_LEFT}" y1="{axis_y}" x2="{right}" y2="{axis_y}"/>'
        f'<text class="tick" fill="#718096" x="{CHART_LEFT - 4}" y="{top + 8}" text-anchor="end">100%</text>'
        f'<text class="tick" fill="#718096" x="{CHART_LEFT - 4}" y="{axis_y}" text-anchor="end">0%</text>'
        f'<text class="tick" fill="#718096" x="{CHART_LEFT}" y="{bottom}">{esc(when(start))}</text>'
        f'<text class="tick" fill="#718096" x="{right}" y="{bottom}" text-anchor="end">{esc(when(end))}</text>'
    )
    title = f"Canary share of traffic, {when(start)} to {when(end)}, {len(points)} changes"
    return (
        f'<svg class="traffic-chart" role="img" font-family="sans-serif" font-size="10" '
        f'viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" '
        f'width="{CHART_WIDTH}" height="{CHART_HEIGHT}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{esc(title)}</title>{''.join(shapes)}{axis}</svg>"
        '<p class="meta legend"><span class="key champion"></span> champion '
        '<span class="key canary"></span> canary (share of applicants)</p>'
    )


def shadow_results(result: dict[str, Any]) -> str:
    """A shadow verdict in a few words: its decision disagreement and score shift against the champion."""
    gates = {g.get("name"): g for g in result.get("gates") or [] if isinstance(g, dict)}
    parts = []
    disagreement = gates.get("disagreement") or {}
    if disagreement.get("canary") is not None and disagreement.get("status") != "pending":
        limit = disagreement.get("limit")
        parts.append(
            f"disagreement {float(disagreement['canary']):.1%}"
            + (f" (limit {float(limit):.1%})" if limit is not None else "")
        )
    psi = gates.get("score_psi") or {}
    if psi.get("canary") is not None:
        parts.append(
            f"score shift PSI {float(psi['canary']):.3f} beyond noise (limit {float(psi.get('limit') or 0):.3f})"
        )
    return ", ".join(parts) or "not judged"


def _gate_results_html(results: list[dict[str, Any]]) -> str:
    if not results:
        return "-"
    items = []
    for result in results:
        gates = ", ".join(
            f'<span class="gate gate-{esc(g.get("status"))}">{esc(g.get("name"))}={esc(g.get("status"))}</span>'
            + (f" ({esc(readable(g.get('detail')))})" if g.get("detail") else "")
            for g in result.get("gates") or []
            if isinstance(g, dict)
        )
        shadow = result.get("phase") == "shadow"
        what = f"shadow ({esc(shadow_results(result))})" if shadow else f"step {_pct(result.get('step'))}"
        items.append(
            f'<li>{what}: <span class="gate gate-{esc(result.get("status"))}">'
            f"{esc(str(result.get('status', '')).upper())}</span> {esc(readable(result.get('reason', '')))}"
            + (f" [{gates}]" if gates else "")
            + "</li>"
        )
    return f'<ul class="gates">{"".join(items)}</ul>'


def _rollouts_html(items: list[dict[str, Any]]) -> str:
    rows = [
        [
            f"#{esc(r.get('id'))}",
            f"v{esc(r.get('candidate_version'))} vs v{esc(r.get('champion_version'))}",
            esc(r.get("mode")),
            f'<span class="status status-{esc(r.get("status"))}">{esc(r.get("status"))}</span>',
            "shadow" if r.get("phase") == "shadow" else _pct(r.get("step")),
            esc(when(r.get("started_at"))),
            esc(when(r.get("finished_at"))),
            actor_html(r.get("trigger")),
            _gate_results_html(r.get("gate_results") or []),
            esc(readable(r.get("outcome")) or "-"),
        ]
        for r in items
    ]
    headers = ["id", "candidate", "mode", "status", "step", "started", "finished", "by", "gate results", "outcome"]
    return _table(headers, rows, "No rollouts yet.", "rollouts")


def _number(value: Any, fmt: str) -> str:
    return "-" if value is None else esc(format(value, fmt))


def _moved_inputs(features: Any) -> str:
    """'age (PSI 0.31, 12%), ...' for the drifted inputs of a check, most important first; '-' for none."""
    moved = sorted((f for f in features or [] if f.get("drifted")), key=lambda f: -(f.get("importance") or 0))

    def size(f: dict) -> str:
        return f"shift {f['shift']:.2f} SD" if f.get("shift") is not None else f"PSI {f['psi']:.2f}"

    return ", ".join(f"{f['name']} ({size(f)}, {f['importance']:.0%})" for f in moved) or "-"


def _estimated_vs_realised(impact: Any) -> str:
    """'AUC 0.712 est. (0.741 unseen) / 0.705 live': the label-free estimate beside what labels said."""
    if not impact:
        return "-"
    metric = str(impact.get("metric", "")).upper()
    est, ref, real = impact.get("estimated"), impact.get("reference"), impact.get("realised")
    text = f"{metric} {est:.3f} est." if est is not None else f"{metric} est. n/a"
    if ref is not None:
        text += f" ({ref:.3f} unseen)"
    window, error = impact.get("window_realised"), impact.get("estimate_error")
    if window is not None:  # this window's own labels have arrived
        text += f" / {window:.3f} realised on {impact.get('window_realised_n')} labels"
        text += f" (error {error:+.3f})" if error is not None else ""
    else:
        text += f" / {real:.3f} live (all labels so far)" if real is not None else " / no labels yet"
    mae = (impact.get("extra") or {}).get("mae")
    if mae is not None:  # a regressor's estimated MAE (checks since it was estimated), in the target's units
        text += f"; MAE {mae:.3g} est."
    if impact.get("calibration"):
        text += f"; calibration: {impact['calibration']}"
    missing = impact.get("missing")
    if missing:  # inputs missing more often than on the unseen rows: what that cost there, re-scored
        inputs = ", ".join(f"{name} {w:.0%} missing" for name, (_, w) in missing["shares"].items())
        text += f"; with {inputs}: {metric} {missing['quality']:.3f} (re-scored on the unseen rows)"
    moved = [m.get("text") for m in impact.get("mix") or [] if m.get("moved")]
    return text + (f"; {'; '.join(moved)}" if moved else "")


def _refused(impact: Any) -> str:
    """'20% of rows refused (...): region 'central' not allowed (20% of rows)' and unknown levels; '-' for none."""
    refused = (impact or {}).get("refusals") or {}
    text = refused.get("headline") or "-"
    if refused.get("over"):
        text = ("ALERTED: " if refused.get("alerted") else "over the limit: ") + text
    return text


def _drift_html(items: list[dict[str, Any]]) -> str:
    rows = [
        [
            esc(when(d.get("at"))),
            f"v{esc(d.get('champion_version'))}",
            f'<span class="verdict verdict-{esc(d.get("verdict"))}">{esc(d.get("verdict"))}</span>',
            esc(d.get("n_rows")),
            esc(_moved_inputs(d.get("features"))),
            esc(_estimated_vs_realised(d.get("impact"))),
            esc(_refused(d.get("impact"))),
            _number(d.get("score_psi"), ".3f"),
            ("ALERTED" if d.get("alerted") else "no"),
            ("TRIGGERED" if d.get("triggered") else "no")
            + (f": {esc(readable(d.get('trigger_reason')))}" if d.get("trigger_reason") else ""),
            (_airflow_link(dag_run_url(d["dag_id"], d["dag_run"]), d["dag_run"]) if d.get("dag_id") else "-"),
            (_link(d["report_url"], "report") if d.get("report_url") else esc(d.get("report_uri") or "-")),
        ]
        for d in items
    ]
    headers = ["checked", "champion", "verdict", "rows", "inputs that moved (PSI, importance)"]
    headers += ["quality: estimated / realised", "refused / unknown levels", "score PSI", "alert", "retrain"]
    headers += ["DAG run", "report"]
    return _table(headers, rows, "No drift checks recorded yet.", "drift")


def _estimate_history_html(drift: list[dict[str, Any]]) -> str:
    """Per window: the label-free estimate, what its labels later showed, the error; the MAE over the last ones."""
    from loopline.monitoring.estimate_error import history
    from loopline.monitoring.report_page import history_html

    return history_html(history(drift)) or '<p class="empty">No estimates recorded yet.</p>'


def _audit_html(items: list[dict[str, Any]]) -> str:
    rows = [
        [
            f"#{esc(a.get('id'))}",
            esc(when(a.get("at"))),
            esc(a.get("action")),
            esc(route_text(a.get("before") or {})),
            esc(route_text(a.get("after") or {})),
            actor_html(a.get("actor")),
            esc(readable(a.get("reason"))),
        ]
        for a in items
    ]
    return _table(["id", "when", "action", "from", "to", "by", "why"], rows, "No changes recorded yet.", "audit")


def _feature_views_html(found: FeatureViews | None, shown: Sequence[str]) -> str:
    """One row per feature view: owner, schedule, last materialisation, freshness, the models that use it."""
    from loopline.ops.feature_views import when_text

    if found is None:
        return ""
    rows = []
    for v in found.views:
        users = ", ".join(
            f'<a href="#model-{esc(m)}">{esc(m)}</a>' if m in shown else esc(m) for m in v.used_by
        )  # fmt: skip
        state = "offline" if not v.online else ("stale" if v.stale or v.store_error else "fresh")
        rows.append(
            [
                f'<b>{esc(v.name)}</b><br><span class="meta">{esc(", ".join(v.features))}</span>',
                esc(v.owner),
                f"{esc(v.schedule)} &middot; {_airflow_link(dag_url(v.dag), v.dag)}",
                esc(when_text(v.last_materialized)) if v.online else "&ndash;",
                f'<span class="fresh-{state}" title="{esc(v.store_error)}">{esc(v.freshness)}</span>',
                users or "&ndash;",
            ]
        )
    notes = [*(f"REFUSED {r}" for r in found.refused), *(f"MODEL {p}" for p in found.problems), *found.errors]
    errors = "".join(f"<li>{esc(n)}</li>" for n in notes)
    table = _table(
        ["View", "Owner", "Schedule", "Last materialisation", "Freshness", "Used by"],
        rows,
        "No feature views: declare them in feature_repo/ (docs/features.md).",
        "feature-views",
    )
    return (
        f'<section id="feature-views"><h2>Feature views ({len(found.views)})</h2>'
        + (f'<ul class="errors">{errors}</ul>' if errors else "")
        + table
        + "</section>"
    )


def _dags_html(model: ModelOverview) -> str:
    if not model.dags:
        return ""
    links = " &middot; ".join(_airflow_link(dag_url(d), station) for station, d in model.dags.items())
    return f'<p class="dags">DAGs: {links}</p>'


def _picker_html(models: Sequence[ModelOverview]) -> str:
    """Every model at the top of the page: a jump to its section, broken folders marked."""
    if len(models) < 2 and not any(m.spec_error for m in models):
        return ""
    items = []
    for m in models:
        state = "broken" if m.spec_error else ("no-folder" if not m.has_folder else "ok")
        note = {"broken": " (spec error)", "no-folder": " (no folder)", "ok": ""}[state]
        items.append(f'<li class="{state}"><a href="#model-{esc(m.name)}">{esc(m.name)}</a>{esc(note)}</li>')
    return f'<nav class="picker"><b>Models ({len(models)}):</b><ul>{"".join(items)}</ul></nav>'


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1rem 1.5rem; color: #1a202c; }
h1 { font-size: 1.4rem; margin: 0 0 .3rem; } h2 { font-size: 1.2rem; border-bottom: 1px solid #cbd5e0; }
h3 { font-size: 1rem; margin: 1.2rem 0 .4rem; } .meta, .empty { color: #718096; font-size: .85rem; }
table { border-collapse: collapse; width: 100%; font-size: .85rem; margin-bottom: .5rem; }
th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid #e2e8f0; vertical-align: top; }
th { background: #f7fafc; } ul.gates { margin: 0; padding-left: 1rem; }
.badge { border-radius: .6rem; padding: 0 .5rem; background: #e2e8f0; font-size: .8rem; }
.alias-champion { background: #c6f6d5; } .alias-challenger { background: #feebc8; }
.alias-previous { background: #e9d8fd; }
.gate-pass, .gate-champion, .gate-challenger, .status-succeeded, .verdict-stable { color: #276749; }
.verdict-feature_drift, .verdict-output_shift { color: #b7791f; font-weight: 600; }
.gate-fail, .gate-rejected, .status-failed { color: #c53030; font-weight: 600; }
.verdict-performance_risk, .verdict-concept_drift { color: #c53030; font-weight: 600; }
.status-running { color: #2b6cb0; font-weight: 600; }
.split { display: flex; max-width: 40rem; border-radius: .3rem; overflow: hidden; font-size: .8rem; }
.share { padding: .3rem .5rem; white-space: nowrap; } .share.champion { background: #9ae6b4; }
.share.canary { background: #fbd38d; } .errors, .spec-error { color: #c53030; font-size: .85rem; }
.spec-error { white-space: pre-wrap; background: #fff5f5; padding: .4rem .6rem; border-radius: .3rem; }
.traffic-chart { max-width: 100%; height: auto; font-size: 10px; }
.traffic-chart rect { stroke: #fff; stroke-width: .6; }
.legend .key { display: inline-block; width: .8rem; height: .8rem; }
.key.champion { background: #9ae6b4; } .key.canary { background: #fbd38d; }
nav.picker { font-size: .85rem; margin: .5rem 0 1rem; } nav.picker ul { display: inline; padding: 0; }
nav.picker li { display: inline; margin-right: .8rem; } nav.picker li.broken a { color: #c53030; }
.dags { font-size: .85rem; }
.fresh-fresh { color: #276749; } .fresh-stale { color: #c53030; font-weight: 600; } .fresh-offline { color: #718096; }
"""


# Inside the Airflow UI the page sits in an iframe sandboxed without "allow-popups" or "allow-top-navigation",
# where links that open a new tab or the UI's own pages are blocked. Same-origin frames may reach their parent:
# open such links from the parent document (target _blank: a new tab; target _top: the UI itself).
FRAMED_LINKS_JS = """
document.addEventListener("click", function (event) {
  var link = event.target.closest && event.target.closest("a[target=_blank], a[target=_top]");
  if (!link || window.top === window) return;
  try {
    var proxy = window.top.document.createElement("a");
    proxy.href = link.href;
    if (link.target === "_blank") { proxy.target = "_blank"; proxy.rel = "noopener noreferrer"; }
    window.top.document.body.appendChild(proxy); proxy.click(); proxy.remove();
    event.preventDefault();
  } catch (err) { /* not same-origin: leave the link alone */ }
});
"""


def _model_html(model: ModelOverview, now: str) -> str:
    errors = "".join(f"<li>{esc(e)}</li>" for e in model.errors)
    aliases = ", ".join(f"{esc(a)} = v{esc(v)}" for a, v in sorted(model.aliases.items())) or "none"
    notes = ""
    if model.spec_error:
        notes = (
            f'<p class="spec-error"><b>models/{esc(model.name)}: the spec does not load, so this model has no '
            f"DAGs.</b>\n{esc(model.spec_error)}</p>"
        )
    elif not model.has_folder:
        notes = f'<p class="meta">No folder models/{esc(model.name)}/ (any more): only the stores know it.</p>'
    return (
        f'<section class="model" id="model-{esc(model.name)}">'
        f"<h2>{_link(model.url, model.name)}</h2>"
        + notes
        + _dags_html(model)
        + (f'<ul class="errors">{errors}</ul>' if errors else "")
        + f"<h3>Traffic</h3>{_traffic_html(model.route)}"
        f"<h3>Traffic over time</h3>{traffic_chart_svg(model.traffic_history, now)}"
        f'<h3>Registered versions</h3><p class="meta">aliases: {aliases}</p>{_versions_html(model)}'
        f"<h3>Rollouts</h3>{_rollouts_html(model.rollouts)}"
        f"<h3>Drift checks</h3>{_drift_html(model.drift)}"
        f"<h3>Estimated vs realised quality</h3>{_estimate_history_html(model.drift)}"
        f"<h3>Audit trail</h3>{_audit_html(model.audit)}"
        f"<h3>Trace one decision</h3>{_trace_form_html(model.name)}"
        "</section>"
    )


def _trace_form_html(model: str, request_id: str = "") -> str:
    """A request id in, ``trace`` out: why this answer, from which version, data and code (``loopline trace``)."""
    return (
        '<form class="trace" action="trace" method="get">'
        f'<input type="hidden" name="model" value="{esc(model)}">'
        f'<input name="request_id" size="36" placeholder="request_id of an answer" value="{esc(request_id)}">'
        ' <button type="submit">Trace</button></form>'
    )


def trace_html(model: str, request_id: str, text: str, error: bool = False) -> str:
    """The trace of one answer (or why there is none) as a page of its own, with the form for the next one."""
    css = ' class="errors"' if error else ""
    return _page(
        f"Loopline: trace {request_id}",
        f'<h1>Trace: {esc(model)}</h1><p class="meta"><a href="./">back to the Loopline page</a></p>'
        f"{_trace_form_html(model, request_id)}<pre{css}>{esc(text)}</pre>",
    )


def _page(title: str, body: str) -> str:
    """One HTML page in the plugin's style; ``body`` is markup already escaped."""
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def render_html(overview: Overview) -> str:
    sections = [_model_html(model, overview.generated_at) for model in overview.models]
    errors = "".join(f"<li>{esc(e)}</li>" for e in overview.errors)
    body = "".join(sections) or '<p class="empty">No models yet: add models/&lt;name&gt;/spec.yaml and train.</p>'
    return _page(
        "Loopline",
        "<h1>Loopline</h1>"
        f'<p class="meta">as of {esc(when(overview.generated_at))} &middot; '
        f"MLflow UI {_link(overview.mlflow_ui_url, overview.mlflow_ui_url)} &middot; "
        '<a href="api/overview">JSON</a></p>'
        + (f'<ul class="errors">{errors}</ul>' if errors else "")
        + _picker_html(overview.models)
        + _feature_views_html(overview.features, [m.name for m in overview.models])
        + body
        + f"<script>{FRAMED_LINKS_JS}</script>",
    )


# --- the app --------------------------------------------------------------------------------------


def create_app(settings_factory: Callable[[], Settings] = get_settings, dependencies: Sequence[Any] = ()):
    """The page (``/``) and its JSON (``/api/overview``); ``dependencies`` guard every route (auth)."""
    from fastapi import FastAPI, Query
    from fastapi.responses import HTMLResponse

    app = FastAPI(title="Loopline", dependencies=list(dependencies), docs_url=None, redoc_url=None, openapi_url=None)

    # Plain def: FastAPI runs these in its thread pool, so MLflow and SQLAlchemy may block.
    @app.get("/", response_class=HTMLResponse)
    def page(model: list[str] | None = Query(default=None)) -> HTMLResponse:
        return HTMLResponse(render_html(gather(settings_factory(), model or None)))

    @app.get("/api/overview")
    def overview(model: list[str] | None = Query(default=None)) -> dict[str, Any]:
        return gather(settings_factory(), model or None).to_dict()

    @app.get("/trace", response_class=HTMLResponse)
    def trace_page(model: str = Query(...), request_id: str = Query("")) -> HTMLResponse:
        """``loopline trace`` on the page: the logged inputs, answer, route then, lineage, and the re-score."""
        from loopline.ops import trace

        request_id = request_id.strip()
        if not request_id:
            return HTMLResponse(trace_html(model, "", "enter the request_id of an answer", error=True), 400)
        try:
            text = trace.trace(model, request_id, settings_factory()).text()
        except LooplineError as err:  # TraceError is one: an unknown id, a version gone
            return HTMLResponse(trace_html(model, request_id, str(err), error=True), 404)
        return HTMLResponse(trace_html(model, request_id, text))

    return app
