"""A Loopline of its own in a temporary folder: state, Airflow DB, models and expectations folders.

The DAG files in ``dags/`` generate the DAGs of whatever model folders sit in the temporary
``models`` folder; commands run as a user runs them (``loopline ...``, ``airflow dags test``),
each in its own process with this line's environment. Nothing outside the folder is written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

BIN = Path(sys.executable).parent
PROJECT = Path(__file__).resolve().parents[2]


class IsolatedLine:
    def __init__(self, root: Path, **extra_env: str) -> None:
        self.root = root
        self.home = root / "home"
        self.models = root / "models"
        self.expectations = root / "expectations"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPLINE_", "AIRFLOW"))}
        env.update(
            LOOPLINE_HOME=str(self.home),
            LOOPLINE_MODELS_DIR=str(self.models),
            LOOPLINE_EXPECTATIONS_DIR=str(self.expectations),
            LOOPLINE_LANDING_SETTLE_SECONDS="0",
            PATH=f"{BIN}:{os.environ['PATH']}",
            **extra_env,
        )
        code = "import json; from loopline.core.settings import get_settings as g; print(json.dumps(g().as_env()))"
        derived = subprocess.run([str(BIN / "python"), "-c", code], env=env, capture_output=True, text=True, check=True)
        env.update(json.loads(derived.stdout))
        self.env = env
        self._runs = 0

    def run(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        done = subprocess.run(args, env=self.env, capture_output=True, text=True, cwd=PROJECT, timeout=timeout)
        assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    def loopline(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(str(BIN / "loopline"), *args)

    def start(self) -> None:
        """The Airflow DB and the line's own state (pseudonym secret, DVC registry)."""
        self.run(str(BIN / "airflow"), "db", "migrate")
        self.loopline("init")

    def dag_test(self, dag_id: str, conf: dict | None = None) -> subprocess.CompletedProcess:
        """``airflow dags test`` with a fresh logical date each time (runs never collide)."""
        self._runs += 1
        when = datetime.now(UTC).replace(microsecond=0).isoformat()
        args = [str(BIN / "airflow"), "dags", "test", dag_id, when]
        return self.run(*args, *(["-c", json.dumps(conf)] if conf else []))

    def dag_test_in_background(self, dag_id: str, conf: dict | None = None) -> subprocess.Popen:
        when = datetime.now(UTC).replace(microsecond=0).isoformat()
        args = [str(BIN / "airflow"), "dags", "test", dag_id, when, *(["-c", json.dumps(conf)] if conf else [])]
        log = open(self.root / f"{dag_id}.log", "w")  # noqa: SIM115 - closed with the process by the caller
        return subprocess.Popen(args, env=self.env, cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT)

    def service_env(self) -> dict[str, str]:
        return {k: v for k, v in self.env.items() if k.startswith(("LOOPLINE_", "BENTOML_", "MLFLOW"))}
