"""Delayed outcome labels of live predictions (did the applicant default? what did the delivery take?).

Outcomes arrive weeks after the prediction, keyed by applicant id. They are stored
under the same pseudonym the prediction log uses (never the id in clear), so they
join the log for the task's live metric per model version, and, joined with the logged
features, become labelled production data for the next training run. The stored outcome is a
number: 0/1 (binary), the value (regression) or the class's index in ``dataset.classes``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
from sqlalchemy import Column, DateTime, Float, MetaData, String, Table, create_engine, delete, insert, select

from loopline.core.errors import LooplineError
from loopline.core.pseudonym import pseudonym
from loopline.core.settings import Settings
from loopline.core.spec import ModelSpec
from loopline.core.tasks import LabelError, class_names, task_of

metadata = MetaData()
outcomes = Table(
    "loopline_outcomes",
    metadata,
    Column("model", String(128), primary_key=True),
    Column("entity_hash", String(64), primary_key=True),
    Column("outcome", Float, nullable=False),
    Column("observed_at", DateTime(timezone=True), nullable=False),
    Column("batch_id", String(128), nullable=False),
)


class OutcomeError(LooplineError, ValueError):
    """A labelled batch is unusable: missing columns, labels the model's task cannot use, ids missing."""


def _engine(settings: Settings):
    engine = create_engine(settings.state_db_uri, future=True, pool_pre_ping=True)
    metadata.create_all(engine)
    return engine


def check_frame(frame: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """Ids stripped, the target as the dataset holds it, and ``outcome`` as stored (see the module docstring)."""
    entity_id, target = spec.dataset.entity_id, spec.dataset.target
    missing = [c for c in (entity_id, target) if c not in frame.columns]
    if missing:
        raise OutcomeError(f"labelled batch lacks columns {missing}; it needs {entity_id!r} and {target!r}")
    ids = frame[entity_id].astype("string").str.strip()
    if ids.isna().any() or (ids == "").any():
        raise OutcomeError(f"{int(ids.isna().sum() + (ids == '').sum())} rows have no {entity_id}")
    task = task_of(spec)
    try:
        outcome = task.labels(frame[target], spec)
    except LabelError as err:
        raise OutcomeError(str(err)) from err
    values = class_names(frame[target]) if task.name == "multiclass" else outcome
    return pd.DataFrame({entity_id: ids, target: values, "outcome": outcome.astype(float)})


def store(frame: pd.DataFrame, spec: ModelSpec, batch_id: str, settings: Settings) -> int:
    """Upsert a checked labelled batch; returns the rows stored. Re-storing the same batch changes nothing."""
    checked = check_frame(frame, spec)
    model, entity_id = spec.name, spec.dataset.entity_id
    now = datetime.now(UTC)
    rows = [
        {"model": model, "entity_hash": pseudonym(e, settings.pseudonym_secret), "outcome": float(y),
         "observed_at": now, "batch_id": batch_id}
        for e, y in zip(checked[entity_id], checked["outcome"], strict=True)
    ]  # fmt: skip
    hashes = [r["entity_hash"] for r in rows]
    with _engine(settings).begin() as conn:
        for start in range(0, len(hashes), 500):
            chunk = hashes[start : start + 500]
            conn.execute(delete(outcomes).where(outcomes.c.model == model, outcomes.c.entity_hash.in_(chunk)))
        if rows:
            conn.execute(insert(outcomes), rows)
    return len(rows)


def read(settings: Settings, model: str) -> pd.DataFrame | None:
    """entity_hash, outcome, observed_at of every known outcome; None when there are none yet."""
    query = select(outcomes.c.entity_hash, outcomes.c.outcome, outcomes.c.observed_at).where(outcomes.c.model == model)
    with _engine(settings).connect() as conn:
        frame = pd.DataFrame(conn.execute(query).mappings().all())
    return None if frame.empty else frame
