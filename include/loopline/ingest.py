"""The life of a landed batch: landing → processing → (dataset + archive) | quarantine.

Every move is an atomic rename of a whole folder, so at any instant a batch is
in exactly one place, and a crash at any point leaves it somewhere the next run
picks up from:

- ``landing/<file>``: dropped by an upstream system, not yet seen.
- ``processing/<batch_id>/<file>``: claimed by a run; validation reports are
  written beside it. A run that crashed leaves it here; the next run resumes it.
- ``quarantine/<batch_id>/``: rejected, with ``validation.json`` (full GE
  result) and ``validation.txt`` (readable summary) beside the untouched file.
- ``archive/<batch_id>/``: accepted and committed to the data registry (or a
  byte-identical copy of a batch already there), kept for audit.

The batch id is the file's stem plus a prefix of its SHA-256, so the same bytes
landing twice are recognised and never ingested twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from loopline.data_registry import BatchRecord, DataRegistry, DataVersion
from loopline.settings import Settings
from loopline.spec import ModelSpec, load_spec
from loopline.validation import READABLE_SUFFIXES, ValidationReport, read_batch, validate_file

STATE_FILE = "batch.json"


@dataclass
class ClaimedBatch:
    batch_id: str
    sha256: str
    source_name: str
    folder: str  # processing/<batch_id>

    @property
    def file(self) -> Path:
        return Path(self.folder) / self.source_name


@dataclass
class BatchOutcome:
    batch_id: str
    sha256: str
    source_name: str
    folder: str
    accepted: bool
    rows: int | None
    summary: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def batch_id_for(path: Path, sha256: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:80] or "batch"
    return f"{stem}-{sha256[:12]}"


def list_landed(landing_dir: Path) -> list[Path]:
    """Files ready to ingest; hidden and temporary files (half-written uploads) are left alone."""
    if not landing_dir.is_dir():
        return []
    return sorted(
        p
        for p in landing_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith((".tmp", ".part"))
    )


def list_in_flight(processing_dir: Path) -> list[Path]:
    if not processing_dir.is_dir():
        return []
    return sorted(p for p in processing_dir.iterdir() if (p / STATE_FILE).is_file())


def claim(landed: Path, processing_dir: Path) -> ClaimedBatch:
    """Move one landed file into its own processing folder (atomic rename)."""
    sha = sha256_of(landed)
    batch_id = batch_id_for(landed, sha)
    folder = processing_dir / batch_id
    if folder.exists():  # same bytes already in flight: keep both, the copy is a duplicate
        batch_id = f"{batch_id}-dup{len(list(processing_dir.glob(batch_id + '*')))}"
        folder = processing_dir / batch_id
    staging = processing_dir / f".{batch_id}.claiming"
    staging.mkdir(parents=True, exist_ok=True)
    batch = ClaimedBatch(batch_id=batch_id, sha256=sha, source_name=landed.name, folder=str(folder))
    (staging / STATE_FILE).write_text(json.dumps(asdict(batch), indent=2))
    os.replace(landed, staging / landed.name)
    os.replace(staging, folder)
    return batch


def load_claimed(folder: Path) -> ClaimedBatch:
    return ClaimedBatch(**json.loads((folder / STATE_FILE).read_text()))


def claim_all(landing_dir: Path, processing_dir: Path) -> list[ClaimedBatch]:
    """Resume batches a crashed run left in processing, then claim everything new."""
    processing_dir.mkdir(parents=True, exist_ok=True)
    for leftover in processing_dir.glob(".*.claiming"):  # crash inside claim(): undo it
        for file in leftover.iterdir():
            if file.name != STATE_FILE:
                os.replace(file, landing_dir / file.name)
        (leftover / STATE_FILE).unlink(missing_ok=True)
        leftover.rmdir()
    resumed = [load_claimed(f) for f in list_in_flight(processing_dir)]
    return resumed + [claim(p, processing_dir) for p in list_landed(landing_dir)]


def validate_claimed(batch: ClaimedBatch, spec: ModelSpec, expectations_dir: Path) -> BatchOutcome:
    """Validate a claimed batch with GE and leave the report beside it."""
    if batch.file.suffix not in READABLE_SUFFIXES:
        report = ValidationReport(
            subject=batch.source_name,
            success=False,
            rows=None,
            read_error=f"unsupported file type {batch.file.suffix!r}; expected one of {READABLE_SUFFIXES}",
            suite=spec.dataset.expectation_suite,
        )
    else:
        # entity ids in the report are pseudonymised (secret: the settings' pseudonym secret)
        report, _ = validate_file(
            batch.file, spec.dataset.expectation_suite, expectations_dir, entity_id=spec.dataset.entity_id
        )
    report.write(Path(batch.folder))
    return BatchOutcome(
        batch_id=batch.batch_id,
        sha256=batch.sha256,
        source_name=batch.source_name,
        folder=batch.folder,
        accepted=report.success,
        rows=report.rows,
        summary=report.summary(),
    )


def quarantine(outcome: BatchOutcome, quarantine_dir: Path) -> Path:
    """Move a rejected batch, untouched, with its reports into quarantine."""
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    target = quarantine_dir / outcome.batch_id
    os.replace(outcome.folder, target)
    return target


def normalise(df: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """Give a validated batch the dataset's column order and dtypes before it is stored."""
    ds = spec.dataset
    out = pd.DataFrame(
        {
            ds.entity_id: df[ds.entity_id].astype("string"),
            ds.timestamp: pd.to_datetime(df[ds.timestamp], utc=True).dt.tz_localize(None),
        }
    )
    for name in spec.features.numeric:
        out[name] = pd.to_numeric(df[name]).astype("float64")
    for name in spec.features.categorical:
        out[name] = df[name].astype("string")
    out[ds.target] = pd.to_numeric(df[ds.target]).astype("Int8")
    return out


def commit_accepted(
    outcomes: list[BatchOutcome],
    spec: ModelSpec,
    registry: DataRegistry,
    archive_dir: Path,
    ingested_for: str,
) -> DataVersion | None:
    """Append accepted batches to the dataset as one new DVC version, then archive them.

    Archiving happens only after the commit and push succeeded; a crash in between
    leaves the batch in processing, and the re-run finds its hash already
    committed and only archives it.
    """
    accepted = [o for o in outcomes if o.accepted]
    records = []
    for outcome in accepted:
        frame = normalise(read_batch(Path(outcome.folder) / outcome.source_name), spec)
        record = BatchRecord(
            batch_id=outcome.batch_id,
            sha256=outcome.sha256,
            source_name=outcome.source_name,
            rows=len(frame),
            ingested_for=ingested_for,
        )
        records.append((record, frame))
    version = None
    if records:
        names = ", ".join(o.source_name for o in accepted)
        version = registry.commit_batches(spec.dataset.name, records, f"ingest {names} ({ingested_for})")
    archive_dir.mkdir(parents=True, exist_ok=True)
    for outcome in accepted:
        os.replace(outcome.folder, archive_dir / outcome.batch_id)
    return version


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


def batches_waiting(model_name: str, settings: Settings) -> bool:
    zones = zones_for(load_spec(model_name, settings.models_dir).dataset.name, settings)
    return bool(list_landed(zones.landing) or list_in_flight(zones.processing))


def claim_step(model_name: str, settings: Settings) -> list[dict]:
    zones = zones_for(load_spec(model_name, settings.models_dir).dataset.name, settings)
    return [asdict(b) for b in claim_all(zones.landing, zones.processing)]


def validate_step(batch: dict, model_name: str, settings: Settings) -> dict:
    spec = load_spec(model_name, settings.models_dir)
    return asdict(validate_claimed(ClaimedBatch(**batch), spec, settings.expectations_dir))


def quarantine_step(outcomes: list[dict], model_name: str, settings: Settings) -> list[dict]:
    """Quarantine every rejected batch; returns where each went and why."""
    zones = zones_for(load_spec(model_name, settings.models_dir).dataset.name, settings)
    moved = []
    for outcome in (BatchOutcome(**o) for o in outcomes):
        if not outcome.accepted:
            target = quarantine(outcome, zones.quarantine)
            moved.append({"batch_id": outcome.batch_id, "folder": str(target), "summary": outcome.summary})
    return moved


def version_step(outcomes: list[dict], model_name: str, ingested_for: str, settings: Settings) -> dict | None:
    spec = load_spec(model_name, settings.models_dir)
    registry = DataRegistry(settings.data_registry, settings.dvc_remote_url)
    registry.init()
    outcomes_ = [BatchOutcome(**o) for o in outcomes]
    version = commit_accepted(outcomes_, spec, registry, zones_for(spec.dataset.name, settings).archive, ingested_for)
    return version.to_dict() if version else None
