"""The life of a landed batch: landing → processing → (dataset + archive) | quarantine.

Every move is an atomic rename of a whole folder, so at any instant a batch is
in exactly one place, and a crash at any point leaves it somewhere the next run
picks up from:

- ``landing/<file>``: dropped by an upstream system (see ``loopline.ingestion.landing`` for
  when a file counts as complete and what is refused).
- ``processing/<batch_id>/<file>``: claimed by a run, with ``batch.json`` (its hash
  at claim time) and, once checked, its reports. A run that crashed leaves it here;
  the next run resumes it.
- ``quarantine/<batch_id>/``: rejected, with ``validation.json`` (full result) and
  ``validation.txt`` (readable summary) beside the untouched file.
- ``archive/<batch_id>/``: versioned in the data registry, or recognised as the same
  bytes as a batch already there (``outcome.txt`` says which), kept for audit.

Every claim gets its own batch id (the file's stem, a prefix of its SHA-256 and a
random suffix), so the same name or the same bytes landing again never collide with
an earlier folder. The same bytes are recognised by their hash and never stored twice;
a new file with an old name is a new batch.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from loopline.core.errors import LooplineError
from loopline.core.faults import crash_point
from loopline.core.settings import Settings
from loopline.core.spec import ModelSpec, SpecError, load_spec
from loopline.core.tasks import task_of
from loopline.ingestion import data_rules
from loopline.ingestion.data_registry import BatchRecord, DataRegistry, DataVersion, RegistryStage
from loopline.ingestion.landing import LandingScan, StillChanging, read_settled, scan
from loopline.ingestion.validation import (
    READABLE_SUFFIXES,
    SuiteError,
    ValidationReport,
    load_suite_dict,
    read_batch,
    validate_frame,
)

log = logging.getLogger(__name__)

STATE_FILE = "batch.json"
NORMALISED_FILE = "normalised.parquet"  # the checked batch in the dataset's dtypes, read by the commit
OUTCOME_FILE = "outcome.txt"
REPORT_FILES = (STATE_FILE, NORMALISED_FILE, OUTCOME_FILE, "validation.json", "validation.txt")


class BatchChanged(Exception):
    """The claimed file no longer has the bytes it had when it was claimed."""


@dataclass
class ClaimedBatch:
    batch_id: str
    sha256: str
    source_name: str
    folder: str  # processing/<batch_id>
    claimed_at: str = ""  # ISO instant, UTC: "ingest time" for the timestamp rules
    size: int = 0
    # Replays out of quarantine (``replay``): when, by whom, with which renames; the file stays untouched.
    replays: list[dict] = field(default_factory=list)
    # Column renames applied when the file is read (a replay's fix for a column renamed upstream).
    renames: dict[str, str] = field(default_factory=dict)

    @property
    def file(self) -> Path:
        return Path(self.folder) / self.source_name

    @property
    def claimed_instant(self) -> datetime:
        return datetime.fromisoformat(self.claimed_at) if self.claimed_at else datetime.now(UTC)


@dataclass
class BatchOutcome:
    batch_id: str
    sha256: str
    source_name: str
    folder: str
    accepted: bool
    rows: int | None
    summary: str
    claimed_at: str = ""
    status: str = ""  # after the commit: versioned | duplicate | rejected
    notes: list[str] = field(default_factory=list)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def batch_id_for(path: Path, sha256: str, suffix: str | None = None) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:80] or "batch"
    return f"{stem}-{sha256[:12]}-{suffix or secrets.token_hex(3)}"


def list_in_flight(processing_dir: Path) -> list[Path]:
    if not processing_dir.is_dir():
        return []
    return sorted(p for p in processing_dir.iterdir() if not p.name.startswith(".") and (p / STATE_FILE).is_file())


def claim(landed: Path, processing_dir: Path, marker: Path | None = None) -> ClaimedBatch | None:
    """Move one complete landed file into its own processing folder; None if it is still being written.

    The hash is taken from the very bytes read while the file's size and mtime stood still;
    the file (and its completion marker) then move by rename, which keeps the inode, so a
    writer that still had it open is caught when the hash is checked again.
    """
    try:
        data, info = read_settled(landed)
    except StillChanging:
        return None
    except FileNotFoundError:  # taken away by its writer meanwhile
        return None
    sha = hashlib.sha256(data).hexdigest()
    batch_id = batch_id_for(landed, sha)
    folder = processing_dir / batch_id
    staging = processing_dir / f".{batch_id}.claiming"
    staging.mkdir(parents=True)
    batch = ClaimedBatch(
        batch_id=batch_id,
        sha256=sha,
        source_name=landed.name,
        folder=str(folder),
        claimed_at=datetime.now(UTC).isoformat(),
        size=info.st_size,
    )
    (staging / STATE_FILE).write_text(json.dumps(asdict(batch), indent=2))
    os.replace(landed, staging / landed.name)
    if marker is not None and marker.exists():
        os.replace(marker, staging / marker.name)
    crash_point("claim")
    os.replace(staging, folder)
    return batch


def load_claimed(folder: Path) -> ClaimedBatch:
    return ClaimedBatch(**json.loads((folder / STATE_FILE).read_text()))


def _recover_claims(landing_dir: Path, processing_dir: Path) -> None:
    """Finish or undo a claim a crash cut short: a staged file is finished, an unstaged one stays landed."""
    for staging in processing_dir.glob(".*.claiming"):
        state = staging / STATE_FILE
        try:
            batch = ClaimedBatch(**json.loads(state.read_text()))
        except (OSError, ValueError, TypeError):
            batch = None
        if batch is not None and (staging / batch.source_name).exists():
            os.replace(staging, batch.folder)
            continue
        for leftover in staging.iterdir():  # a marker moved before its file cannot happen; be safe anyway
            if leftover.name != STATE_FILE and not (landing_dir / leftover.name).exists():
                os.replace(leftover, landing_dir / leftover.name)
        shutil.rmtree(staging)


def claim_all(
    landing_dir: Path, processing_dir: Path, settle_seconds: float = 0.0
) -> tuple[list[ClaimedBatch], LandingScan]:
    """Resume batches a crashed run left in processing, then claim every complete landed file."""
    processing_dir.mkdir(parents=True, exist_ok=True)
    _recover_claims(landing_dir, processing_dir)
    resumed = [load_claimed(f) for f in list_in_flight(processing_dir)]
    found = scan(landing_dir, settle_seconds)
    claimed = []
    for path in found.ready:
        batch = claim(path, processing_dir, found.markers.get(path.name))
        if batch is None:
            found.writing.append(path.name)
        else:
            claimed.append(batch)
    found.ready = [p for p in found.ready if p.name not in found.writing]
    return resumed + claimed, found


def verified_bytes(batch: ClaimedBatch) -> bytes:
    """The claimed file's bytes, refused if they are not the bytes that were claimed."""
    data = batch.file.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if sha != batch.sha256:
        raise BatchChanged(
            f"{batch.source_name} changed after it was claimed (sha256 {sha[:12]}…, claimed {batch.sha256[:12]}…,"
            f" {len(data)} bytes now, {batch.size} then): was it still being written? Nothing of it was used."
        )
    return data


def parse_batch(data: bytes, name: str) -> pd.DataFrame:
    suffix = Path(name).suffix
    if suffix not in READABLE_SUFFIXES:
        raise ValueError(f"unsupported file type {suffix!r}; expected one of {READABLE_SUFFIXES}")
    return read_batch(io.BytesIO(data), suffix)


def normalise(df: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """Give a validated batch the dataset's column order and dtypes before it is stored."""
    ds = spec.dataset
    out = pd.DataFrame(
        {
            ds.entity_id: df[ds.entity_id].astype("string"),
            ds.timestamp: data_rules.parse_timestamps(df[ds.timestamp]).dt.tz_localize(None),
        }
    )
    for name in ds.keys:  # join keys of stored features: identifiers, kept as text
        out[name] = df[name].astype("string")
    for name in spec.features.numeric:
        out[name] = pd.to_numeric(df[name]).astype("float64")
    for name in spec.features.categorical:
        out[name] = df[name].astype("string")
    out[ds.target] = task_of(spec).stored_target(df[ds.target])
    return out


def _failed(batch: ClaimedBatch, spec: ModelSpec, why: str, rows: int | None = None) -> ValidationReport:
    return ValidationReport(
        subject=batch.source_name, success=False, rows=rows, read_error=why, suite=spec.dataset.expectation_suite
    )


def causes_of(data: bytes, frame: pd.DataFrame | None, spec: ModelSpec, expectations_dir: Path) -> list[dict]:
    """The named encoding and shape problems of a failed batch (its report's first line), against its suite."""
    from loopline.ingestion.diagnose import diagnose

    expected, exact = list(spec.input_columns), True
    for exp in load_suite_dict(spec.dataset.expectation_suite, expectations_dir)["expectations"]:
        if exp.get("type") == "expect_table_columns_to_match_set":
            kwargs = exp.get("kwargs", {})
            expected = list(kwargs.get("column_set") or expected)
            exact = bool(kwargs.get("exact_match", True))
            break
    else:
        exact = False  # the suite does not fix the column set: extra columns are allowed
    numeric = [*spec.features.numeric, *([spec.dataset.target] if spec.task == "regression" else [])]
    try:
        return [c.to_dict() for c in diagnose(data, frame, expected, numeric, exact, spec.dataset.entity_id)]
    except Exception:  # naming the cause is a courtesy: it must never stop a batch from reaching quarantine
        log.exception("could not diagnose a failed batch; its report lists the failed expectations only")
        return []


def check_batch(batch: ClaimedBatch, spec: ModelSpec, expectations_dir: Path, secret: str) -> ValidationReport:
    """GE suite + the data rules beside it; on success the normalised batch is left beside the file.

    Anything wrong with the batch itself (unreadable, changed since claimed, failing an
    expectation, impossible to normalise) is a failed report, never an exception: one bad
    batch must not stop the others. A broken suite or spec is the platform's problem and
    does raise (the batch waits in processing until it is fixed).
    """
    try:
        data = verified_bytes(batch)
    except BatchChanged as err:
        return _failed(batch, spec, str(err))
    try:
        frame = parse_batch(data, batch.source_name)
        if batch.renames:
            frame = frame.rename(columns=batch.renames)
    except Exception as err:  # any reader error means the same: quarantine with the reason
        report = _failed(batch, spec, f"{type(err).__name__}: {err}")
        report.causes = causes_of(data, None, spec, expectations_dir)
        return report
    report = validate_frame(
        frame,
        batch.source_name,
        spec.dataset.expectation_suite,
        expectations_dir,
        entity_id=spec.dataset.entity_id,
        secret=secret,
        spec=spec,
    )
    rule_failures = data_rules.timestamp_failures(frame, spec, batch.claimed_instant)
    if rule_failures:
        report.failures.extend(rule_failures)
        report.success = False
    if not report.success:
        report.causes = causes_of(data, frame, spec, expectations_dir)
    if report.success:
        try:
            normalised = normalise(frame, spec)
        except (SuiteError, SpecError):
            raise
        except Exception as err:
            return _failed(
                batch, spec, f"passed the suite but cannot be stored: {type(err).__name__}: {err}", len(frame)
            )
        tmp = Path(batch.folder) / f".{NORMALISED_FILE}.tmp"
        normalised.to_parquet(tmp, index=False)
        os.replace(tmp, Path(batch.folder) / NORMALISED_FILE)
    return report


def validate_claimed(batch: ClaimedBatch, spec: ModelSpec, expectations_dir: Path, secret: str = "") -> BatchOutcome:
    """Validate a claimed batch and leave the report beside it."""
    report = check_batch(batch, spec, expectations_dir, secret)
    report.write(Path(batch.folder))
    crash_point("validate")
    return BatchOutcome(
        batch_id=batch.batch_id,
        sha256=batch.sha256,
        source_name=batch.source_name,
        folder=batch.folder,
        accepted=report.success,
        rows=report.rows,
        summary=report.summary(),
        claimed_at=batch.claimed_at,
        status="" if report.success else "rejected",
    )


def _move_folder(folder: Path, zone: Path) -> Path:
    """Move a batch folder into a zone; repeating it after a crash is a no-op."""
    zone.mkdir(parents=True, exist_ok=True)
    target = zone / folder.name
    if not folder.exists() and target.exists():
        return target  # moved before the crash
    os.replace(folder, target)
    return target


def quarantine(outcome: BatchOutcome, quarantine_dir: Path) -> Path:
    """Move a rejected batch, untouched, with its reports into quarantine."""
    (Path(outcome.folder) / NORMALISED_FILE).unlink(missing_ok=True)
    return _move_folder(Path(outcome.folder), quarantine_dir)


def _write_outcome(folder: Path, outcome: BatchOutcome) -> None:
    lines = [f"{outcome.source_name}: {outcome.status}", *(f"  {n}" for n in outcome.notes)]
    (folder / OUTCOME_FILE).write_text("\n".join(lines) + "\n")


def _reject_by_rule(outcome: BatchOutcome, failure: dict, zones: Zones) -> None:
    folder = Path(outcome.folder)
    report_path = folder / "validation.json"
    report = ValidationReport(**json.loads(report_path.read_text()))
    report.success = False
    report.failures.append(failure)
    report.write(folder)
    outcome.accepted, outcome.status, outcome.summary = False, "rejected", report.summary()
    outcome.folder = str(quarantine(outcome, zones.quarantine))


def _stage_batch(
    outcome: BatchOutcome, stage: RegistryStage, spec: ModelSpec, secret: str, ingested_for: str, zones: Zones
) -> None:
    """Decide one accepted batch against the dataset (and the batches staged before it) and stage it."""
    already = {r.sha256: r for r in stage.records}
    if outcome.sha256 in already:
        record = already[outcome.sha256]
        if record.batch_id == outcome.batch_id:  # committed before a crash; only archiving was left
            outcome.status = "versioned"
            outcome.notes.append(f"versioned in {record.version or 'an earlier version'} ({record.rows} rows)")
        else:
            outcome.status = "duplicate"
            where = f"{record.version}" if record.version else "this ingest"
            outcome.notes.append(f"same bytes as batch {record.batch_id} ({where}): not stored again")
        return
    frame = pd.read_parquet(Path(outcome.folder) / NORMALISED_FILE)
    key = spec.dataset.unique_key
    existing = stage.key_index(key)
    matched = None
    if spec.dataset.rules.on_duplicate == "drop_repeats" and len(existing):
        hits = existing[data_rules.key_of(existing, key).isin(set(data_rules.key_of(frame, key)))]
        matched = stage.rows_of(sorted(set(hits["_batch"]))) if len(hits) else None
    decision = data_rules.decide_keys(frame, existing[key], spec, secret, matched)
    if decision.rejected:
        _reject_by_rule(outcome, decision.failure, zones)
        return
    if decision.replaces:
        stage.drop_keys(key, set(data_rules.key_of(frame[decision.keep], key)))
    kept = frame[decision.keep].reset_index(drop=True)
    outcome.notes.extend(decision.notes)
    if kept.empty:
        outcome.status = "duplicate"
        outcome.notes.append("every row is already in the dataset: nothing new to store")
        return
    stage.add(
        BatchRecord(
            batch_id=outcome.batch_id,
            sha256=outcome.sha256,
            source_name=outcome.source_name,
            rows=len(kept),
            ingested_for=ingested_for,
        ),
        kept,
    )
    outcome.status = "versioned"


def commit_accepted(
    outcomes: list[BatchOutcome],
    spec: ModelSpec,
    registry: DataRegistry,
    zones: Zones,
    ingested_for: str,
    secret: str = "",
) -> DataVersion | None:
    """Append accepted batches to the dataset as one new DVC version, then archive them.

    Under the registry's lock, each batch is checked against the whole dataset (key
    uniqueness per the spec's policy); a batch that breaks the rule is quarantined with
    the rule in its report, the others go on. Archiving happens only after the commit
    and push succeeded: a crash in between leaves the batch in processing, and the
    re-run finds it committed and only archives it.
    """
    accepted = [o for o in outcomes if o.accepted]
    version = None
    with registry.stage(spec.dataset.name) as stage:
        for outcome in accepted:
            _stage_batch(outcome, stage, spec, secret, ingested_for, zones)
        if stage.changed:
            names = ", ".join(o.source_name for o in accepted if o.status == "versioned")
            version = stage.commit(f"ingest {names} ({ingested_for})")
    for outcome in accepted:
        if outcome.status == "versioned" and version is not None:
            outcome.notes.insert(0, f"versioned in {version.version}")
    for n, outcome in enumerate(o for o in accepted if o.status in ("versioned", "duplicate")):
        _archive(outcome, zones)
        if n == 0:
            crash_point("archive")
    return version


def _archive(outcome: BatchOutcome, zones: Zones) -> None:
    folder = Path(outcome.folder)
    try:
        verified_bytes(ClaimedBatch(outcome.batch_id, outcome.sha256, outcome.source_name, outcome.folder))
    except BatchChanged as err:
        outcome.notes.append(f"REFUSED at archiving: {err} The content as claimed is what the dataset holds.")
        _write_outcome(folder, outcome)
        outcome.folder = str(quarantine(outcome, zones.quarantine))
        return
    except FileNotFoundError:
        if (zones.archive / folder.name).exists():  # archived before a crash
            outcome.folder = str(zones.archive / folder.name)
            return
        raise
    _write_outcome(folder, outcome)
    (folder / NORMALISED_FILE).unlink(missing_ok=True)
    outcome.folder = str(_move_folder(folder, zones.archive))


# -- the ingest DAG's steps: plain values in, plain values out ------------------------------


@dataclass(frozen=True)
class Zones:
    """The landing-zone folders of one dataset."""

    landing: Path
    processing: Path
    quarantine: Path
    archive: Path


def zones_for(dataset: str, settings: Settings) -> Zones:
    return Zones(
        landing=settings.landing_dir / dataset,
        processing=settings.processing_dir / dataset,
        quarantine=settings.quarantine_dir / dataset,
        archive=settings.archive_dir / dataset,
    )


def registry_for(settings: Settings) -> DataRegistry:
    return DataRegistry(settings.data_registry, settings.dvc_remote_url)


def landing_scan(model_name: str, settings: Settings) -> LandingScan:
    zones = zones_for(load_spec(model_name, settings.models_dir).dataset.name, settings)
    return scan(zones.landing, settings.landing_settle_seconds)


def batches_waiting(model_name: str, settings: Settings) -> bool:
    spec = load_spec(model_name, settings.models_dir)
    zones = zones_for(spec.dataset.name, settings)
    if landing_scan(model_name, settings).ready or list_in_flight(zones.processing):
        return True
    if spec.dataset.source.kind == "sql":
        from loopline.ingestion.sql_source import SqlSource

        return SqlSource(spec, settings.home).has_new_rows()
    return False


def claim_step(model_name: str, settings: Settings, alert: Callable[[str, str], None] | None = None) -> list[dict]:
    """Pull a SQL source's next slice (if any), then claim every complete landed file.

    ``alert(title, body)`` hears of a pull that left rows unaccounted for or landed rows without
    a watermark (also logged as warnings and shown by ``loopline status``).
    """
    spec = load_spec(model_name, settings.models_dir)
    zones = zones_for(spec.dataset.name, settings)
    if spec.dataset.source.kind == "sql":  # the next slice of the table lands as a file first
        from loopline.ingestion.sql_source import SqlSource

        source = SqlSource(spec, settings.home)
        pulled = source.pull(zones.landing)
        log.info("sql source: %s", f"landed {pulled.name}" if pulled else "no new rows")
        if source.last_warnings and alert is not None:
            alert(f"Loopline: {model_name} SQL pull needs a look", "\n".join(source.last_warnings))
    claimed, found = claim_all(zones.landing, zones.processing, settings.landing_settle_seconds)
    for line in found.lines():
        log.info("landing zone %s: %s", zones.landing, line.strip())
    return [asdict(b) for b in claimed]


def validate_step(batch: dict, model_name: str, settings: Settings) -> dict:
    spec = load_spec(model_name, settings.models_dir)
    claimed = ClaimedBatch(**batch)
    outcome = validate_claimed(claimed, spec, settings.expectations_dir, settings.pseudonym_secret)
    return asdict(outcome)


def quarantine_step(outcomes: list[dict], model_name: str, settings: Settings) -> list[dict]:
    """Quarantine every rejected batch; returns where each went and why."""
    zones = zones_for(load_spec(model_name, settings.models_dir).dataset.name, settings)
    moved = []
    for outcome in (BatchOutcome(**o) for o in outcomes):
        if not outcome.accepted:
            target = quarantine(outcome, zones.quarantine)
            moved.append({"batch_id": outcome.batch_id, "folder": str(target), "summary": outcome.summary})
    return moved


def version_step(outcomes: list[dict], model_name: str, ingested_for: str, settings: Settings) -> dict:
    """Commit the accepted batches; returns the new version (or None) and where each batch ended."""
    spec = load_spec(model_name, settings.models_dir)
    registry = registry_for(settings)
    registry.init()
    accepted = [BatchOutcome(**o) for o in outcomes if o["accepted"]]
    zones = zones_for(spec.dataset.name, settings)
    version = commit_accepted(accepted, spec, registry, zones, ingested_for, settings.pseudonym_secret)
    for outcome in accepted:
        log.info("%s: %s %s", outcome.source_name, outcome.status, "; ".join(outcome.notes))
    return {
        "version": version.to_dict() if version else None,
        "batches": [{"batch_id": o.batch_id, "status": o.status, "notes": o.notes} for o in accepted],
        "quarantined": [
            {"batch_id": o.batch_id, "folder": o.folder, "summary": o.summary}
            for o in accepted
            if Path(o.folder).parent == zones.quarantine
        ],
    }


def unannounced_versions(model_name: str, settings: Settings, last_announced: str | None) -> list[str]:
    """Data versions newer than the last one a dataset event was sent for (all of them if none was)."""
    spec = load_spec(model_name, settings.models_dir)
    registry = registry_for(settings)
    if not (settings.data_registry / ".git").exists():
        return []
    versions = registry.versions(spec.dataset.name)
    if last_announced is None:
        return versions
    return [v for v in versions if int(v[1:]) > int(last_announced[1:])]


def last_announced(events) -> str | None:
    """The newest data version named by an earlier dataset event (events: newest first)."""
    for event in events:
        version = (event.extra or {}).get("version")
        if isinstance(version, str) and re.fullmatch(r"v\d{4,}", version):
            return version
    return None


# -- quarantine: list it, replay it after a fix -------------------------------------------


class ReplayError(LooplineError, ValueError):
    """A replay names a batch that is not in quarantine (the message says where it is), or a bad rename."""


@dataclass
class Quarantined:
    batch_id: str
    source_name: str
    cause: str  # the report's first line, after "FAILED: "
    since: str  # when it was quarantined (the folder's mtime), UTC
    replays: int

    def line(self) -> str:
        again = f", replayed {self.replays}x" if self.replays else ""
        return f"{self.batch_id}  ({self.source_name}, since {self.since}{again})\n    {self.cause}"


def quarantine_cause(folder: Path) -> str:
    """A quarantined batch's cause: its report's first line (a report written before causes: its second)."""
    summary = folder / "validation.txt"
    if not summary.exists():
        return "(no report)"
    lines = summary.read_text().splitlines()
    head, sep, cause = (lines[0] if lines else "").partition(": FAILED: ")
    if sep:
        return cause
    return lines[1].strip() if len(lines) > 1 else (lines[0] if lines else "")


def quarantined_batches(model_name: str, settings: Settings) -> list[Quarantined]:
    """Every batch in the model's quarantine, oldest first, with the cause its report names."""
    zones = zones_for(load_spec(model_name, settings.models_dir).dataset.name, settings)
    if not zones.quarantine.is_dir():
        return []
    found = []
    for folder in sorted(zones.quarantine.iterdir(), key=lambda p: (p.stat().st_mtime, p.name)):
        if folder.name.startswith(".") or not (folder / STATE_FILE).is_file():
            continue
        batch = load_claimed(folder)
        since = datetime.fromtimestamp(folder.stat().st_mtime, UTC).isoformat(timespec="seconds")
        found.append(
            Quarantined(batch.batch_id, batch.source_name, quarantine_cause(folder), since, len(batch.replays))
        )
    return found


def _where_is(batch_id: str, zones: Zones) -> str:
    if (zones.archive / batch_id).is_dir():
        outcome = zones.archive / batch_id / OUTCOME_FILE
        said = outcome.read_text().splitlines()[0] if outcome.exists() else "archived"
        return f"already archived ({said})"
    if (zones.processing / batch_id).is_dir():
        return "in processing (being ingested; the next ingest run finishes it)"
    return "not found in any zone"


def _parse_renames(renames: list[str]) -> dict[str, str]:
    parsed = {}
    for item in renames:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise ReplayError(f"--rename {item!r}: write it as OLD=NEW (the file's column = the spec's column)")
        parsed[old] = new
    return parsed


def replay(
    model_name: str,
    settings: Settings,
    batch_ids: list[str] | None = None,
    renames: list[str] | None = None,
    who: str = "",
) -> list[BatchOutcome]:
    """Send quarantined batches through validation again, after a fix of the suite, the spec or the source.

    Each batch moves whole from ``quarantine/`` back to ``processing/`` (one rename, as a claim
    does), is validated with today's suite and spec, and then goes where a new batch would: versioned
    (exactly once: its hash is in the registry's manifest), archived as a duplicate, or back to
    quarantine with a fresh report (the earlier one kept beside it). A crash leaves it in
    processing, where the next ingest run (or replay) resumes it. ``renames`` (``OLD=NEW``) are
    applied to the column names when the untouched file is read: a column renamed upstream is
    recovered without editing the file. Without ``batch_ids``, every quarantined batch is replayed.
    """
    spec = load_spec(model_name, settings.models_dir)
    load_suite_dict(spec.dataset.expectation_suite, settings.expectations_dir)  # a broken suite: nothing moves
    zones = zones_for(spec.dataset.name, settings)
    mapping = _parse_renames(renames or [])
    if batch_ids:
        missing = {b: _where_is(b, zones) for b in batch_ids if not (zones.quarantine / b / STATE_FILE).is_file()}
        if missing:
            raise ReplayError("; ".join(f"{b} is not in quarantine: {where}" for b, where in missing.items()))
        chosen = list(dict.fromkeys(batch_ids))
    else:
        chosen = [q.batch_id for q in quarantined_batches(model_name, settings)]
    if not chosen:
        return []
    zones.processing.mkdir(parents=True, exist_ok=True)
    claimed = []
    for batch_id in chosen:
        folder = zones.quarantine / batch_id
        batch = load_claimed(folder)
        number = len(batch.replays) + 1
        for name in ("validation.json", "validation.txt"):  # the earlier report stays beside the fresh one
            if (folder / name).exists():
                shutil.copy2(folder / name, folder / name.replace("validation.", f"validation.before-replay-{number}."))
        batch.renames = {**batch.renames, **mapping}
        batch.replays.append(
            {"at": datetime.now(UTC).isoformat(timespec="seconds"), "by": who or "unknown", "renames": mapping}
        )
        batch.folder = str(zones.processing / batch_id)
        tmp = folder / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(batch), indent=2))
        os.replace(tmp, folder / STATE_FILE)
        _move_folder(folder, zones.processing)
        crash_point("replay")
        claimed.append(batch)
    outcomes = [validate_claimed(b, spec, settings.expectations_dir, settings.pseudonym_secret) for b in claimed]
    for outcome in outcomes:
        if not outcome.accepted:
            outcome.folder = str(quarantine(outcome, zones.quarantine))
    registry = registry_for(settings)
    registry.init()
    accepted = [o for o in outcomes if o.accepted]
    if accepted:
        commit_accepted(accepted, spec, registry, zones, f"replay by {who or 'unknown'}", settings.pseudonym_secret)
    for outcome in outcomes:
        log.info("replayed %s: %s", outcome.batch_id, outcome.status or "rejected")
    return outcomes
