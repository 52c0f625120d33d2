"""The feature store: the feature repo's definitions served by Feast 0.67, one loaded object per process.

``FeatureStore.open(defs)`` builds ``feast.FeatureStore(config=RepoConfig(...))`` from settings (no
``feature_store.yaml`` on disk) and maps each definition 1:1 onto Feast (the table is
``loopline.features.definitions``' docstring). What lives where (embedded; ``StoreConfig``):

- ``<root>/registry.db``: Feast's file registry (the stack: a SQL registry in Postgres).
- ``<root>/offline/<view>/part-<batch_id>.parquet``: a view's computed rows, one part file per feature
  pipeline batch. The view's ``FileSource`` is the folder: Feast's file (dask) offline store reads a
  folder of Parquet files as one table (``dask.dataframe.read_parquet``, through pyarrow's dataset
  discovery, which skips names starting with ``.`` or ``_``). A part is written in full under a hidden
  temporary name and renamed into place (``os.replace``, atomic on one file system), so a reader sees a
  part whole or not at all, a crash leaves at most a hidden temporary file (never read, removed by the
  next write of that batch), and writing the same ``batch_id`` again replaces its part: a re-run of a
  pipeline batch neither loses nor duplicates rows. One folder of parts rather than one file rewritten per
  write: a write costs its own rows, not the whole history, and two pipeline batches never rewrite each
  other's rows.
- ``<root>/online.db``: the SQLite online store (the stack: Redis).

The point-in-time rule (``training_set``): a value with event time ``t`` is visible to a row at time
``T`` iff ``t <= T`` and ``T - t <= ttl``; of two values for the same key and event time the one with the
later ``created`` wins. ``materialize`` is Feast's incremental materialisation per view; Feast records the
interval in the registry only after the online write, and online writes are upserts by entity key, so a
killed run is repeated whole by the next one and nothing is lost or duplicated.

Feast is imported inside functions only (a heavy import; never at DAG parse time).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopline.core.errors import LooplineError
from loopline.core.faults import crash_point
from loopline.features.definitions import Definitions, FeatureViewDef, parse_ref

if TYPE_CHECKING:
    import pandas as pd

    from loopline.core.settings import Settings

PROJECT = "loopline"
CREATED = "created"  # the FileSource's created_timestamp_column: when a row was written (a later one wins)
_BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
MATERIALIZE_CHUNK = 50_000  # rows per online write
_ENTITY_TS = "event_timestamp"
_EMPTY_DTYPES = {
    "int64": "int64",
    "float64": "float64",
    "string": "object",
    "bool": "bool",
    "event_time": "datetime64[us, UTC]",
    "unix_timestamp": "datetime64[us, UTC]",
}  # the entity frame's time column handed to Feast (its default name)


def _same_rows(path: Path, frame: pd.DataFrame, *, stamped: bool) -> bool:
    """The part at ``path`` holds exactly these rows (``created`` aside when this write stamped it)."""
    import pandas as pd

    if not path.is_file():
        return False
    try:
        old = pd.read_parquet(path)
    except (OSError, ValueError):
        return False  # unreadable: rewritten
    new = frame
    columns = [c for c in new.columns if not (stamped and c == CREATED)]
    if sorted(c for c in old.columns if not (stamped and c == CREATED)) != sorted(columns) or len(old) != len(new):
        return False
    try:
        pd.testing.assert_frame_equal(
            old[columns].reset_index(drop=True), new[columns].reset_index(drop=True), check_dtype=True
        )
    except AssertionError:
        return False
    return True


class FeatureStoreError(LooplineError, ValueError):
    """A store operation is refused: an unknown view or feature, a frame without a key or time column, a wrong type."""


@dataclass(frozen=True)
class StoreConfig:
    """Where the store keeps its state; the embedded default needs nothing started."""

    root: Path  # embedded: $LOOPLINE_HOME/feast (registry.db, offline/<view>/part-*.parquet, online.db)
    online: str = "sqlite"  # "sqlite" (<root>/online.db) or a redis:// URL (the full stack)
    registry: str = ""  # a file registry's path (default <root>/registry.db) or a SQL URL (the stack: Postgres)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> StoreConfig:
        """The store these settings name (default: the process's); the one place settings become a config."""
        if settings is None:
            from loopline.core.settings import get_settings

            settings = get_settings()
        return cls(
            root=settings.feast_root,
            online=settings.feast_online_redis or "sqlite",
            registry=settings.feast_registry or str(settings.feast_root / "registry.db"),
        )

    @property
    def registry_path(self) -> str:
        return self.registry or str(self.root / "registry.db")

    def offline_dir(self, view: str) -> Path:
        return self.root / "offline" / view


@dataclass(frozen=True)
class OfflineWrite:
    path: Path
    rows: int
    sha256: str
    changed: bool = True  # False: the part already held exactly these rows and was kept as it was


@dataclass(frozen=True)
class Materialized:
    view: str
    start: datetime
    end: datetime
    rows: int  # entity keys written to the online store (the latest value of each key in the interval)


@dataclass
class TrainingSet:
    frame: pd.DataFrame
    lineage: dict[str, Any] = field(default_factory=dict)


@dataclass
class OnlineRead:
    columns: dict[str, list[Any]]
    status: dict[str, list[str]]  # "present" | "not_found" | "stale", per key


def redis_connection_string(url: str) -> str:
    """``redis://[user:password@]host:port[/db]`` as Feast's ``host:port,db=N,password=...,ssl=true``."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise FeatureStoreError(f"the online store must be 'sqlite' or a redis:// URL, got {url.split('@')[-1]!r}")
    text = f"{parts.hostname}:{parts.port or 6379}"
    db = parts.path.strip("/")
    if db:
        text += f",db={int(db)}"
    if parts.password:
        text += f",password={unquote(parts.password)}"
    if parts.username and parts.username != "default":
        text += f",username={unquote(parts.username)}"
    if parts.scheme == "rediss":
        text += ",ssl=true"
    return text


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json_sha(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class FeatureStore:
    """Loopline's feature store over ``feast.FeatureStore``; build it once per process with ``open``."""

    def __init__(self, defs: Definitions, config: StoreConfig, feast_store: Any) -> None:
        self.defs = defs
        self.config = config
        self._fs = feast_store

    # ---- construction -------------------------------------------------------------------------------

    @classmethod
    def open(cls, defs: Definitions, config: StoreConfig | None = None) -> FeatureStore:
        from feast import FeatureStore as FeastStore
        from feast.repo_config import RegistryConfig, RepoConfig

        config = config or StoreConfig.from_settings()
        config.root.mkdir(parents=True, exist_ok=True)
        registry_path = config.registry_path
        if "://" in registry_path:  # a SQL registry (the stack); cached briefly, refreshed before materialising
            from feast.infra.registry.sql import SqlRegistryConfig  # Feast's SqlRegistry refuses a plain RegistryConfig

            # pool_pre_ping: a connection Postgres dropped (restart, idle timeout) is replaced, not a failed task
            registry: Any = SqlRegistryConfig(
                registry_type="sql",
                path=registry_path,
                cache_ttl_seconds=60,
                sqlalchemy_config_kwargs={"echo": False, "pool_pre_ping": True},
            )
        else:
            registry = RegistryConfig(registry_type="file", path=registry_path, cache_ttl_seconds=60)
        if config.online == "sqlite":
            online: dict[str, Any] = {"type": "sqlite", "path": str(config.root / "online.db")}
        else:
            online = {"type": "redis", "connection_string": redis_connection_string(config.online)}
        repo_config = RepoConfig(
            project=PROJECT,
            provider="local",
            registry=registry,
            offline_store={"type": "file"},
            online_store=online,
            entity_key_serialization_version=3,  # 0.67's default and only non-deprecated scheme
            repo_path=config.root,
        )
        return cls(defs, config, FeastStore(config=repo_config))

    # ---- definitions -> Feast -----------------------------------------------------------------------

    def _view(self, view: str) -> FeatureViewDef:
        found = self.defs.views.get(view)
        if found is None:
            why = self.defs.refused_views.get(view)
            raise FeatureStoreError(
                f"feature view {view!r} is refused: {why}"
                if why
                else f"unknown feature view {view!r}; known: {sorted(self.defs.views)}"
            )
        return found

    def _feast_objects(self) -> tuple[list[Any], list[Any]]:
        from feast import Entity, FeatureView, Field, FileSource, ValueType
        from feast import types as feast_types
        from feast.data_format import ParquetFormat

        entities = {
            name: Entity(
                name=name,
                join_keys=[e.join_key],
                value_type=ValueType.INT64 if e.value_type == "int64" else ValueType.STRING,
                description=e.description,
            )
            for name, e in sorted(self.defs.entities.items())
        }
        views = []
        for name, view in sorted(self.defs.views.items()):
            source = FileSource(
                name=f"{name}_offline",
                # The parts by a glob: dask and duckdb both read it; a temporary file (.part-*.tmp) never matches.
                path=str(self.config.offline_dir(name) / "part-*.parquet"),
                file_format=ParquetFormat(),
                timestamp_field=view.source.event_time,
                created_timestamp_column=CREATED,
            )
            schema = [Field(name=f.name, dtype=getattr(feast_types, f.feast_dtype)) for f in view.features]
            schema += [
                Field(
                    name=self.defs.entities[e].join_key,
                    dtype=feast_types.Int64 if self.defs.entities[e].value_type == "int64" else feast_types.String,
                )
                for e in view.entities
            ]
            views.append(
                FeatureView(
                    name=name,
                    entities=[entities[e] for e in view.entities],
                    ttl=view.ttl_delta,
                    schema=schema,
                    source=source,
                    online=view.online,
                    description=view.description,
                    tags=dict(view.tags),
                    owner=view.owner,
                )
            )
        return list(entities.values()), views

    def apply(self) -> None:
        """Register every loaded entity and view (idempotent: Feast compares and keeps what is unchanged)."""
        entities, views = self._feast_objects()
        if not entities and not views:
            return
        for view in views:
            self.config.offline_dir(view.name).mkdir(parents=True, exist_ok=True)
        self._fs.apply([*entities, *views])

    # ---- offline ------------------------------------------------------------------------------------

    def _columns(self, view: str) -> dict[str, str]:
        """column -> our dtype name, for the view's keys, event time and features (in file order)."""
        definition = self._view(view)
        columns = {self.defs.entities[e].join_key: self.defs.entities[e].value_type for e in definition.entities}
        columns[definition.source.event_time] = "event_time"
        for feature in definition.features:
            columns[feature.name] = feature.dtype or {"count": "int64"}.get(feature.agg or "", "float64")
        return columns

    def _checked(self, view: str, rows: pd.DataFrame) -> pd.DataFrame:
        """The rows as written: exactly the view's columns, each of its type; refused with one clear line."""
        import pandas as pd

        definition = self._view(view)
        keys = self.defs.join_keys(view)
        columns = self._columns(view)
        missing = [c for c in columns if c not in rows.columns]
        if missing:
            raise FeatureStoreError(
                f"view {view}: the rows lack column(s) {missing}; a view's rows carry {list(columns)}"
            )
        out = pd.DataFrame(index=range(len(rows)))
        for column, kind in columns.items():
            series = rows[column].reset_index(drop=True)
            where = f"view {view}: column {column!r}"
            if kind == "event_time":
                if not pd.api.types.is_datetime64_any_dtype(series):
                    raise FeatureStoreError(f"{where} (the event time) must be datetimes, not {series.dtype}")
                series = series.dt.tz_localize("UTC") if series.dt.tz is None else series.dt.tz_convert("UTC")
                series = series.astype("datetime64[us, UTC]")
            elif kind == "int64":
                if not pd.api.types.is_integer_dtype(series) or pd.api.types.is_bool_dtype(series):
                    raise FeatureStoreError(f"{where} must be int64, not {series.dtype}")
                series = series.astype("Int64" if series.isna().any() else "int64")
            elif kind == "float64":
                if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
                    raise FeatureStoreError(f"{where} must be float64, not {series.dtype}")
                series = series.astype("float64")
            elif kind == "bool":
                if not pd.api.types.is_bool_dtype(series):
                    raise FeatureStoreError(f"{where} must be bool, not {series.dtype}")
            elif kind == "unix_timestamp":
                if not pd.api.types.is_datetime64_any_dtype(series):
                    raise FeatureStoreError(f"{where} must be datetimes (unix_timestamp), not {series.dtype}")
                series = series.dt.tz_localize("UTC") if series.dt.tz is None else series.dt.tz_convert("UTC")
            else:  # string
                bad = series[series.notna() & ~series.map(lambda v: isinstance(v, str))]
                if len(bad):
                    raise FeatureStoreError(
                        f"{where} must be strings (string), found {type(bad.iloc[0]).__name__} {bad.iloc[0]!r}"
                    )
                series = series.astype(object)
            if (column in keys or kind == "event_time") and series.isna().any():
                first = int(series.isna().to_numpy().argmax())
                what = "join key" if column in keys else "event time"
                raise FeatureStoreError(f"{where}: row {first} has no {what}")
            out[column] = series
        if CREATED in rows.columns:
            created = rows[CREATED].reset_index(drop=True)
            if not pd.api.types.is_datetime64_any_dtype(created) or created.isna().any():
                raise FeatureStoreError(f"view {view}: column {CREATED!r} must be datetimes without gaps")
            created = created.dt.tz_localize("UTC") if created.dt.tz is None else created.dt.tz_convert("UTC")
            out[CREATED] = created.astype("datetime64[us, UTC]")
        else:
            out[CREATED] = pd.Timestamp(datetime.now(UTC)).as_unit("us")
        # Two rows of one batch for the same key and event time: the later row wins (as a later created would).
        out = out.drop_duplicates([*keys, definition.source.event_time], keep="last", ignore_index=True)
        return out

    def write_offline(self, view: str, rows: pd.DataFrame, *, batch_id: str) -> OfflineWrite:
        """Write one part file for ``batch_id`` (atomically; the same batch again replaces its part)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not _BATCH_ID.match(batch_id):
            raise FeatureStoreError(f"view {view}: batch_id {batch_id!r} must be letters, digits, '_', '-', '.'")
        frame = self._checked(view, rows)
        folder = self.config.offline_dir(view)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"part-{batch_id}.parquet"
        # A re-run over unchanged events keeps the part as it is (its created times, so the view's version).
        if _same_rows(path, frame, stamped=CREATED not in rows.columns):
            return OfflineWrite(path=path, rows=len(frame), sha256=_file_sha(path), changed=False)
        tmp = folder / f".part-{batch_id}.{os.getpid()}.tmp"
        table = pa.Table.from_pandas(frame, preserve_index=False)
        try:
            pq.write_table(table, tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return OfflineWrite(path=path, rows=len(frame), sha256=_file_sha(path))

    def _parts(self, view: str) -> list[Path]:
        self._view(view)
        return sorted(self.config.offline_dir(view).glob("part-*.parquet"))

    def offline_version(self, view: str) -> str:
        """A content hash over the view's part files (names and bytes): the lineage's data version."""
        digest = hashlib.sha256()
        for part in self._parts(view):
            digest.update(f"{part.name}\0{_file_sha(part)}\n".encode())
        return digest.hexdigest()

    def definition_sha(self, view: str) -> str:
        definition = self._view(view)
        entities = [self.defs.entities[e].model_dump() for e in definition.entities]
        return _json_sha({"view": definition.model_dump(), "entities": entities})

    # ---- materialisation ----------------------------------------------------------------------------

    def _feast_view(self, view: str) -> Any:
        from feast.errors import FeatureViewNotFoundException

        self._view(view)
        try:
            return self._fs.get_feature_view(view)
        except FeatureViewNotFoundException:
            raise FeatureStoreError(f"feature view {view!r} is not applied to the store; run apply() first") from None

    def _latest(self, view: str, features: list[str], start: datetime | None = None, end: datetime | None = None):
        """The view's offline rows (keys, event time, ``features``), one per key and event time: the latest ``created``.

        Read here rather than by Feast's file store: its dedup sorts by created, then by event time, with an
        unstable sort, so of two values for one key and time either may win (measured: about half the time
        on 20k keys). Sorting on (event time, created) together makes the later ``created`` win, always.
        """
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        keys = self.defs.join_keys(view)
        event_time = self._view(view).source.event_time
        parts = self._parts(view)
        columns = [*keys, event_time, CREATED, *features]
        if not parts:
            import pandas as pd

            kinds = {**self._columns(view), CREATED: "event_time"}
            return pd.DataFrame({c: pd.Series([], dtype=_EMPTY_DTYPES[kinds[c]]) for c in columns})
        dataset = ds.dataset([str(p) for p in parts], format="parquet")
        condition = None
        if start is not None:
            condition = pc.field(event_time) >= pc.scalar(start)
        if end is not None:
            upper = pc.field(event_time) <= pc.scalar(end)
            condition = upper if condition is None else condition & upper
        frame = dataset.to_table(columns=columns, filter=condition).to_pandas()
        frame = frame.sort_values([event_time, CREATED], kind="mergesort", ignore_index=True)
        return frame.drop_duplicates([*keys, event_time], keep="last", ignore_index=True)

    def materialize(self, view: str, end: datetime | None = None) -> Materialized:
        """Load the view's values with event time in [last end, end] into the online store.

        Feast's incremental materialisation, per view: the start is where the last run ended (the first
        run: ``end - ttl``; older values are stale at ``end`` anyway). The latest value per key (by event
        time, then ``created``) is written through Feast's online write (an upsert by entity key), in
        chunks, and the interval is recorded in Feast's registry only after the last chunk: a run killed
        half-way is repeated whole by the next one, nothing lost, nothing twice.
        """
        definition = self._view(view)
        if not definition.online:
            raise FeatureStoreError(f"feature view {view!r} is not online (online: false); nothing to materialise")
        end = _utc(end or datetime.now(UTC))
        self._fs.refresh_registry()
        feast_view = self._feast_view(view)
        start = feast_view.most_recent_end_time
        start = _utc(start) if start is not None else end - definition.ttl_delta
        if start >= end:
            return Materialized(view=view, start=start, end=end, rows=0)
        latest = self._latest(view, definition.feature_names, start, end)
        latest = latest.drop_duplicates(self.defs.join_keys(view), keep="last", ignore_index=True)
        # Feast's own online write path (write_to_online_store's, minus its check that skips a chunk whose
        # features are all missing: a newer missing value must replace the older one, as materialize does).
        provider = self._fs._get_provider()
        for first in range(0, len(latest), MATERIALIZE_CHUNK):
            provider.ingest_df(feast_view, latest.iloc[first : first + MATERIALIZE_CHUNK])
            crash_point("store.materialize.chunk_written")
        self._fs.registry.apply_materialization(feast_view, PROJECT, start, end, commit=True)
        return Materialized(view=view, start=start, end=end, rows=len(latest))

    def last_materialized(self, view: str) -> datetime | None:
        """The end of the view's last materialisation (Feast's registry); None: never materialised."""
        self._fs.refresh_registry()
        end = self._feast_view(view).most_recent_end_time
        return None if end is None else _utc(end)

    def freshness(self, view: str) -> datetime | None:
        """The event time of the newest materialised value: the newest offline value up to the last run's end."""
        import pyarrow.compute as pc
        import pyarrow.dataset as ds

        self._fs.refresh_registry()
        end = self._feast_view(view).most_recent_end_time
        parts = self._parts(view)
        if end is None or not parts:
            return None
        event_time = self._view(view).source.event_time
        times = ds.dataset([str(p) for p in parts], format="parquet").to_table(columns=[event_time]).column(event_time)
        newest = pc.max(pc.filter(times, pc.less_equal(times, _utc(end)))).as_py()
        return None if newest is None else _utc(newest)

    # ---- reads --------------------------------------------------------------------------------------

    def _refs(self, refs: list[str]) -> dict[str, list[str]]:
        """view -> its features named in refs, in order; unknown views and features refused."""
        by_view: dict[str, list[str]] = {}
        for ref in refs:
            try:
                view, feature = parse_ref(ref)
            except ValueError as err:
                raise FeatureStoreError(str(err)) from None
            definition = self._view(view)
            if feature not in definition.feature_names:
                raise FeatureStoreError(
                    f"{ref}: view {view} has no feature {feature!r}; it has {definition.feature_names}"
                )
            if feature in by_view.setdefault(view, []):
                raise FeatureStoreError(f"{ref} is named twice")
            by_view[view].append(feature)
        return by_view

    def _requests(self, rows: pd.DataFrame, by_view: dict[str, list[str]], event_time: str) -> pd.DataFrame:
        """The rows' join keys and UTC event time (column ``event_timestamp``), checked, index 0..n-1."""
        import pandas as pd

        if event_time not in rows.columns:
            raise FeatureStoreError(f"the rows lack the event time column {event_time!r}")
        if not pd.api.types.is_datetime64_any_dtype(rows[event_time]):
            raise FeatureStoreError(
                f"column {event_time!r} (the event time) must be datetimes, not {rows[event_time].dtype}"
            )
        keys: list[str] = []
        for view in by_view:
            for key in self.defs.join_keys(view):
                if key not in rows.columns:
                    raise FeatureStoreError(f"view {view} is keyed on {key!r}, which the rows do not carry")
                if key == _ENTITY_TS:
                    raise FeatureStoreError(f"view {view}: a join key may not be named {_ENTITY_TS!r} (Feast's own)")
                if key not in keys:
                    keys.append(key)
        times = rows[event_time]
        times = times.dt.tz_localize("UTC") if times.dt.tz is None else times.dt.tz_convert("UTC")
        if times.isna().any():
            raise FeatureStoreError(f"column {event_time!r}: row {int(times.isna().to_numpy().argmax())} has no time")
        wanted = pd.DataFrame({k: rows[k].to_numpy() for k in keys})
        wanted[_ENTITY_TS] = times.reset_index(drop=True).astype("datetime64[us, UTC]")
        columns = [f"{v}__{f}" for v, fs in by_view.items() for f in fs]
        clash = [c for c in columns if c in rows.columns]
        if clash:
            raise FeatureStoreError(f"the rows already have column(s) {clash}, which the stored features would fill")
        return wanted

    def training_set(self, rows: pd.DataFrame, refs: list[str], *, event_time: str) -> TrainingSet:
        """Each row with each feature's value as of the row's ``event_time``: the point-in-time join.

        The rule is Feast's (``get_historical_features`` with ``full_feature_names=True``): a value with
        event time ``t`` is joined to a row at ``T`` iff ``t <= T`` and ``T - t <= ttl``; the newest such
        value wins, and of two with the same key and event time the later ``created``. Rows keep their
        order and count; a missing value is NaN (None for strings and bools; int64 features come back as
        float64 so they can be missing). Computed here with one ``merge_asof`` per view, not by Feast's
        file store, which breaks ties at random and drops a row no value matches (see ``_latest``;
        ``test_feature_store`` holds the two to the same answers on tie-free data).
        """
        import numpy as np
        import pandas as pd

        by_view = self._refs(refs)
        wanted = self._requests(rows, by_view, event_time)
        order = np.argsort(wanted[_ENTITY_TS].to_numpy(), kind="stable")
        ordered = wanted.iloc[order].reset_index(drop=True)
        frame = rows.copy()
        for view, features in by_view.items():
            keys = self.defs.join_keys(view)
            definition = self._view(view)
            right = self._latest(view, features)
            right = right.drop(columns=[CREATED]).rename(columns={definition.source.event_time: "__t"})
            right["__t"] = right["__t"].astype("datetime64[us, UTC]")
            for key in keys:  # the same key type on both sides, or merge_asof refuses
                if right[key].dtype != ordered[key].dtype and len(right):
                    try:
                        right[key] = right[key].astype(ordered[key].dtype)
                    except (TypeError, ValueError):
                        raise FeatureStoreError(
                            f"view {view}: the rows' {key!r} is {ordered[key].dtype}, the view's is {right[key].dtype}"
                        ) from None
            right = right.sort_values("__t", kind="stable", ignore_index=True)
            joined = pd.merge_asof(
                ordered[[*keys, _ENTITY_TS]],
                right,
                left_on=_ENTITY_TS,
                right_on="__t",
                by=keys,
                direction="backward",
                allow_exact_matches=True,
                tolerance=pd.Timedelta(definition.ttl_delta),
            )
            for feature in features:
                values = joined[feature]
                if self._columns(view)[feature] == "int64":
                    values = values.astype("float64")
                elif values.dtype == object:
                    values = values.where(values.notna(), None)
                out = np.empty(len(values), dtype=values.dtype)
                out[order] = values.to_numpy()
                frame[f"{view}__{feature}"] = pd.Series(out, index=frame.index)
        lineage = {
            "views": {
                view: {"definition_sha": self.definition_sha(view), "offline_version": self.offline_version(view)}
                for view in by_view
            },
            "refs": list(refs),
            "event_time": event_time,
            "rows": len(frame),
        }
        return TrainingSet(frame=frame, lineage=lineage)

    def _feast_historical(self, rows: pd.DataFrame, refs: list[str], *, event_time: str) -> pd.DataFrame:
        """The same join through Feast's ``get_historical_features`` (file store): for comparison and the bench.

        Each distinct (keys, time) goes to Feast once and the answer is joined back onto the rows, because
        Feast keeps one row per key and time and drops a row that no value matches.
        """
        import pandas as pd
        import pytz

        by_view = self._refs(refs)
        wanted = self._requests(rows, by_view, event_time)
        keys = [c for c in wanted.columns if c != _ENTITY_TS]
        unique = wanted.drop_duplicates(ignore_index=True).copy()
        unique[_ENTITY_TS] = unique[_ENTITY_TS].dt.tz_convert(pytz.UTC)  # else Feast converts row by row
        self._fs.refresh_registry()
        found = self._fs.get_historical_features(entity_df=unique, features=list(refs), full_feature_names=True).to_df()
        found[_ENTITY_TS] = pd.to_datetime(found[_ENTITY_TS], utc=True).astype("datetime64[us, UTC]")
        joined = wanted.merge(found, on=[*keys, _ENTITY_TS], how="left", validate="many_to_one")
        frame = rows.copy()
        for view, features in by_view.items():
            for feature in features:
                frame[f"{view}__{feature}"] = joined[f"{view}__{feature}"].to_numpy()
        return frame

    def online(self, refs: list[str], keys: list[dict[str, object]]) -> OnlineRead:
        """The served value of each ref for each key, with its status: present, not_found or stale (older than ttl)."""
        from feast.protos.feast.serving.ServingService_pb2 import FieldStatus
        from feast.type_map import feast_value_type_to_python_type

        by_view = self._refs(refs)
        needed = sorted({k for v in by_view for k in self.defs.join_keys(v)})
        for i, key in enumerate(keys):
            lacking = [k for k in needed if k not in key]
            if lacking:
                raise FeatureStoreError(f"keys[{i}] lacks {lacking}; the views {sorted(by_view)} are keyed on {needed}")
        columns = [f"{v}__{f}" for v, fs in by_view.items() for f in fs]
        if not keys:
            return OnlineRead(columns={c: [] for c in columns}, status={c: [] for c in columns})
        response = self._fs.get_online_features(
            features=list(refs), entity_rows=[{k: key[k] for k in needed} for key in keys], full_feature_names=True
        )
        proto = response.proto
        now = datetime.now(UTC).timestamp()
        ttl = {v: self._view(v).ttl_delta.total_seconds() for v in by_view}
        out: dict[str, list[Any]] = {}
        status: dict[str, list[str]] = {}
        for name, vector in zip(proto.metadata.feature_names.val, proto.results, strict=True):
            if name not in columns:
                continue  # the join keys Feast echoes back
            view = name.split("__", 1)[0]
            values: list[Any] = []
            states: list[str] = []
            for value, state, stamp in zip(vector.values, vector.statuses, vector.event_timestamps, strict=True):
                unset = value.WhichOneof("val") is None and stamp.seconds == stamp.nanos == 0
                if state == FieldStatus.PRESENT and unset:
                    # Feast's Redis store answers an unknown key with empty values at the epoch, marked PRESENT
                    state = FieldStatus.NOT_FOUND
                if state == FieldStatus.PRESENT and now - (stamp.seconds + stamp.nanos / 1e9) > ttl[view]:
                    state = FieldStatus.OUTSIDE_MAX_AGE
                if state == FieldStatus.PRESENT:
                    values.append(feast_value_type_to_python_type(value))
                    states.append("present")
                else:
                    values.append(None)
                    states.append("stale" if state == FieldStatus.OUTSIDE_MAX_AGE else "not_found")
            out[name] = values
            status[name] = states
        return OnlineRead(columns={c: out[c] for c in columns}, status={c: status[c] for c in columns})


def open_store(config: StoreConfig | None = None) -> FeatureStore:
    """The store over the settings' feature repo (``LOOPLINE_FEATURE_REPO``)."""
    from loopline.core.settings import get_settings
    from loopline.features.definitions import load_definitions

    return FeatureStore.open(load_definitions(get_settings().feature_repo), config)


__all__ = [
    "CREATED",
    "FeatureStore",
    "FeatureStoreError",
    "Materialized",
    "OfflineWrite",
    "OnlineRead",
    "StoreConfig",
    "TrainingSet",
    "open_store",
    "redis_connection_string",
]
