"""Batches from a SQL table: each new slice (by a watermark column) lands as a file, then ingests like any batch.

A slice is the rows with ``low <= watermark <= high``, where ``low`` is the high end of the
last slice and ``high`` the largest watermark present when the slice is cut, less the rows
of the last slice that sat exactly at ``low`` (recorded by their unique key, hashed). So a
row inserted later *with the same watermark* as the last one pulled (two rows in the same
second, a sequence handed out before its transaction committed) is pulled by the next slice,
not lost. Rows whose watermark is NULL are never in a range: they are pulled on their own
(a slice of kind ``null``, each row once, by key), so they reach validation and, if the
watermark is the dataset's timestamp, quarantine with a report that says so.

Each slice is written into the model's landing folder as Parquet (with its ``.done`` marker),
so validation, quarantine, versioning and crash recovery are exactly those of a dropped file.

Never a row twice, never one skipped, across re-runs and crashes: the state file
(``$LOOPLINE_HOME/sources/<dataset>.json``) records the slice (bounds and the keys it
leaves out) *before* it is pulled (``pending``) and moves on only after the file has
landed. A run that finds a pending slice pulls exactly that slice again, over the file it
may have landed before the crash (nothing claims a slice before its pull returns).

Every pull is counted in the same state file and shown by ``loopline status``: rows of the
source in the slice's range, rows landed, rows skipped and why; the table's row count, the
rows still waiting beyond the slice, and the rows *not accounted for* (in the table, never
landed, not waiting: inserted with a watermark below one already pulled, which no
watermark-based load can see; they are logged as a warning, never silent).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from loopline.core.errors import LooplineError
from loopline.core.faults import crash_point
from loopline.core.spec import ModelSpec, SourceSpec
from loopline.ingestion.landing import mark_complete

log = logging.getLogger(__name__)

KEEP_PULLS = 20  # pull records kept in the state file (status shows the last few)
SKIPPED_AT_LOW = "landed by the previous slice (same key, at its watermark)"
SKIPPED_NULL = "NULL watermark, landed before (same key)"


class SourceError(LooplineError, RuntimeError):
    """The SQL source is misconfigured or unreachable; the message says which setting."""


@dataclass
class Slice:
    kind: str  # "range": low <= watermark <= high; "null": the rows whose watermark is NULL
    low: Any = None  # None for the first slice
    high: Any = None
    exclude: list[str] = field(default_factory=list)  # key hashes of rows already landed (at low, or NULL)
    low_inclusive: bool = True  # False only for a slice cut by an older state (low was exclusive then)
    number: int = 0

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "low": self.low,
            "high": self.high,
            "exclude": self.exclude,
            "low_inclusive": self.low_inclusive,
            "number": self.number,
        }


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


def state_path(spec: ModelSpec, home: Path) -> Path:
    return home / "sources" / f"{spec.dataset.name}.json"


def read_state(path: Path) -> dict:
    """The source's state; one written before boundaries and counts were kept reads as its equivalent."""
    if not path.exists():
        return {
            "done": None, "boundary": [], "null_keys": [], "pending": None, "slices": 0, "pulls": [], "landed_total": 0,
        }  # fmt: skip
    state = json.loads(path.read_text())
    legacy = "boundary" not in state
    state.setdefault("boundary", [])
    state.setdefault("null_keys", [])
    state.setdefault("pulls", [])
    state.setdefault("landed_total", None if legacy else 0)
    if legacy:  # its ``done`` was an exclusive bound: the next range starts strictly above it
        state["exclusive_low"] = state["done"] is not None
        if state["pending"] is not None:
            state["pending"] = Slice(
                "range", state["done"], state["pending"], low_inclusive=False, number=state["slices"] + 1
            ).to_dict()
    return state


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


def _as_text_instants(frame: pd.DataFrame) -> pd.DataFrame:
    """Instants travel as ISO text, as in a CSV batch: the suite sees the same shape either way."""
    for name in frame.columns:
        values = frame[name]
        if isinstance(values.dtype, pd.DatetimeTZDtype):  # an instant with a zone: written in UTC, as naive = UTC
            values = values.dt.tz_convert("UTC")
        if pd.api.types.is_datetime64_any_dtype(values.dtype):
            frame[name] = values.dt.strftime("%Y-%m-%d %H:%M:%S.%f").where(values.notna(), None)
    return frame


class SqlSource:
    def __init__(self, spec: ModelSpec, home: Path) -> None:
        self.spec, self.source = spec, spec.dataset.source
        self.state_path = state_path(spec, home)
        self.last_warnings: list[str] = []  # what the last pull found that a person must hear about
        self.watermark = self.source.watermark or spec.dataset.timestamp
        self.key = spec.dataset.unique_key

    # -- SQL --------------------------------------------------------------------------------
    def _engine(self):
        import sqlalchemy as sa

        try:
            return sa.create_engine(connection_url(self.source))
        except sa.exc.ArgumentError as err:
            raise SourceError(f"source URL is not a SQLAlchemy URL: {err}") from err

    def _run(self, work):
        """``work(conn, q)`` on a fresh connection (q quotes an identifier); SQL errors name the model."""
        import sqlalchemy as sa

        engine = self._engine()
        quote = engine.dialect.identifier_preparer.quote
        try:
            with engine.connect() as conn:
                return work(conn, quote)
        except sa.exc.SQLAlchemyError as err:
            raise SourceError(f"SQL source of {self.spec.name} failed: {type(err).__name__}: {err}") from err
        finally:
            engine.dispose()

    def _from(self, quote) -> str:
        if self.source.table:
            return ".".join(quote(part) for part in self.source.table.split("."))
        return f"({self.source.query}) AS loopline_source"

    def _select(self, conn, quote, where: str, params: dict, columns: str = "*", order: bool = True) -> pd.DataFrame:
        import sqlalchemy as sa

        wm = quote(self.watermark)
        sql = f"SELECT {columns} FROM {self._from(quote)} WHERE {where}" + (f" ORDER BY {wm}" if order else "")
        return _as_text_instants(pd.read_sql(sa.text(sql), conn, params=params))

    def _keys(self, conn, quote, where: str, params: dict) -> pd.DataFrame:
        return self._select(conn, quote, where, params, ", ".join(quote(c) for c in self.key), order=False)

    def key_hashes(self, frame: pd.DataFrame) -> list[str]:
        """A short hash of each row's unique key: the state file holds no entity id in clear."""
        from loopline.ingestion.data_rules import key_of

        keys = frame[self.key].copy()
        for name in self.key:  # an integer column read with a NULL in it comes back as floats: 7.0 is 7
            values = keys[name]
            if pd.api.types.is_float_dtype(values.dtype) and (values.dropna() % 1 == 0).all():
                keys[name] = values.astype("Int64")
        return [hashlib.sha256(k.encode()).hexdigest()[:20] for k in key_of(keys, self.key)]

    def _unseen(self, frame: pd.DataFrame, seen: list[str]) -> pd.Series:
        if frame.empty or not seen:
            return pd.Series(True, index=frame.index)
        return ~pd.Series(self.key_hashes(frame), index=frame.index).isin(set(seen))

    def _scalar(self, conn, sql: str, params: dict) -> Any:
        import sqlalchemy as sa

        return conn.execute(sa.text(sql), params).scalar_one()

    # -- what to pull next ------------------------------------------------------------------
    def next_slice(self) -> Slice | None:
        """The pending slice, else unpulled NULL-watermark rows, else the next range (None: nothing new)."""
        import sqlalchemy as sa

        state = read_state(self.state_path)
        if state["pending"] is not None:
            return Slice(**state["pending"])
        number = state["slices"] + 1

        def work(conn, quote):
            wm, src = quote(self.watermark), self._from(quote)
            nulls = self._keys(conn, quote, f"{wm} IS NULL", {})
            if self._unseen(nulls, state["null_keys"]).any():
                return Slice("null", exclude=list(state["null_keys"]), number=number)
            low, inclusive = state["done"], not state.get("exclusive_low", False)
            if low is None:
                fresh_at_low, where = False, f"{wm} IS NOT NULL"
            else:
                where = f"{wm} > :low"
                at_low = self._keys(conn, quote, f"{wm} >= :low AND {wm} <= :low", {"low": low}) if inclusive else None
                fresh_at_low = at_low is not None and self._unseen(at_low, state["boundary"]).any()
            bounds = f"SELECT MAX({wm}) AS high, COUNT(*) AS n FROM {src} WHERE {where}"
            row = conn.execute(sa.text(bounds), {"low": low}).one()
            if row.n == 0 and not fresh_at_low:
                return None
            high = row.high if row.n else low
            if row.n > self.source.max_rows:  # a backlog: cut at the max_rows-th watermark above low
                cut = f"SELECT {wm} FROM {src} WHERE {where} ORDER BY {wm} LIMIT 1 OFFSET :k"
                high = self._scalar(conn, cut, {"low": low, "k": self.source.max_rows - 1})
            exclude = list(state["boundary"]) if low is not None and inclusive else []
            return Slice("range", low, _jsonable(high), exclude, low_inclusive=inclusive, number=number)

        return self._run(work)

    def _waiting_range(self, conn, quote) -> int:
        """Rows the next range slice would land (above the last one, or at its top and not landed)."""
        state = read_state(self.state_path)
        wm, src, low = quote(self.watermark), self._from(quote), state["done"]
        if low is None:
            return int(self._scalar(conn, f"SELECT COUNT(*) FROM {src} WHERE {wm} IS NOT NULL", {}))
        above = int(self._scalar(conn, f"SELECT COUNT(*) FROM {src} WHERE {wm} > :low", {"low": low}))
        if state.get("exclusive_low"):
            return above
        at_low = self._keys(conn, quote, f"{wm} >= :low AND {wm} <= :low", {"low": low})
        return above + int(self._unseen(at_low, state["boundary"]).sum())

    def has_new_rows(self) -> bool:
        return self.next_slice() is not None

    def read(self, piece: Slice) -> tuple[pd.DataFrame, dict]:
        """The slice's rows and its count: rows of the source in its range, landed, skipped (and why)."""

        def work(conn, quote):
            wm, src = quote(self.watermark), self._from(quote)
            if piece.kind == "null":
                frame = self._select(conn, quote, f"{wm} IS NULL", {}, order=False)
                keep, reason = self._unseen(frame, piece.exclude), SKIPPED_NULL
            else:
                params = {"low": piece.low, "high": piece.high}
                if piece.low is None:
                    frame = self._select(conn, quote, f"{wm} <= :high", params)
                    keep = pd.Series(True, index=frame.index)
                elif not piece.low_inclusive:
                    frame = self._select(conn, quote, f"{wm} > :low AND {wm} <= :high", params)
                    keep = pd.Series(True, index=frame.index)
                else:  # the rows the last slice landed at low (same key, still at low) are left out
                    frame = self._select(conn, quote, f"{wm} >= :low AND {wm} <= :high", params)
                    at_low = self._keys(conn, quote, f"{wm} >= :low AND {wm} <= :low", params)
                    landed = set(piece.exclude) & set(self.key_hashes(at_low))
                    keep = ~pd.Series(self.key_hashes(frame), index=frame.index, dtype=object).isin(landed)
                reason = SKIPPED_AT_LOW
            table_rows = int(self._scalar(conn, f"SELECT COUNT(*) FROM {src}", {}))
            if piece.kind == "range":  # every row at high is in this slice: what waits is above it
                waiting = int(self._scalar(conn, f"SELECT COUNT(*) FROM {src} WHERE {wm} > :high", params))
            else:  # a NULL slice comes before the next range: what waits is that range
                waiting = self._waiting_range(conn, quote)
            return frame, keep, reason, table_rows, waiting

        frame, keep, reason, table_rows, waiting = self._run(work)
        skipped = int((~keep).sum())
        count = {
            "slice": piece.number,
            "kind": piece.kind,
            "low": piece.low,
            "high": piece.high,
            "in_source": len(frame),
            "landed": len(frame) - skipped,
            "skipped": {reason: skipped} if skipped else {},
            "table_rows": table_rows,
            "waiting": waiting,
        }
        return frame[keep].reset_index(drop=True), count

    # -- one pull ---------------------------------------------------------------------------
    def pull(self, landing_dir: Path) -> Path | None:
        """Land the next slice as a batch file; None when the table has no new rows."""
        piece = self.next_slice()
        if piece is None:
            return None
        state = read_state(self.state_path)
        if state["pending"] is None:
            state["pending"] = piece.to_dict()
            _write_state(self.state_path, state)  # the slice first: a crash from here re-pulls the same one
        frame, count = self.read(piece)
        landing_dir.mkdir(parents=True, exist_ok=True)
        suffix = "-null-watermark" if piece.kind == "null" else ""
        path = landing_dir / f"{self.spec.dataset.name}-slice-{piece.number:06d}{suffix}.parquet"
        tmp = landing_dir / f".{path.name}.tmp"
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        mark_complete(path)
        crash_point("sql_pull")
        hashes = self.key_hashes(frame)
        if piece.kind == "null":
            state["null_keys"] = sorted(set(state["null_keys"]) | set(hashes))
        else:
            at_high = self._at(frame, piece.high)
            kept_boundary = piece.exclude if piece.low == piece.high else []  # a slice that did not move on
            state["boundary"] = sorted(set(kept_boundary) | {h for h, top in zip(hashes, at_high, strict=True) if top})
            state["done"] = piece.high
            state.pop("exclusive_low", None)
        if state["landed_total"] is not None:
            state["landed_total"] += count["landed"]
        count.update(file=path.name, at=datetime.now(UTC).isoformat(timespec="seconds"))
        count["landed_total"] = state["landed_total"]
        state["pulls"] = [*state["pulls"], count][-KEEP_PULLS:]
        state.update(pending=None, slices=piece.number)
        _write_state(self.state_path, state)
        self.last_warnings = warnings_of(count, self.watermark)
        for line in count_lines(count, self.watermark):
            log.log(logging.WARNING if self.last_warnings else logging.INFO, line)
        return path

    def _at(self, frame: pd.DataFrame, high: Any) -> list[bool]:
        """Which rows sit at the slice's top watermark (compared as instants when they are instants)."""
        if frame.empty:
            return []
        values = frame[self.watermark]
        if pd.api.types.is_numeric_dtype(values.dtype):
            return (values == high).tolist()
        try:
            parsed = pd.to_datetime(values, format="ISO8601")
            return (parsed == pd.Timestamp(high)).tolist()
        except (ValueError, TypeError):
            return (values.astype("string") == str(high)).fillna(False).tolist()


def count_lines(count: dict, watermark: str) -> list[str]:
    """One pull as a person reads it: source vs landed, skipped with the reason, what is unaccounted for."""
    if count["kind"] == "null":
        what = f"rows with NULL {watermark}"
    else:
        low = "" if count["low"] is None else f"{count['low']} "
        what = f"{watermark} {low}.. {count['high']}"
    skipped = "; ".join(f"{n} skipped: {why}" for why, n in count["skipped"].items())
    line = f"slice {count['slice']:06d} ({what}): {count['in_source']} in the source, {count['landed']} landed" + (
        f", {skipped}" if skipped else ""
    )
    lines = [line]
    total = count.get("landed_total")
    if total is not None:
        missing = count["table_rows"] - total - count["waiting"]
        tail = f"table {count['table_rows']} rows: {total} landed so far, {count['waiting']} waiting"
        if missing > 0:
            tail += (
                f", {missing} NOT ACCOUNTED FOR (in the table, never landed: inserted with a {watermark}"
                " below one already pulled?)"
            )
        elif missing < 0:
            tail += f", {-missing} landed rows no longer in the table (deleted at the source)"
        lines.append("  " + tail)
    if count["kind"] == "null" and count["landed"]:
        lines.append(
            f"  {count['landed']} rows had no {watermark}: landed as their own batch (see its report if quarantined)"
        )
    return lines


def warnings_of(count: dict, watermark: str) -> list[str]:
    """A pull worth an alert: rows not accounted for, or rows without a watermark (landed on their own)."""
    lines = count_lines(count, watermark)
    if any("NOT ACCOUNTED" in line for line in lines) or (count["kind"] == "null" and count["landed"]):
        return lines
    return []


def status_lines(spec: ModelSpec, home: Path, last: int = 5) -> list[str]:
    """What ``loopline status`` shows of a SQL source, from its state file only (no database call)."""
    path = state_path(spec, home)
    watermark = spec.dataset.source.watermark or spec.dataset.timestamp
    if not path.exists():
        return [f"sql source (watermark {watermark}): nothing pulled yet"]
    state = read_state(path)
    total = state["landed_total"]
    head = f"sql source (watermark {watermark}): {state['slices']} slices pulled, up to {state['done']}"
    head += f"; {total} rows landed" if total is not None else ""
    lines = [head]
    if state["pending"] is not None:
        lines.append(f"  slice {state['pending']['number']:06d} pending (a pull was cut short; the next run redoes it)")
    for count in state["pulls"][-last:][::-1]:
        lines += ["  " + line for line in count_lines(count, watermark)]
    return lines
