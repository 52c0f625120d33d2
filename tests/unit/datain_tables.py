"""A model of the tests' own for the data-in tests: its folder, its suite and its rows, made here.

Nothing comes from the demo models: the column names are not credit_risk's, the rows are drawn
by ``rows`` below, and the suite is written the way ``loopline onboard`` writes one (column set,
not-null, types, bounds, levels). The platform must handle it knowing only the spec.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from loopline.core.settings import Settings, get_settings
from loopline.core.spec import ModelSpec, load_spec
from loopline.ingestion.landing import mark_complete

NAME = "parcel_claims"
ID, TIME, TARGET = "claim_ref", "filed_at", "was_fraud"
NUMERIC = {"parcel_value": (0, 100_000), "weight_kg": (0, 500), "prior_claims": (0, 50)}
LEVELS = {"carrier": ["alpha", "beta", "gamma"]}
COLUMNS = [ID, TIME, *NUMERIC, *LEVELS, TARGET]
START = datetime(2026, 1, 5, tzinfo=UTC)


def spec_dict(**source) -> dict:
    raw = {
        "name": NAME,
        "task": "binary",
        "dataset": {
            "name": NAME,
            "entity_id": ID,
            "timestamp": TIME,
            "target": TARGET,
            "expectation_suite": f"{NAME}_batch",
            "rules": {"earliest_timestamp": "2020-01-01", "future_tolerance_minutes": 60},
        },
        "features": {
            "version": "1",
            "numeric": {n: {"min": lo, "max": hi} for n, (lo, hi) in NUMERIC.items()},
            "categorical": LEVELS,
        },
        "training": {
            "valid_weeks": 1,
            "holdout_weeks": 1,
            "min_train_rows": 50,
            "decision_threshold": 0.5,
            "seed": 1,
            "early_stopping_rounds": 10,
            "params": {"objective": "binary"},
        },
        "quality_gate": {"min_auc": 0.6},
    }
    if source:
        raw["dataset"]["source"] = source
    return raw


def suite_dict() -> dict:
    numeric_types = ["int8", "int16", "int32", "int64", "float16", "float32", "float64", "Int64", "Float64"]
    exps: list[dict] = [
        {"type": "expect_table_columns_to_match_set", "kwargs": {"column_set": list(COLUMNS), "exact_match": True}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": ID}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": ID}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": TIME}},
        {
            "type": "expect_column_values_to_match_regex",
            "kwargs": {"column": TIME, "regex": r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}"},
        },
    ]
    for name, (lo, hi) in NUMERIC.items():
        exps += [
            {"type": "expect_column_values_to_be_in_type_list", "kwargs": {"column": name, "type_list": numeric_types}},
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": name, "min_value": lo, "max_value": hi},
            },
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": name}},
        ]
    for name, levels in LEVELS.items():
        exps.append({"type": "expect_column_values_to_be_in_set", "kwargs": {"column": name, "value_set": levels}})
    exps.append({"type": "expect_column_values_to_be_in_set", "kwargs": {"column": TARGET, "value_set": [0, 1]}})
    return {"name": f"{NAME}_batch", "expectations": exps, "meta": {}}


def make_line(tmp_path: Path, **source) -> tuple[Settings, ModelSpec]:
    """Settings with this model's folder and suite only, and a state folder of its own."""
    models, expectations, home = tmp_path / "models", tmp_path / "expectations", tmp_path / "home"
    (models / NAME).mkdir(parents=True)
    expectations.mkdir()
    (models / NAME / "spec.yaml").write_text(yaml.safe_dump(spec_dict(**source)))
    write_suite(expectations, suite_dict())
    settings = dataclasses.replace(
        get_settings(),
        home=home,
        models_dir=models,
        expectations_dir=expectations,
        landing_dir=home / "landing",
        processing_dir=home / "processing",
        quarantine_dir=home / "quarantine",
        archive_dir=home / "archive",
        data_registry=home / "data-registry",
        dvc_remote_url=str(home / "dvc-remote"),
        landing_settle_seconds=0.0,
    )
    return settings, load_spec(NAME, models)


def env_of(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process (or the CLI) these same settings."""
    return {
        "LOOPLINE_HOME": str(settings.home),
        "LOOPLINE_MODELS_DIR": str(settings.models_dir),
        "LOOPLINE_EXPECTATIONS_DIR": str(settings.expectations_dir),
        "LOOPLINE_LANDING_SETTLE_SECONDS": "0",
    }


def write_suite(expectations: Path, suite: dict) -> None:
    (expectations / f"{NAME}_batch.json").write_text(json.dumps(suite, indent=2))


def rows(n: int, seed: int, first: int = 0, start: datetime = START) -> pd.DataFrame:
    """n valid rows, ids ``C<first>`` on, a row a minute from ``start``, as ISO text (naive = UTC)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            ID: [f"C{first + i:07d}" for i in range(n)],
            TIME: [(start + timedelta(minutes=first + i)).strftime("%Y-%m-%d %H:%M:%S") for i in range(n)],
            "parcel_value": rng.integers(50, 90_000, n),
            "weight_kg": rng.uniform(0.1, 400, n).round(2),
            "prior_claims": rng.integers(0, 10, n),
            "carrier": rng.choice(LEVELS["carrier"], n),
            TARGET: rng.integers(0, 2, n),
        }
    )
    return frame[COLUMNS]


def drop(folder: Path, name: str, data: bytes) -> Path:
    """Land bytes under a name, complete (with its marker), as an upstream system would."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    tmp.write_bytes(data)
    path = folder / name
    tmp.replace(path)
    mark_complete(path)
    return path


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def ingest_once(settings: Settings, alerts: list | None = None) -> dict:
    """One ingest run, the DAG's steps in order, without Airflow; ``alerts`` collects (title, body)."""
    from loopline.ingestion.ingest import claim_step, quarantine_step, validate_step, version_step

    def alert(title: str, body: str) -> None:
        if alerts is not None:
            alerts.append((title, body))

    outcomes = [validate_step(b, NAME, settings) for b in claim_step(NAME, settings, alert)]
    quarantine_step(outcomes, NAME, settings)
    return version_step(outcomes, NAME, "unit", settings)


def stored(settings: Settings) -> pd.DataFrame:
    """Every row of the dataset's newest version (empty if there is none)."""
    from loopline.ingestion.data_registry import DataRegistry

    registry = DataRegistry(settings.data_registry, settings.dvc_remote_url)
    if not (settings.data_registry / ".git").exists() or not registry.versions(NAME):
        return pd.DataFrame(columns=COLUMNS)
    version = registry.resolve(NAME)
    return registry.load(version, settings.home / f"pulled-{version.version}")
