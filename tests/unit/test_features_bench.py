"""bench.features_bench: its arguments and report (no timing), and one ``--quick`` run end to end.

The quick run starts two real ``bentoml serve`` processes and a Feast store, so it is slow (minutes on a
busy 2-core machine). It checks that every part ran and printed its ratio, never how fast anything was.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.features_bench import INLINE, MODEL, _inline_spec, parse_args, report

ROOT = Path(__file__).resolve().parents[2]


def test_quick_shrinks_every_size():
    full, quick = parse_args([]), parse_args(["--quick"])
    assert full.labels == 1_000_000 and full.feature_rows == 1_000_000
    assert quick.labels < full.labels and quick.keys < full.keys and quick.requests < full.requests


def test_the_inline_spec_carries_the_stored_features_as_request_time_numbers():
    import yaml

    raw = yaml.safe_load(_inline_spec((ROOT / "models" / MODEL / "spec.yaml").read_text()))
    assert raw["name"] == INLINE and "stored" not in raw["features"]
    assert "card_activity__spend_1h" in raw["features"]["numeric"]
    assert list(raw["features"]["numeric"])[:2] == ["amount", "hour"]  # same column order as the stored model


def test_the_report_prints_the_four_ratios():
    results = {
        "serve": {"latencies": {MODEL: [0.0030] * 100, INLINE: [0.0025] * 100}, "max_score_difference": 0.0},
        "store": {
            "online_store": [0.001] * 10,
            "online_floor": [0.0001] * 10,
            "materialize_keys": 3000,
            "materialize_offline_rows": 30000,
            "materialize_seconds": 1.5,
        },
        "training_set": {
            "floor": {"seconds_median": 2.0, "label_rows": 10, "views": 3, "feature_rows_per_view": 10},
            "store": {"seconds_median": 3.0, "label_rows": 10, "views": 3, "feature_rows_per_view": 10},
            "same": True,
        },
    }
    lines = report(results, parse_args([]))
    assert [line[:3] for line in lines] == ["(a)", "(b)", "(c)", "(d)"]
    assert "1.20x (+0.500 ms, goal <= +1 ms: met)" in lines[0]
    assert "= 10.0x" in lines[1] and "1.50x (goal <= 2x: met)" in lines[2] and "2,000 keys/s" in lines[3]


@pytest.mark.slow
def test_quick_run_measures_all_four_parts():
    done = subprocess.run(
        [sys.executable, "-m", "bench.features_bench", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for part in ("(a) service", "(b) online read", "(c) training set", "(d) materialisation", "load average"):
        assert part in done.stdout, done.stdout
    assert "same values: True" in done.stdout and "max |score difference| 0.0e+00" in done.stdout
