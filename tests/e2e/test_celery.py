"""The production configuration, for real: Airflow on Postgres, the CeleryExecutor, Redis as broker.

Only settings differ from the embedded default: the test sets the ``LOOPLINE_*``
variables, takes the Airflow environment from ``loopline env``, and runs the real
processes (api-server, scheduler, dag-processor, a Celery worker) on a fresh
Postgres database. It triggers ``credit_risk_ingest`` through the REST API and checks
that every task ran on the Celery worker and that the batch became a data version.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg2
import pytest
import redis

from loopline.ingestion.data_registry import DataRegistry
from loopline.serving.bento_server import free_port
from tests.conftest import throwaway_postgres

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
PG = dict(host="127.0.0.1", port=5432, user="postgres")
PG_URL = "postgres@127.0.0.1:5432"
REDIS_INDEX = 11  # a Redis database of its own; a per-test queue name keeps concurrent runs apart too
PASSWORD = "celery-e2e"


@pytest.fixture
def database():
    """A throw-away Postgres database's name (Airflow metadata, Celery results, Loopline state)."""
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=3).ping()
    except redis.ConnectionError as err:
        pytest.skip(f"needs Redis on 127.0.0.1:6379: {err}")
    if importlib.util.find_spec("asyncpg") is None:
        pytest.fail("Airflow 3 on Postgres needs the asyncpg driver (postgresql+asyncpg); add asyncpg to requirements")
    for url in throwaway_postgres("loopline_celery"):
        yield url.rsplit("/", 1)[1]


def stack_env(home: Path, db: str, queue: str, api_port: int) -> dict[str, str]:
    """The environment every process gets: the LOOPLINE_* settings, then what `loopline env` derives."""
    prefixes = ("LOOPLINE_", "AIRFLOW", "MLFLOW_", "BENTOML_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}  # nothing from the test session
    env |= {
        "LOOPLINE_HOME": str(home),
        "LOOPLINE_AIRFLOW_DB_URI": f"postgresql+psycopg2://{PG_URL}/{db}",
        "LOOPLINE_AIRFLOW_EXECUTOR": "CeleryExecutor",
        "LOOPLINE_CELERY_BROKER_URL": f"redis://127.0.0.1:6379/{REDIS_INDEX}",
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which is not installed: name the driver.
        "LOOPLINE_CELERY_RESULT_BACKEND": f"db+postgresql+psycopg2://{PG_URL}/{db}",
        "LOOPLINE_STATE_DB_URI": f"postgresql+psycopg2://{PG_URL}/{db}",
    }
    exported = subprocess.run([BIN / "loopline", "env"], env=env, capture_output=True, text=True, check=True).stdout
    for line in exported.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = json.loads(value)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    # Test plumbing, not settings: a random port, a private queue, login, and no interval run racing ours.
    passwords = home / "airflow" / "passwords.json"
    passwords.parent.mkdir(parents=True, exist_ok=True)
    passwords.write_text(json.dumps({"admin": PASSWORD}))
    env |= {
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
    }
    return env


def run(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([str(BIN / args[0]), *args[1:]], env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def tails(*folders: Path) -> str:
    """The end of every log under the folders: the processes' own and the task logs."""
    return "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for f in folders for p in sorted(f.rglob("*.log")))


def wait_for(what: str, check, timeout: float, logs: Path) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except httpx.HTTPError:
            pass
        time.sleep(2)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{tails(logs)}")


def test_ingest_runs_on_celery_workers_against_postgres(tmp_path, database):
    home, logs = tmp_path / "home", tmp_path / "logs"
    logs.mkdir()
    queue, port = f"loopline_e2e_{database[-10:]}", free_port()
    env = stack_env(home, database, queue, port)
    with open(logs / "migrate.log", "w") as out:
        migrate = subprocess.Popen([BIN / "airflow", "db", "migrate"], env=env, stdout=out, stderr=subprocess.STDOUT)
    run(["loopline", "init"], env)  # meanwhile: the DVC data registry, and one good batch in the landing zone
    run(["loopline", "generate", "--model", "credit_risk", "--weeks", "0", "--rows", "300"], env)
    assert migrate.wait() == 0, (logs / "migrate.log").read_text()[-3000:]

    commands = {
        "api-server": ["airflow", "api-server", "--host", "127.0.0.1", "--port", str(port)],
        "scheduler": ["airflow", "scheduler"],
        "dag-processor": ["airflow", "dag-processor"],
        "worker": ["airflow", "celery", "worker", "--queues", queue, "--concurrency", "2", "--skip-serve-logs",
                   "--celery-hostname", f"{queue}@%h", "--without-gossip", "--without-mingle"],
    }  # fmt: skip
    procs: list[subprocess.Popen] = []
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        for name, cmd in commands.items():
            with open(logs / f"{name}.log", "w") as out:
                procs.append(
                    subprocess.Popen(
                        [str(BIN / cmd[0]), *cmd[1:]], env=env, stdout=out, stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )  # fmt: skip
        wait_for("the api-server", lambda: api.get("/api/v2/monitor/health").status_code == 200, 180, logs)
        token = api.post("/auth/token", json={"username": "admin", "password": PASSWORD}).raise_for_status()
        api.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        wait_for(
            "credit_risk_ingest to be parsed", lambda: api.get("/api/v2/dags/credit_risk_ingest").is_success, 120, logs
        )

        api.patch("/api/v2/dags/credit_risk_ingest", json={"is_paused": False}).raise_for_status()
        dag_run = api.post("/api/v2/dags/credit_risk_ingest/dagRuns", json={"logical_date": None}).raise_for_status()
        run_id = dag_run.json()["dag_run_id"]

        def finished():
            state = api.get(f"/api/v2/dags/credit_risk_ingest/dagRuns/{run_id}").json()["state"]
            return state if state in ("success", "failed") else None

        state = wait_for("the ingest run", finished, 240, logs)
        assert state == "success", tails(logs, home / "airflow" / "logs")
        assert_ran_on_celery(database, run_id, queue, logs / "worker.log")
    finally:
        api.close()
        stop(procs)
        broker = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_INDEX)
        if leftovers := list(broker.scan_iter(match=f"*{queue}*")):  # the queue and kombu's bindings for it
            broker.delete(*leftovers)

    registry = DataRegistry(home / "data-registry", str(home / "dvc-remote"))
    assert registry.versions("credit_risk") == ["v0001"]  # the git tag credit_risk-v0001
    assert registry.resolve("credit_risk").rows == 300
    assert len(list((home / "archive" / "credit_risk").iterdir())) == 1  # the batch is in exactly one place


def _task_rows(db: str, run_id: str) -> list[tuple]:
    conn = psycopg2.connect(dbname=db, **PG)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT ti.task_id, ti.state, ti.queue, ti.external_executor_id, m.status"
                " FROM task_instance ti LEFT JOIN celery_taskmeta m ON m.task_id = ti.external_executor_id"
                " WHERE ti.dag_id = 'credit_risk_ingest' AND ti.run_id = %s",
                (run_id,),
            )
            return cur.fetchall()
    finally:
        conn.close()


def assert_ran_on_celery(db: str, run_id: str, queue: str, worker_log: Path) -> None:
    """Every task instance went through Celery: a Celery task id, our worker's log and its SUCCESS result row.

    The worker stores a task's Celery result after the task has told Airflow it succeeded, so the
    run can be "success" a moment before the last result row says so: the rows get a few seconds.
    """
    deadline = time.monotonic() + 30
    rows = _task_rows(db, run_id)
    while any(state != "skipped" and result != "SUCCESS" for _, state, _, _, result in rows):
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
        rows = _task_rows(db, run_id)
    assert {task for task, *_ in rows} >= {"wait_for_batches", "claim_batches", "validate_batch", "version_accepted"}
    log = worker_log.read_text()
    for task, state, ti_queue, celery_id, result in rows:
        if state == "skipped":  # e.g. quarantine_rejected with nothing to quarantine never reaches a worker
            continue
        assert state == "success", task
        assert ti_queue == queue and celery_id, (task, ti_queue, celery_id)  # pre-assigned by the CeleryExecutor
        assert result == "SUCCESS", f"{task}: celery result {result!r}"  # the worker wrote it to the result backend
        assert f"[{celery_id}] Executing workload in Celery" in log, task


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for proc in procs:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
