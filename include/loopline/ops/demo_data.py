"""Generated demo data: the platform's side of a model's ``generator.py``.

A model folder may bring a generator (``models/<name>/generator.py``) that makes weekly
batches with a known relation between inputs and target, for the demo, the simulation and
the tests. Its contract: ``make_batch(week, n_rows, seed, drift, with_labels) -> DataFrame``
(a batch the model's own suite accepts, whatever the knobs), ``make_labels(week, n_rows,
seed, drift)`` (the outcomes that arrive later for an unlabelled batch), and optionally
``write_malformed(kind, path, week, seed)`` with ``MALFORMED_KINDS``. The platform gives
it the week calendar, the drift knobs and an atomic writer, so every generator speaks the
same language.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import ModuleType

import pandas as pd

from loopline.core.errors import LooplineError
from loopline.ingestion.landing import mark_complete

EPOCH = date(2026, 1, 5)  # Monday of week 0
GENERATOR_FILE = "generator.py"


class NoGenerator(LooplineError, LookupError):
    """The model folder has no generator.py (or it does not keep the contract)."""


@dataclass(frozen=True)
class DriftKnobs:
    """How far a generated week departs from the model's stable world (0 none, 1 strong).

    Each generator documents what its shifts mean for its own inputs.
    """

    covariate_shift: float = 0.0  # who or what arrives changes (the inputs' distribution)
    concept_shift: float = 0.0  # what predicts the target changes (the input-target relation)


def week_start(week: int) -> pd.Timestamp:
    return pd.Timestamp(EPOCH) + pd.Timedelta(weeks=week)


def days_to_now(last_week: int, now: pd.Timestamp) -> int:
    """Whole days that move the calendar so week ``last_week`` ends in the 24 hours before ``now``.

    Whole days keep every hour-of-day pattern a generator draws (an ``hour`` input stays true to its
    timestamp); never negative (a calendar already reaching ``now`` stays where it is).
    """
    end = week_start(last_week + 1).tz_localize("UTC")
    now = now.tz_convert("UTC") if now.tzinfo else now.tz_localize("UTC")
    return max(0, (now - end).days)


def shift_days(df: pd.DataFrame, column: str, days: int) -> pd.DataFrame:
    """``df`` with its timestamp ``column`` moved ``days`` later, written back in the form it had."""
    if not days:
        return df
    values = df[column]
    moved = pd.to_datetime(values, format="ISO8601") + pd.Timedelta(days=days)
    if pd.api.types.is_datetime64_any_dtype(values):
        return df.assign(**{column: moved})
    return df.assign(**{column: moved.dt.strftime("%Y-%m-%d %H:%M:%S")})


def write_batch(df: pd.DataFrame, path: Path) -> Path:
    """Write CSV (or parquet) atomically (a temp name, then a rename) and mark it complete (``<name>.done``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".parquet":
        df.to_parquet(tmp, index=False)
    else:
        df.to_csv(tmp, index=False)
    os.replace(tmp, path)
    mark_complete(path)
    return path


def load_generator(model_dir: Path) -> ModuleType:
    """The generator module of a model folder, loaded by path (model folders are not packages)."""
    path = Path(model_dir) / GENERATOR_FILE
    if not path.is_file():
        raise NoGenerator(f"{model_dir} has no {GENERATOR_FILE}; generated data needs one (see loopline.ops.demo_data)")
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"loopline_generator_{Path(model_dir).name}_{key}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses in the module look themselves up here
    try:
        module_spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(name, None)
        raise
    missing = [f for f in ("make_batch", "make_labels") if not callable(getattr(module, f, None))]
    if missing:
        sys.modules.pop(name, None)
        raise NoGenerator(f"{path} does not define {missing} (see loopline.ops.demo_data)")
    return module
