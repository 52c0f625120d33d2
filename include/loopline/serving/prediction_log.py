"""The service's prediction log: BentoML's monitoring files, JSON lines, one row per scored application.

The service writes it through ``loopline.serving.log_monitor.PredictionLogMonitor`` (BentoML's
default monitor's files and lines, written without a logging record per row).
Canary analysis and drift monitoring both read it. Files live under
``<prediction_log_dir>/<model>_predictions/data/data.<worker>.log`` (rotated daily
to ``...log.<date>``). A line cut short by a crash is skipped and counted, never
fatal: one torn line must not blind the monitor to the rest of the window.

Rows a shadow version scored (arm ``shadow``: a copy of a request the champion answered,
under the answer's prediction id) answered nobody: readers get only answers unless they
ask for the shadow's rows too (the rollout's shadow gate does).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)
SHADOW_ARM = "shadow"  # as canary.SHADOW


def monitor_name(model: str) -> str:
    return f"{model}_predictions"


def log_files(log_dir: Path, model: str) -> list[Path]:
    return sorted((Path(log_dir) / monitor_name(model) / "data").glob("data.*.log*"))


@dataclass(frozen=True)
class Window:
    rows: pd.DataFrame  # one row per prediction; logged_at is UTC epoch seconds
    skipped_lines: int


def read_window(
    log_dir: Path, model: str, since: datetime | None = None, until: datetime | None = None, shadow: bool = False
) -> Window:
    """Predictions logged in [since, until) (timezone-aware, or None: open); ``shadow``: with shadow rows too."""
    records, skipped = [], 0
    low = since.timestamp() if since else float("-inf")
    high = until.timestamp() if until else float("inf")
    for path in log_files(log_dir, model):
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    at = float(record["logged_at"])
                except (ValueError, KeyError, TypeError):
                    skipped += 1
                    continue
                if low <= at < high:
                    records.append(record)
    if skipped:
        log.warning("prediction log of %s: skipped %d unreadable lines", model, skipped)
    rows = pd.DataFrame.from_records(records)
    if not shadow and not rows.empty and "arm" in rows:
        rows = rows[rows["arm"] != SHADOW_ARM]
    if not rows.empty:
        rows["model_version"] = rows["model_version"].astype(str)
        rows = rows.sort_values("logged_at", kind="stable").reset_index(drop=True)
    return Window(rows, skipped)
