"""Delayed outcomes in, labelled production data out.

A labelled batch (CSV with the spec's entity id and target columns)
lands in ``<landing>/<dataset>_outcomes/``. Each file is checked (ids present, labels
0/1); a bad file is moved to quarantine with a readable report and never lost. A good
one is stored as outcomes (keyed by the same pseudonym the prediction log uses: live
AUC per model version), then joined with the logged features of those predictions into
an ordinary batch written to the dataset's landing zone, where the ingest DAG validates
it with the expectation suite and versions it with DVC like any other batch. So the
next training run includes the newly labelled production data.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from loopline.core.pseudonym import pseudonym
from loopline.core.settings import Settings
from loopline.core.spec import ModelSpec, load_spec
from loopline.ingestion.ingest import zones_for
from loopline.ingestion.landing import mark_complete
from loopline.monitoring import outcomes
from loopline.serving.prediction_log import read_window

log = logging.getLogger(__name__)


def outcome_zones(spec: ModelSpec, settings: Settings):
    return zones_for(f"{spec.dataset.name}_outcomes", settings)


def labelled_batch(labels: pd.DataFrame, spec: ModelSpec, settings: Settings) -> pd.DataFrame:
    """Logged features of the labelled predictions, as a raw batch (the pseudonym stands in for the id)."""
    ds = spec.dataset
    rows = read_window(settings.prediction_log_dir, spec.name).rows
    if rows.empty:
        return pd.DataFrame(columns=spec.input_columns)
    hashed = pd.DataFrame(
        {
            "entity_hash": [pseudonym(str(e), settings.pseudonym_secret) for e in labels[ds.entity_id]],
            ds.target: labels[ds.target].to_numpy(),  # as check_frame gives it: 0/1, a number or a class
        }
    )
    logged = rows.drop_duplicates("entity_hash", keep="last")
    joined = logged.merge(hashed, on="entity_hash")
    applied = pd.to_datetime(joined["logged_at"].astype(float), unit="s", utc=True).dt.strftime("%Y-%m-%d %H:%M:%S")
    batch = joined.assign(**{ds.entity_id: joined["entity_hash"], ds.timestamp: applied})
    return batch[spec.input_columns]


def _quarantine(path: Path, zones, reason: str) -> Path:
    zones.quarantine.mkdir(parents=True, exist_ok=True)
    target = zones.quarantine / path.name
    path.replace(target)
    report = zones.quarantine / f"{path.name}.report.txt"
    report.write_text(f"{path.name} was not accepted as a labelled batch.\n\nReason: {reason}\n")
    return report


def ingest_outcomes(model: str, settings: Settings) -> dict[str, Any]:
    """Process every labelled batch waiting in the outcomes landing zone."""
    spec = load_spec(model, settings.models_dir)
    zones = outcome_zones(spec, settings)
    zones.landing.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"files": 0, "labels": 0, "joined_rows": 0, "batches": [], "quarantined": []}
    for path in sorted(p for p in zones.landing.iterdir() if p.is_file() and not p.name.startswith(".")):
        summary["files"] += 1
        content = path.read_bytes()
        batch_id = hashlib.sha256(content).hexdigest()[:16]
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
            stored = outcomes.store(frame, spec, batch_id, settings)
        except (outcomes.OutcomeError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            report = _quarantine(path, zones, f"{type(err).__name__}: {err}")
            summary["quarantined"].append(str(report))
            log.warning("quarantined %s: %s", path.name, err)
            continue
        summary["labels"] += stored
        checked = outcomes.check_frame(frame, spec)
        batch = labelled_batch(checked, spec, settings)
        if not batch.empty:
            landing = zones_for(spec.dataset.name, settings).landing
            landing.mkdir(parents=True, exist_ok=True)
            target = landing / f"feedback-{batch_id}.csv"
            partial = landing / f".{target.name}.partial"
            batch.to_csv(partial, index=False)
            partial.replace(target)  # the ingest sensor never sees half a file
            mark_complete(target)
            summary["batches"].append(str(target))
            summary["joined_rows"] += len(batch)
        zones.archive.mkdir(parents=True, exist_ok=True)
        path.replace(zones.archive / f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{path.name}")
    return summary
