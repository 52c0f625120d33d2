"""The Loopline page in the Airflow UI: what the line holds, gathered from its stores, rendered as HTML.

One page per deployment, one section per model: registered versions with their aliases
(champion / challenger / previous) and quality-gate decisions (MLflow registry), the
current traffic split, recent rollouts with every step's gate verdicts and the audit trail
(serving state store), and recent drift verdicts (monitoring store).

Plain functions returning dataclasses, plus a small FastAPI app (server-rendered HTML and
the same data as JSON under ``api/overview``); no Airflow here, so all of it is tested
without an Airflow server. The plugin (``plugins/loopline_plugin.py``) mounts the app under
``/loopline`` with Airflow's own authentication in front of it.

Every section is read on its own: a store that cannot be read (no MLflow database yet, the
drift table not created yet) shows as a note in that section, never as a broken page.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from loopline.core.clock import as_utc
from loopline.core.settings import Settings, get_settings
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


@dataclass(frozen=True)
class Overview:
    generated_at: str
    mlflow_ui_url: str
    models: list[ModelOverview]
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- gathering ------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str:
    return as_utc(value).isoformat(timespec="seconds") if value is not None else ""


def _from_millis(millis: int | None) -> str:
    return "" if not millis else _iso(datetime.fromtimestamp(millis / 1000, tz=UTC))


@lru_cache(maxsize=8)
def _serving_state(url: str):
    from loopline.rollout.serving_state import ServingState

    return ServingState(url)


@lru_cache(maxsize=8)
def _monitoring_state(url: str):
    from loopline.monitoring.monitoring_state import MonitoringState

    return MonitoringState(url)


def spec_models(settings: Settings) -> list[str]:
    """Models with a spec folder (``models/<name>/spec.yaml``): known before anything is trained."""
    if not settings.models_dir.is_dir():
        return []
    return sorted(p.name for p in settings.models_dir.iterdir() if (p / "spec.yaml").is_file())


def registered_models(client) -> list[str]:
    return sorted(m.name for m in client.search_registered_models())


def routed_models(state_db_uri: str) -> list[str]:
    from sqlalchemy import select

    from loopline.rollout.serving_state import routes

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
        out.append(row)
    return out


def _section(errors: list[str], name: str, read: Callable[[], Any], empty: Any) -> Any:
    try:
        return read()
    except Exception as err:  # one unreadable store must not take the whole page down
        log.warning("Loopline page: %s could not be read", name, exc_info=True)
        errors.append(f"{name}: {type(err).__name__}: {err}")
        return empty


def gather_model(
    model: str, settings: Settings, client=None, *, audit_limit: int = 50, drift_limit: int = 20
) -> ModelOverview:
    errors: list[str] = []
    aliases, versions = ({}, [])
    if client is not None:
        aliases, versions = _section(errors, "model registry", lambda: registry_versions(client, model), ({}, []))
    url = settings.state_db_uri
    return ModelOverview(
        name=model,
        url=mlflow_model_url(model),
        aliases=aliases,
        versions=versions,
        route=_section(errors, "traffic", lambda: traffic(url, model), {}),
        rollouts=_section(errors, "rollouts", lambda: rollouts(url, model), []),
        drift=_section(errors, "drift checks", lambda: drift_verdicts(url, model, drift_limit), []),
        audit=_section(errors, "audit trail", lambda: audit_trail(url, model, audit_limit), []),
        errors=errors,
    )


def gather(settings: Settings, models: Sequence[str] | None = None, client=None) -> Overview:
    """Everything the page shows, for the given models (default: every model the line knows of)."""
    errors: list[str] = []
    if client is None:
        from loopline.core import tracking

        client = _section(errors, "MLflow", lambda: tracking.client_for(settings), None)
    if models is None:
        names = set(_section(errors, "spec folders", lambda: spec_models(settings), []))
        if client is not None:
            names |= set(_section(errors, "model registry", lambda: registered_models(client), []))
        names |= set(_section(errors, "serving state", lambda: routed_models(settings.state_db_uri), []))
        models = sorted(names)
    return Overview(
        generated_at=_iso(datetime.now(UTC)),
        mlflow_ui_url=mlflow_ui_url(),
        models=[gather_model(name, settings, client) for name in models],
        errors=errors,
    )


# --- HTML -----------------------------------------------------------------------------------------


def esc(value: Any) -> str:
    """Every value on the page goes through here: text and attribute safe."""
    return html.escape("" if value is None else str(value), quote=True)


def _pct(value: Any) -> str:
    try:
        return f"{float(value):.0%}"
    except (TypeError, ValueError):
        return esc(value)


def _link(url: str, text: Any) -> str:
    if not url:
        return esc(text)
    return f'<a href="{esc(url)}" target="_blank" rel="noopener">{esc(text)}</a>'


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
            esc(v.created),
        ]
        for v in model.versions
    ]
    headers = ["version", "aliases", "gate decision", "data", "bento", "MLflow run", "registered (UTC)"]
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
    return f'<div class="split">{"".join(bars)}</div>{detail}'


def _gate_results_html(results: list[dict[str, Any]]) -> str:
    if not results:
        return "-"
    items = []
    for result in results:
        gates = ", ".join(
            f'<span class="gate gate-{esc(g.get("status"))}">{esc(g.get("name"))}={esc(g.get("status"))}</span>'
            + (f" ({esc(g.get('detail'))})" if g.get("detail") else "")
            for g in result.get("gates") or []
            if isinstance(g, dict)
        )
        items.append(
            f'<li>step {_pct(result.get("step"))}: <span class="gate gate-{esc(result.get("status"))}">'
            f"{esc(str(result.get('status', '')).upper())}</span> {esc(result.get('reason', ''))}"
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
            _pct(r.get("step")),
            esc(r.get("started_at")),
            esc(r.get("finished_at") or ""),
            esc(r.get("trigger")),
            _gate_results_html(r.get("gate_results") or []),
            esc(r.get("outcome")),
        ]
        for r in items
    ]
    headers = ["id", "candidate", "mode", "status", "step", "started", "finished", "by", "gate results", "outcome"]
    return _table(headers, rows, "No rollouts yet.", "rollouts")


def _number(value: Any, fmt: str) -> str:
    return "-" if value is None else esc(format(value, fmt))


def _drift_html(items: list[dict[str, Any]]) -> str:
    rows = [
        [
            esc(d.get("at")),
            f"v{esc(d.get('champion_version'))}",
            f'<span class="verdict verdict-{esc(d.get("verdict"))}">{esc(d.get("verdict"))}</span>',
            esc(d.get("n_rows")),
            _number(d.get("drift_share"), ".2f"),
            _number(d.get("score_psi"), ".3f"),
            ("yes" if d.get("confirmed") else "no"),
            ("TRIGGERED" if d.get("triggered") else "no")
            + (f": {esc(d.get('trigger_reason'))}" if d.get("trigger_reason") else ""),
            esc(d.get("report_uri") or "-"),
        ]
        for d in items
    ]
    headers = ["checked (UTC)", "champion", "verdict", "rows", "drift share", "score PSI", "confirmed", "retrain"]
    headers.append("report")
    return _table(headers, rows, "No drift checks recorded yet.", "drift")


def _route_text(route: dict[str, Any]) -> str:
    if not route or not route.get("champion_version"):
        return "-"
    canary = f" + v{route['canary_version']}@{_pct(route.get('canary_weight'))}" if route.get("canary_version") else ""
    return f"v{route['champion_version']}{canary}"


def _audit_html(items: list[dict[str, Any]]) -> str:
    rows = [
        [
            f"#{esc(a.get('id'))}",
            esc(a.get("at")),
            esc(a.get("action")),
            esc(_route_text(a.get("before") or {})),
            esc(_route_text(a.get("after") or {})),
            esc(a.get("actor")),
            esc(a.get("reason")),
        ]
        for a in items
    ]
    return _table(["id", "when (UTC)", "action", "from", "to", "by", "why"], rows, "No changes recorded yet.", "audit")


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
.gate-pass, .gate-champion, .gate-challenger, .status-succeeded, .verdict-no_drift { color: #276749; }
.gate-fail, .gate-rejected, .status-failed, .verdict-drift, .verdict-concept_drift { color: #c53030; font-weight: 600; }
.status-running { color: #2b6cb0; font-weight: 600; }
.split { display: flex; max-width: 40rem; border-radius: .3rem; overflow: hidden; font-size: .8rem; }
.share { padding: .3rem .5rem; white-space: nowrap; } .share.champion { background: #9ae6b4; }
.share.canary { background: #fbd38d; } .errors { color: #c53030; font-size: .85rem; }
"""


# Inside the Airflow UI the page sits in an iframe sandboxed without "allow-popups", where links that open a
# new tab are blocked. Same-origin frames may reach their parent: open such links from the parent document.
FRAMED_LINKS_JS = """
document.addEventListener("click", function (event) {
  var link = event.target.closest && event.target.closest("a[target=_blank]");
  if (!link || window.top === window) return;
  try {
    var proxy = window.top.document.createElement("a");
    proxy.href = link.href; proxy.target = "_blank"; proxy.rel = "noopener noreferrer";
    window.top.document.body.appendChild(proxy); proxy.click(); proxy.remove();
    event.preventDefault();
  } catch (err) { /* not same-origin: leave the link alone */ }
});
"""


def render_html(overview: Overview) -> str:
    sections = []
    for model in overview.models:
        errors = "".join(f"<li>{esc(e)}</li>" for e in model.errors)
        aliases = ", ".join(f"{esc(a)} = v{esc(v)}" for a, v in sorted(model.aliases.items())) or "none"
        sections.append(
            f'<section class="model" id="model-{esc(model.name)}">'
            f"<h2>{_link(model.url, model.name)}</h2>"
            + (f'<ul class="errors">{errors}</ul>' if errors else "")
            + f"<h3>Traffic</h3>{_traffic_html(model.route)}"
            f'<h3>Registered versions</h3><p class="meta">aliases: {aliases}</p>{_versions_html(model)}'
            f"<h3>Rollouts</h3>{_rollouts_html(model.rollouts)}"
            f"<h3>Drift checks</h3>{_drift_html(model.drift)}"
            f"<h3>Audit trail</h3>{_audit_html(model.audit)}"
            "</section>"
        )
    errors = "".join(f"<li>{esc(e)}</li>" for e in overview.errors)
    body = "".join(sections) or '<p class="empty">No models yet: add models/&lt;name&gt;/spec.yaml and train.</p>'
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>Loopline</title>'
        f"<style>{STYLE}</style></head><body><h1>Loopline</h1>"
        f'<p class="meta">as of {esc(overview.generated_at)} &middot; '
        f"MLflow UI {_link(overview.mlflow_ui_url, overview.mlflow_ui_url)} &middot; "
        '<a href="api/overview">JSON</a></p>'
        + (f'<ul class="errors">{errors}</ul>' if errors else "")
        + body
        + f"<script>{FRAMED_LINKS_JS}</script></body></html>"
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

    return app
