"""A plain-text overview of what the line holds for one model (``loopline status``)."""

from __future__ import annotations

from loopline.core.settings import Settings


def describe(model_name: str, settings: Settings) -> str:
    from loopline.core import tracking
    from loopline.core.spec import load_spec
    from loopline.ingestion.data_registry import DataRegistry
    from loopline.ingestion.ingest import landing_scan, list_in_flight, quarantine_cause, zones_for

    spec = load_spec(model_name, settings.models_dir)
    zones = zones_for(spec.dataset.name, settings)
    lines = [f"== {model_name}", f"state: {settings.home}", "", "data versions (DVC registry):"]
    registry = DataRegistry(settings.data_registry, settings.dvc_remote_url)
    if (settings.data_registry / ".dvc").exists():
        for v in registry.versions(spec.dataset.name):
            dv = registry.resolve(spec.dataset.name, v)
            lines.append(f"  {dv.version}  rev {dv.rev[:10]}  md5 {dv.md5}  {dv.batches} batches  {dv.rows} rows")
    lines += ["", "model versions (MLflow registry):"]
    client = tracking.client_for(settings)
    aliases: dict[str, list[str]] = {}
    try:
        for alias, version in client.get_registered_model(model_name).aliases.items():
            aliases.setdefault(str(version), []).append(alias)
        versions = client.search_model_versions(f"name = '{model_name}'")
    except Exception:  # no model registered yet
        versions = []
    for mv in sorted(versions, key=lambda v: int(v.version)):
        lines += version_lines(mv, aliases.get(str(mv.version), []))
    from loopline.core.serving_state import ServingState

    state = ServingState(settings.state_db_uri)
    route = state.route(model_name)
    canary = f", canary v{route.canary_version} at {route.canary_weight:.0%}" if route.canary_version else ""
    shadow = f", shadow v{route.shadow_version} (scores a copy, answers nothing)" if route.shadow_version else ""
    lines += ["", f"serving: champion v{route.champion_version}{canary}{shadow} (loopline audit: the trail)"]
    lines += _shadow_lines(state.rollouts(model_name, limit=1))
    quarantined = sorted(p.name for p in zones.quarantine.iterdir()) if zones.quarantine.is_dir() else []
    found = landing_scan(model_name, settings)
    lines += ["", f"landing zone {zones.landing}: {found.lines()[0]}", *found.lines()[1:]]
    if spec.dataset.source.kind == "sql":
        from loopline.ingestion.sql_source import status_lines

        lines += status_lines(spec, settings.home)
    in_flight = list_in_flight(zones.processing)
    lines += [f"processing: {len(in_flight)} (a crashed run's batches; the next ingest run resumes them)"] * bool(
        in_flight
    )
    lines += [f"quarantine ({len(quarantined)}; after a fix: loopline quarantine replay -m {model_name}):"]
    for name in quarantined:
        lines.append(f"  {name}: {quarantine_cause(zones.quarantine / name)}")
    return "\n".join(lines)


def version_lines(mv, aliases: list[str]) -> list[str]:
    """One registered version: roles, data, gate decision, Bento; a rejected one also says which checks failed."""
    from loopline.training.gate import GATE_FAILED_TAG

    tags = mv.tags
    lines = [
        f"  v{mv.version}  {','.join(aliases) or '-':<20}"
        f" data {tags.get('loopline.data_version', '?')}  gate {tags.get('loopline.gate_decision', '?')}"
        f"  bento {tags.get('loopline.bento_tag', '-')}"
    ]
    if tags.get(GATE_FAILED_TAG):  # the numbers that failed (metric value (bound)), not only "rejected"
        lines.append(f"      gate failed: {tags[GATE_FAILED_TAG]}")
    return lines


def _shadow_lines(latest) -> list[str]:
    """The latest rollout's shadow verdict (disagreement, score shift), if it had a shadow phase."""
    from loopline.ops.ui import shadow_results

    for rollout in latest:
        judged = [r for r in rollout.gate_results if r.get("phase") == "shadow"]
        if judged:
            verdict = judged[-1]
            status = str(verdict.get("status", "")).upper()
            return [
                f"shadow of v{rollout.candidate_version} (rollout #{rollout.id}): {status}, {shadow_results(verdict)}"
            ]
        if rollout.status == "running" and rollout.phase == "shadow":
            return [f"shadow of v{rollout.candidate_version} (rollout #{rollout.id}): running, not judged yet"]
    return []
