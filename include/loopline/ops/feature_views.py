"""Feature views as people see them: the page's table and ``loopline features``, from one function.

Per view: owner, schedule, the end of its last materialisation, its freshness (the age of its
newest materialised value against its schedule, ``loopline.features.freshness``) and the models
that use it. Three sources, each read on its own so one that cannot be read is a note, not a
failure: the definitions (``feature_repo/*.yaml``), the model specs' ``features.stored``
(``views_used_by``), and the feature store (Feast's registry for the last materialisation's end,
the offline parts for the newest value up to it).

The store is only read, never created: without a registry yet (nothing applied, nothing
materialised) every online view says "nothing materialised" and no Feast is imported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loopline.core.settings import Settings

OFFLINE_ONLY = "offline only"


@dataclass(frozen=True)
class FeatureViewRow:
    """One feature view, as the page and the CLI show it."""

    name: str
    owner: str
    schedule: str
    entities: list[str]  # "card (card_id)"
    ttl: str
    online: bool
    file: str  # feature_repo/<file>.yaml
    features: list[str]
    used_by: list[str]  # models whose spec names one of its features
    dag: str  # the feature pipeline's DAG id
    last_materialized: str = ""  # ISO 8601: the end of the last materialisation interval ("" never)
    newest: str = ""  # ISO 8601: event time of the newest materialised value ("" none)
    age_seconds: float | None = None
    period_seconds: float | None = None  # the schedule's period (None: @once)
    stale: bool = False
    store_error: str = ""  # this view could not be read from the store

    @property
    def freshness(self) -> str:
        """``12 min old (every 1 h)``, ``STALE: 3.0 h old (every 1 h)``, ``nothing materialised`` or offline only."""
        if not self.online:
            return OFFLINE_ONLY
        if self.store_error:
            return "unknown (store not readable)"
        if not self.newest or self.age_seconds is None:
            return "STALE: nothing materialised"
        every = f"every {_duration(self.period_seconds)}" if self.period_seconds else "once"
        text = f"{_duration(self.age_seconds)} old ({every})"
        return f"STALE: {text}" if self.stale else text


@dataclass(frozen=True)
class FeatureViews:
    repo: str
    views: list[FeatureViewRow]
    entities: int = 0
    refused: list[str] = field(default_factory=list)  # refused definitions, each naming file and field
    problems: list[str] = field(default_factory=list)  # stored features a model names that cannot be provided
    errors: list[str] = field(default_factory=list)  # a source that could not be read

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for row, view in zip(out["views"], self.views, strict=True):
            row["freshness"] = view.freshness
        return out


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 86_400 and seconds % 86_400 == 0:  # a schedule's period: whole days or hours read as such
        return f"{seconds / 86_400:g} d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86_400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


def _store_exists(settings: Settings) -> bool:
    """Whether anything was ever applied: a SQL registry (the stack) or the embedded registry file."""
    return bool(settings.feast_registry) or (settings.feast_root / "registry.db").is_file()


def _read_store(
    settings: Settings, defs: Any, rows: list[FeatureViewRow], now: datetime, errors: list[str]
) -> list[FeatureViewRow]:
    """Each online view's last materialisation and freshness from the store; a view it cannot read says so."""
    from dataclasses import replace

    from loopline.features.freshness import judge
    from loopline.features.store import FeatureStore, FeatureStoreError, StoreConfig

    store = FeatureStore.open(defs, StoreConfig.from_settings(settings))
    out = []
    for row in rows:
        if not row.online:
            out.append(row)
            continue
        try:
            ended = store.last_materialized(row.name)
            newest = store.freshness(row.name) if ended is not None else None
        except FeatureStoreError:  # defined but never applied to the store: never materialised
            ended = newest = None
        except Exception as err:  # one view's unreadable parts must not hide the others
            out.append(replace(row, store_error=f"{type(err).__name__}: {err}"))
            errors.append(f"feature store, view {row.name}: {type(err).__name__}: {err}")
            continue
        fresh = judge(row.name, row.schedule, newest, now)
        out.append(
            replace(
                row,
                last_materialized=_iso(ended),
                newest=_iso(fresh.newest),
                age_seconds=fresh.age_seconds,
                period_seconds=fresh.period_seconds,
                stale=fresh.stale,
            )
        )
    return out


def gather_feature_views(
    settings: Settings, repo: Path | None = None, now: datetime | None = None, *, read_store: bool = True
) -> FeatureViews:
    """Every loaded feature view with its owner, schedule, last materialisation, freshness and users."""
    from loopline.core.dag_factory import discover
    from loopline.features.definitions import check_model_uses, load_definitions, views_used_by
    from loopline.features.freshness import schedule_period

    now = now or datetime.now(UTC)
    defs = load_definitions(repo or settings.feature_repo)
    errors: list[str] = []
    try:
        specs = discover(settings.models_dir)[0]
    except Exception as err:  # the models folder unreadable: the views still show, without their users
        errors.append(f"model folders: {type(err).__name__}: {err}")
        specs = []
    used = views_used_by(specs)
    rows = []
    for name, view in sorted(defs.views.items()):
        period = schedule_period(view.schedule, now)
        rows.append(
            FeatureViewRow(
                name=name,
                owner=view.owner,
                schedule=view.schedule,
                entities=[f"{e} ({defs.entities[e].join_key})" for e in view.entities],
                ttl=view.ttl,
                online=view.online,
                file=defs.view_file(name),
                features=list(view.feature_names),
                used_by=used.get(name, []),
                dag=f"feature_{name}",
                period_seconds=period.total_seconds() if period else None,
                stale=view.online,  # until the store says otherwise: nothing materialised is stale
            )
        )
    if read_store and rows and _store_exists(settings):
        try:
            rows = _read_store(settings, defs, rows, now, errors)
        except Exception as err:  # the store as a whole: a note, and the definitions still show
            errors.append(f"feature store: {type(err).__name__}: {err}")
    problems = [line for spec in specs for line in check_model_uses(defs, spec)]
    return FeatureViews(
        repo=str(defs.repo),
        views=rows,
        entities=len(defs.entities),
        refused=list(defs.errors),
        problems=problems,
        errors=errors,
    )


def when_text(iso: str) -> str:
    """An ISO time as the page and the CLI print it: ``2026-12-07 14:05 UTC``; ``never`` for none."""
    if not iso:
        return "never"
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


__all__ = ["FeatureViewRow", "FeatureViews", "gather_feature_views", "when_text"]
