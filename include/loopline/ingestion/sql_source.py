"""Batches from a SQL table: each new slice (by a watermark column) lands as a file, then ingests like any batch.

A slice is the rows with ``low < watermark <= high``, where ``low`` is the high end of
the last slice and ``high`` the largest watermark present when the slice is cut. It is
written into the model's landing folder as Parquet (with its ``.done`` marker), so
validation, quarantine, versioning and crash recovery are exactly those of a dropped file.

Never a row twice, never one skipped, across re-runs and crashes: the state file
(``$LOOPLINE_HOME/sources/<dataset>.json``) records the slice's bounds *before* it is
pulled (``pending``) and moves ``done`` on only after the file has landed. A run that
finds a pending slice pulls exactly the same bounds again; the same rows give the same
bytes, which ingest recognises as the same batch. The watermark must only grow as rows
are added (an insert timestamp or a sequence): a row inserted later with a watermark at or
below ``done`` is not seen, as with every watermark-based incremental load.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from loopline.core.errors import LooplineError
from loopline.core.faults import crash_point
from loopline.core.spec import ModelSpec, SourceSpec
from loopline.ingestion.landing import mark_complete


class SourceError(LooplineError, RuntimeError):
    """The SQL source is misconfigured or unreachable; the message says which setting."""


@dataclass
class Slice:
    low: Any  # exclusive; None for the first slice
    high: Any  # inclusive


def connection_url(source: SourceSpec) -> str:
    if source.url_env:
        url = os.environ.get(source.url_env, "").strip()
        if not url:
            raise SourceError(f"environment variable {source.url_env} (source.url_env) is not set")
        return url
    try:
        from airflow.sdk import Connection

        return Connection.get(source.conn_id).get_uri()
    except Exception as err:
        raise SourceError(f"Airflow connection {source.conn_id!r} (source.conn_id) cannot be read: {err}") from err


def _state_path(spec: ModelSpec, home: Path) -> Path:
    return home / "sources" / f"{spec.dataset.name}.json"


def _read_state(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"done": None, "pending": None, "slices": 0}


def _write_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str))
    os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date | pd.Timestamp):
        return value.isoformat(sep=" ") if isinstance(value, datetime | pd.Timestamp) else value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


class SqlSource:
    def __init__(self, spec: ModelSpec, home: Path) -> None:
        self.spec, self.source = spec, spec.dataset.source
        self.state_path = _state_path(spec, home)
        self.watermark = self.source.watermark or spec.dataset.timestamp

    def _engine(self):
        import sqlalchemy as sa

        try:
            return sa.create_engine(connection_url(self.source))
        except sa.exc.ArgumentError as err:
            raise SourceError(f"source URL is not a SQLAlchemy URL: {err}") from err

    def _from(self, engine) -> str:
        quote = engine.dialect.identifier_preparer.quote
        if self.source.table:
            return ".".join(quote(part) for part in self.source.table.split("."))
        return f"({self.source.query}) AS loopline_source"

    def _bounds_query(self, engine, low: Any) -> tuple[str, dict]:
        col = engine.dialect.identifier_preparer.quote(self.watermark)
        where = f" WHERE {col} > :low" if low is not None else ""
        return f"SELECT MAX({col}) AS high, COUNT(*) AS n FROM {self._from(engine)}{where}", {"low": low}

    def next_slice(self) -> Slice | None:
        """The pending slice, or a new one from the last watermark to the largest present (None: no new rows)."""
        import sqlalchemy as sa

        state = _read_state(self.state_path)
        if state["pending"] is not None:
            return Slice(state["done"], state["pending"])
        engine = self._engine()
        try:
            with engine.connect() as conn:
                sql, params = self._bounds_query(engine, state["done"])
                row = conn.execute(sa.text(sql), params).one()
                if row.n == 0 or row.high is None:
                    return None
                high = row.high
                if row.n > self.source.max_rows:  # a backlog: cut at the max_rows-th watermark
                    col = engine.dialect.identifier_preparer.quote(self.watermark)
                    where = f" WHERE {col} > :low" if state["done"] is not None else ""
                    cut = sa.text(f"SELECT {col} FROM {self._from(engine)}{where} ORDER BY {col} LIMIT 1 OFFSET :k")
                    high = conn.execute(cut, {"low": state["done"], "k": self.source.max_rows - 1}).scalar_one()
        except sa.exc.SQLAlchemyError as err:
            raise SourceError(f"SQL source of {self.spec.name} failed: {type(err).__name__}: {err}") from err
        finally:
            engine.dispose()
        return Slice(state["done"], _jsonable(high))

    def has_new_rows(self) -> bool:
        return self.next_slice() is not None

    def read(self, piece: Slice) -> pd.DataFrame:
        import sqlalchemy as sa

        engine = self._engine()
        col = engine.dialect.identifier_preparer.quote(self.watermark)
        low = f"{col} > :low AND " if piece.low is not None else ""
        sql = f"SELECT * FROM {self._from(engine)} WHERE {low}{col} <= :high ORDER BY {col}"
        try:
            with engine.connect() as conn:
                frame = pd.read_sql(sa.text(sql), conn, params={"low": piece.low, "high": piece.high})
        except sa.exc.SQLAlchemyError as err:
            raise SourceError(f"SQL source of {self.spec.name} failed: {type(err).__name__}: {err}") from err
        finally:
            engine.dispose()
        # Instants travel as ISO text, as in a CSV batch: the suite sees the same shape either way.
        for name in frame.columns:
            if pd.api.types.is_datetime64_any_dtype(frame[name].dtype):
                frame[name] = frame[name].dt.strftime("%Y-%m-%d %H:%M:%S.%f").where(frame[name].notna(), None)
        return frame

    def pull(self, landing_dir: Path) -> Path | None:
        """Land the next slice as a batch file; None when the table has no new rows."""
        piece = self.next_slice()
        if piece is None:
            return None
        state = _read_state(self.state_path)
        if state["pending"] is None:
            state["pending"] = piece.high
            _write_state(self.state_path, state)  # bounds first: a crash from here re-pulls the same slice
        frame = self.read(piece)
        landing_dir.mkdir(parents=True, exist_ok=True)
        number = state["slices"] + 1
        path = landing_dir / f"{self.spec.dataset.name}-slice-{number:06d}.parquet"
        tmp = landing_dir / f".{path.name}.tmp"
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        mark_complete(path)
        crash_point("sql_pull")
        state.update(done=piece.high, pending=None, slices=number)
        _write_state(self.state_path, state)
        return path
