"""A feature view's pipeline, step by step: what each task of the ``feature_<view>`` DAG runs.

read source -> compute -> validate -> write offline -> materialise. Plain values in, plain values
out (XCom carries references: the source's data version, the staged batch's folder, counts).

**The source.** A view's ``source.dataset`` is a dataset of the DVC data registry: the step
resolves its latest version, and the compute step pulls exactly that version (cached by content
hash, like a train run's pull). A ``source.sql`` table is read through the ingestion's watermark
source (``loopline.ingestion.sql_source.SqlSource``, the same slices, counts and crash safety as
a model's SQL source): each new slice lands as a Parquet file in
``$LOOPLINE_HOME/features/sources/<view>/`` and the view is computed over all slices landed.

**Batches, idempotent.** The batch is named by the source's data version (``orders-v0003``, or
``sql-<hash of the slices>``); a re-run of the same version stages, checks and writes the same
thing again. Window aggregates need each entity's history, so every run computes the whole
source, and its rows are written to the offline store in one part per *source part*: the rows of
the events a registry version first brought (``batch_id`` ``orders-v0001``, ``orders-v0002``, ...) or
a SQL slice brought (``feature_<view>-slice-000001``, ...). Writing a part again replaces it
(``FeatureStore.write_offline``), so a re-run, a later version or a changed definition replaces
rows, never duplicates them.

**A failed check quarantines.** Computed rows are staged in
``$LOOPLINE_HOME/processing/features/<view>/<batch_id>/rows.parquet``; the GE check writes its
report beside them, and a failure moves the folder whole to
``$LOOPLINE_HOME/quarantine/features/<view>/<batch_id>/`` (one rename, as an ingest batch moves) and
fails the run with the report's first line: nothing reaches the store.

**Set aside, counted.** Events with a null join key or event time are not computed (no entity's
timeline holds them); their count rides in the staged batch's ``set_aside`` and the task log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from loopline.core.errors import LooplineError
from loopline.features.definitions import DefinitionError, Definitions, FeatureViewDef, load_definitions

if TYPE_CHECKING:
    import pandas as pd

    from loopline.core.settings import Settings

log = logging.getLogger(__name__)

PART = "_loopline_part"  # the source part (registry version first holding the event, or SQL slice) of each row
ROWS_FILE = "rows.parquet"
BATCH_FILE = "batch.json"


class FeatureBatchRejected(LooplineError, RuntimeError):
    """A view's computed rows failed their check; they are in quarantine and the message names the cause."""


@dataclass
class StagedBatch:
    """A computed batch of one view, staged for its check and the store (what XCom carries)."""

    view: str
    batch_id: str  # the source's data version: the same version is the same batch
    source: dict[str, Any]
    folder: str  # processing/features/<view>/<batch_id>
    rows: int
    parts: list[str] = field(default_factory=list)
    set_aside: dict[str, int] = field(default_factory=dict)
    max_event_time: str | None = None  # ISO instant: where the materialisation of this batch ends

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StagedBatch:
        """From what a step returned (later steps add keys of their own: the check's summary, ...)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def definitions(settings: Settings) -> Definitions:
    return load_definitions(settings.feature_repo)


def view_of(name: str, defs: Definitions) -> FeatureViewDef:
    """The loaded view; a refused or unknown one is an error saying why."""
    if name in defs.views:
        return defs.views[name]
    why = defs.refused_views.get(name) or f"unknown feature view {name!r}; known: {sorted(defs.views)}"
    broken = f" (files not loaded: {sorted(defs.broken)})" if defs.broken and name not in defs.refused_views else ""
    raise DefinitionError(why + broken)


# -- the source ------------------------------------------------------------------------------


def _sql_spec(view: FeatureViewDef, defs: Definitions) -> Any:
    """What ``SqlSource`` reads of a model spec, for a view: its own state file, the keys plus time as row key."""
    assert view.source.sql is not None
    return SimpleNamespace(
        name=f"feature view {view.name}",
        dataset=SimpleNamespace(
            name=f"feature_{view.name}",  # $LOOPLINE_HOME/sources/feature_<view>.json: apart from every dataset
            source=view.source.sql.as_source_spec(),
            timestamp=view.source.event_time,
            # A row at the slice's top watermark is known by its keys and event time: two events of one key
            # at one instant that arrive in different slices count as one (documented limit).
            unique_key=[*defs.join_keys(view.name), view.source.event_time],
        ),
    )


def sql_folder(view: str, settings: Settings) -> Path:
    return settings.home / "features" / "sources" / view


def _slices(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def _sql_version(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{path.stat().st_size}\0{int(path.stat().st_mtime_ns)}\n".encode())
    return f"sql-{digest.hexdigest()[:16]}"


def read_source(view_name: str, settings: Settings) -> dict[str, Any]:
    """Resolve the source's data version (a SQL source first lands every new slice); a reference, no rows."""
    defs = definitions(settings)
    view = view_of(view_name, defs)
    if view.source.dataset is not None:
        from loopline.ingestion.ingest import registry_for

        version = registry_for(settings).resolve(view.source.dataset, "latest")
        return {"kind": "dataset", "version": version.tag, "data": version.to_dict()}
    from loopline.ingestion.sql_source import SqlSource

    source = SqlSource(_sql_spec(view, defs), settings.home)  # type: ignore[arg-type]
    folder = sql_folder(view.name, settings)
    pulled = []
    while (path := source.pull(folder)) is not None:  # every slice waiting (each at most max_rows)
        pulled.append(path.name)
        for warning in source.last_warnings:
            log.warning("feature view %s: %s", view.name, warning)
    files = _slices(folder)
    if not files:
        raise DefinitionError(f"feature view {view.name}: its SQL source has no rows yet")
    return {"kind": "sql", "version": _sql_version(files), "pulled": pulled, "slices": [p.name for p in files]}


def load_events(view: FeatureViewDef, source: dict[str, Any], settings: Settings) -> pd.DataFrame:
    """Exactly the events of the resolved version, each with its source part (``PART``)."""
    import pandas as pd

    if source["kind"] == "dataset":
        from loopline.ingestion.data_registry import DataVersion
        from loopline.ingestion.ingest import registry_for

        version = DataVersion(**source["data"])
        registry = registry_for(settings)
        dest = settings.work_dir / "data" / version.dataset / version.md5.replace(".dir", "")
        folder = registry.pull(version, dest)
        frames = []
        for record in registry.manifest(version.dataset, version.rev):
            path = folder / f"{record.batch_id}.parquet"
            frame = pd.read_parquet(path)
            frames.append(frame.assign(**{PART: f"{version.dataset}-{record.version or version.version}"}))
    else:
        folder = sql_folder(view.name, settings)
        frames = [pd.read_parquet(folder / name).assign(**{PART: Path(name).stem}) for name in source["slices"]]
    if not frames:
        raise DefinitionError(f"feature view {view.name}: source {source['version']} holds no events")
    return pd.concat(frames, ignore_index=True)


# -- compute, check, write ----------------------------------------------------------------------


def staging_folder(view: str, batch_id: str, settings: Settings) -> Path:
    return settings.processing_dir / "features" / view / batch_id


def quarantine_zone(view: str, settings: Settings) -> Path:
    return settings.quarantine_dir / "features" / view


def compute(view_name: str, source: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Compute the view over the source version's events and stage the rows (atomically) for the check."""
    import pandas as pd

    from loopline.features.compute import SET_ASIDE, compute_view

    defs = definitions(settings)
    view = view_of(view_name, defs)
    events = load_events(view, source, settings)
    rows = compute_view(view, events.drop(columns=[PART]), defs)
    if view.compute is None:  # one row per event, the event's index kept
        parts = events[PART].loc[rows.index]
    else:  # a function's rows: the part of the event with the same keys and time, else the newest part
        keys = [*defs.join_keys(view.name), view.source.event_time]
        index = events[keys].copy()
        index[view.source.event_time] = pd.to_datetime(index[view.source.event_time], utc=True, format="ISO8601")
        index[PART] = events[PART]
        index = index.drop_duplicates(keys, keep="last")
        parts = rows[keys].merge(index, on=keys, how="left")[PART].fillna(events[PART].max())
    staged_rows = rows.reset_index(drop=True).assign(**{PART: parts.to_numpy()})
    batch_id = source["version"]
    folder = staging_folder(view.name, batch_id, settings)
    if folder.parent.is_dir():  # one run of a view at a time: whatever is staged is a re-run's or a crashed run's
        for old in folder.parent.iterdir():
            shutil.rmtree(old, ignore_errors=True)
    tmp = folder.with_name(f".{batch_id}.tmp")
    tmp.mkdir(parents=True)
    staged_rows.to_parquet(tmp / ROWS_FILE, index=False)
    times = rows[view.source.event_time]
    batch = StagedBatch(
        view=view.name,
        batch_id=batch_id,
        source=source,
        folder=str(folder),
        rows=len(rows),
        parts=sorted(staged_rows[PART].unique().tolist()),
        set_aside=dict(rows.attrs.get(SET_ASIDE, {})),
        max_event_time=times.max().isoformat() if len(times) else None,
    )
    (tmp / BATCH_FILE).write_text(json.dumps(batch.to_dict(), indent=2, default=str))
    os.replace(tmp, folder)
    if any(batch.set_aside.values()):
        log.warning("feature view %s, batch %s: set aside (not computed): %s", view.name, batch_id, batch.set_aside)
    log.info("feature view %s: %d rows computed from %s, parts %s", view.name, len(rows), batch_id, batch.parts)
    return batch.to_dict()


def validate(batch: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The view's GE suite over the staged rows; a failure quarantines the batch and raises naming the cause."""
    import pandas as pd

    from loopline.features.validate import validate_rows

    staged = StagedBatch.from_dict(batch)
    defs = definitions(settings)
    view = view_of(staged.view, defs)
    folder = Path(staged.folder)
    rows = pd.read_parquet(folder / ROWS_FILE).drop(columns=[PART])
    report = validate_rows(view, rows, defs, f"feature view {view.name}, batch {staged.batch_id}")
    report.write(folder)
    if report.success:
        return {**staged.to_dict(), "validation": report.summary()}
    zone = quarantine_zone(view.name, settings)
    zone.mkdir(parents=True, exist_ok=True)
    target = zone / folder.name
    if target.exists():
        shutil.rmtree(target)  # an earlier failure of the same version: the fresh report replaces it
    os.replace(folder, target)
    raise FeatureBatchRejected(f"{report.summary().splitlines()[0]} (quarantined in {target})")


def write_offline(batch: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Each source part's rows as one offline part (the same part again replaces it); then the staging goes."""
    import pandas as pd

    from loopline.features.store import FeatureStore, StoreConfig

    staged = StagedBatch.from_dict(batch)
    defs = definitions(settings)
    view_of(staged.view, defs)
    folder = Path(staged.folder)
    rows = pd.read_parquet(folder / ROWS_FILE)
    store = FeatureStore.open(defs, StoreConfig.from_settings(settings))
    store.apply()  # idempotent: registers a new or changed definition before its rows are read
    written, changed = {}, False
    for part, part_rows in rows.groupby(PART, sort=True):
        result = store.write_offline(staged.view, part_rows.drop(columns=[PART]), batch_id=str(part))
        written[str(part)] = result.rows
        changed |= result.changed
    # Unchanged events leave every part as it was: the view has no new version, and its Asset is not updated
    # (the train DAGs of the models reading it do not run again for a re-run that changed nothing).
    version = store.offline_version(staged.view)
    return {**staged.to_dict(), "written": written, "offline_version": version, "changed": changed}


def materialize(batch: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Load the written rows into the online store, up to the batch's newest event (not the wall clock)."""
    from loopline.features.store import FeatureStore, StoreConfig

    defs = definitions(settings)
    view = view_of(batch["view"], defs)
    if not view.online:
        result: dict[str, Any] = {"view": view.name, "skipped": "online: false (training only)"}
    elif batch.get("max_event_time") is None:
        result = {"view": view.name, "skipped": "no rows"}
    else:
        # The end is inclusive of the newest event: one microsecond past it (the store keeps microseconds).
        end = datetime.fromisoformat(batch["max_event_time"]) + timedelta(microseconds=1)
        done = FeatureStore.open(defs, StoreConfig.from_settings(settings)).materialize(view.name, end=end)
        result = {"view": view.name, "start": done.start.isoformat(), "end": done.end.isoformat(), "rows": done.rows}
    # The staged rows go only now: a retried write_offline still finds them.
    shutil.rmtree(batch["folder"], ignore_errors=True)
    return result
