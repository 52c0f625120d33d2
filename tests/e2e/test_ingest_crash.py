"""Kill the ingest process at every step, then run it again: every row ends up in exactly one place.

Each crash is a real process exit at a named crash point (``loopline.core.faults``: no
clean-up runs, as with ``kill -9``). The steps up to the registry's push and the
archive run in a small driver process that calls the ingest DAG's own step functions
in the DAG's order (seconds per run); the last point, between a new version and its
dataset event, runs through the real DAG with ``airflow dags test`` in a state
folder of its own (its Airflow DB must hold no other events of the dataset).

After each recovery: nothing in landing or processing, the good rows in the dataset
exactly once, the bad batch in quarantine with its report, the DVC registry and its
remote in sync (``dvc status -c``), and every data version named by a dataset event.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from loopline.core.faults import CRASH_EXIT_CODE
from tests.generators import credit_risk as datagen

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
PROJECT = Path(__file__).resolve().parents[2]
DRIVER = textwrap.dedent(
    """
    from loopline.ingestion.ingest import claim_step, quarantine_step, validate_step, version_step
    from loopline.core.settings import get_settings
    s = get_settings()
    outcomes = [validate_step(b, "credit_risk", s) for b in claim_step("credit_risk", s)]
    quarantine_step(outcomes, "credit_risk", s)
    version_step(outcomes, "credit_risk", "driver", s)
    """
)
DRIVER_POINTS = ["claim", "validate", "write", "commit", "tag", "push", "archive"]


def environment(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPLINE_", "AIRFLOW"))}
    env.update(
        LOOPLINE_HOME=str(home),
        LOOPLINE_PSEUDONYM_SECRET="crash-test-secret",
        LOOPLINE_LANDING_SETTLE_SECONDS="0",
        AIRFLOW_HOME=str(home / "airflow"),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow' / 'airflow.db'}",
        AIRFLOW__CORE__DAGS_FOLDER=str(PROJECT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        GIT_PYTHON_REFRESH="quiet",
        PATH=f"{BIN}:{os.environ['PATH']}",
        **extra,
    )
    return env


def land(home: Path) -> dict[str, pd.DataFrame]:
    """Two good batches and one bad one, as an upstream job drops them."""
    landing = home / "landing" / "credit_risk"
    good = {f"w{w}.csv": datagen.make_batch(w, n_rows=150, seed=4) for w in (0, 1)}
    for name, frame in good.items():
        datagen.write_batch(frame, landing / name)
    datagen.write_malformed("out_of_range", landing / "bad.csv")
    return good


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, cwd=PROJECT, timeout=600)


def assert_everything_accounted_for(home: Path, good: dict[str, pd.DataFrame], env: dict[str, str]) -> list[str]:
    zone = {name: home / name / "credit_risk" for name in ("landing", "processing", "quarantine", "archive")}
    assert not any(zone["landing"].iterdir()), "landing zone not emptied"
    assert not any(zone["processing"].iterdir()), "a batch stayed in processing"
    quarantined = list(zone["quarantine"].iterdir())
    assert [p.name.rsplit("-", 2)[0] for p in quarantined] == ["bad"]
    assert (quarantined[0] / "bad.csv").exists() and (quarantined[0] / "validation.txt").exists()
    assert sorted(p.name.rsplit("-", 2)[0] for p in zone["archive"].iterdir()) == ["w0", "w1"]

    registry = home / "data-registry"
    tags = run(["git", "-C", str(registry), "tag", "--list", "credit_risk-v*"], env).stdout.split()
    assert len(tags) == 1, tags  # one version: the crash never left a half version or a second copy
    stored = pd.concat(pd.read_parquet(p) for p in (registry / "data" / "credit_risk").glob("*.parquet"))
    expected = sorted(i for frame in good.values() for i in frame["applicant_id"])
    assert sorted(stored["applicant_id"]) == expected  # every good row, once
    status = subprocess.run(
        [str(BIN / "dvc"), "status", "-c", "--json"], cwd=registry, env=env, capture_output=True, text=True
    )
    assert status.returncode == 0 and json.loads(status.stdout or "{}") == {}, status.stdout + status.stderr
    return [t.removeprefix("credit_risk-") for t in tags]


@pytest.mark.parametrize("point", DRIVER_POINTS)
def test_a_crash_at_any_ingest_step_loses_and_duplicates_nothing(tmp_path, point):
    home = tmp_path / point
    env = environment(home)
    good = land(home)
    crashed = run([str(BIN / "python"), "-c", DRIVER], {**env, "LOOPLINE_CRASH_AT": point})
    assert crashed.returncode == CRASH_EXIT_CODE, f"never reached {point}: {crashed.stderr[-2000:]}"
    recovered = run([str(BIN / "python"), "-c", DRIVER], env)
    assert recovered.returncode == 0, recovered.stderr[-3000:]
    assert_everything_accounted_for(home, good, env)


def dataset_events(home: Path) -> list[dict]:
    with sqlite3.connect(home / "airflow" / "airflow.db") as db:
        rows = db.execute(
            "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = ?",
            ("dvc://loopline/credit_risk",),
        ).fetchall()
    return [json.loads(extra) if extra else {} for (extra,) in rows]


def test_a_crash_between_a_version_and_its_event_still_announces_it(tmp_path):
    """Through the real DAG: killed after the version is pushed and archived, before the Asset event."""
    home = tmp_path / "emit"
    env = environment(home)
    migrated = run([str(BIN / "airflow"), "db", "migrate"], env)
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    good = land(home)
    test = [str(BIN / "airflow"), "dags", "test", "credit_risk_ingest"]
    crashed = run([*test, "2026-06-01T00:00:00+00:00"], {**env, "LOOPLINE_CRASH_AT": "emit"})
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stdout[-3000:]
    versions = assert_everything_accounted_for(home, good, env)  # the data is safe already ...
    assert dataset_events(home) == []  # ... but no event was sent
    recovered = run([*test, "2026-06-01T00:10:00+00:00"], env)  # nothing new landed: the sensor still fires
    assert recovered.returncode == 0, recovered.stdout[-3000:]
    assert [e.get("versions") for e in dataset_events(home)] == [versions]
