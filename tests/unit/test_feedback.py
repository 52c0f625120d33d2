"""Delayed outcomes: checked, stored under the log's pseudonym, joined into a labelled batch; bad files quarantined."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pandas as pd
import pytest

from loopline.core.pseudonym import pseudonym
from loopline.core.settings import get_settings
from loopline.core.spec import load_spec
from loopline.ingestion.ingest import zones_for
from loopline.monitoring import outcomes
from loopline.monitoring.feedback import ingest_outcomes, outcome_zones
from loopline.serving.prediction_log import monitor_name, read_window
from tests.generators import credit_risk as datagen


@pytest.fixture
def settings(tmp_path):
    base = get_settings()
    return replace(
        base,
        landing_dir=tmp_path / "landing",
        quarantine_dir=tmp_path / "quarantine",
        archive_dir=tmp_path / "archive",
        prediction_log_dir=tmp_path / "predictions",
        state_db_uri=f"sqlite:///{tmp_path / 'state.db'}",
    )


def log_predictions(settings, batch: pd.DataFrame, version: str = "1") -> None:
    """Prediction-log lines as the service writes them (BentoML's default monitor, JSON lines)."""
    spec = load_spec("credit_risk", settings.models_dir)
    folder = settings.prediction_log_dir / monitor_name("credit_risk") / "data"
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    with (folder / "data.0.log").open("a") as out:
        for row in batch.to_dict(orient="records"):
            record = {name: row[name] for name in spec.features.names}
            record |= {"entity_hash": pseudonym(row["applicant_id"], settings.pseudonym_secret)}
            record |= {"model_version": version, "arm": "champion", "score": 0.2, "latency_seconds": 0.01}
            out.write(json.dumps({**record, "logged_at": now}, default=str) + "\n")
        out.write('{"torn line')  # a crash mid-write: skipped, not fatal


def test_outcomes_are_stored_joined_and_landed_as_a_batch(settings):
    spec = load_spec("credit_risk", settings.models_dir)
    batch = datagen.make_batch(3, n_rows=50, seed=2)
    log_predictions(settings, batch)
    assert read_window(settings.prediction_log_dir, "credit_risk").skipped_lines == 1
    zones = outcome_zones(spec, settings)
    zones.landing.mkdir(parents=True)
    batch[["applicant_id", "defaulted"]].to_csv(zones.landing / "labels.csv", index=False)

    summary = ingest_outcomes("credit_risk", settings)
    assert summary["labels"] == 50 and summary["joined_rows"] == 50 and summary["quarantined"] == []
    stored = outcomes.read(settings, "credit_risk")
    assert len(stored) == 50 and not any(stored["entity_hash"].isin(batch["applicant_id"]))  # never the clear id
    [landed] = zones_for(spec.dataset.name, settings).landing.glob("feedback-*.csv")
    frame = pd.read_csv(landed)
    assert list(frame.columns) == spec.input_columns
    assert sorted(frame["defaulted"]) == sorted(batch["defaulted"])
    assert not list(zones.landing.iterdir()) and len(list(zones.archive.iterdir())) == 1

    # The same labels again: stored once (upsert), nothing duplicated.
    batch[["applicant_id", "defaulted"]].to_csv(zones.landing / "labels-again.csv", index=False)
    ingest_outcomes("credit_risk", settings)
    assert len(outcomes.read(settings, "credit_risk")) == 50


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("applicant_id,defaulted\nA1,yes\n", "must be 0 or 1"),
        ("applicant_id,outcome\nA1,1\n", "lacks columns"),
        ("applicant_id,defaulted\n,1\n", "have no applicant_id"),
        ("", "EmptyDataError"),
    ],
)
def test_a_bad_labels_file_is_quarantined_with_a_report_and_kept(settings, content, message):
    spec = load_spec("credit_risk", settings.models_dir)
    zones = outcome_zones(spec, settings)
    zones.landing.mkdir(parents=True)
    (zones.landing / "bad.csv").write_text(content)
    summary = ingest_outcomes("credit_risk", settings)
    assert len(summary["quarantined"]) == 1
    assert (zones.quarantine / "bad.csv").read_text() == content  # nothing lost
    assert message in (zones.quarantine / "bad.csv.report.txt").read_text()
    assert outcomes.read(settings, "credit_risk") is None
