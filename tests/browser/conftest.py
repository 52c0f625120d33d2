"""A real Airflow (api-server, scheduler, dag-processor) on a free port, and headless Chromium driving its UI.

The servers get their own LOOPLINE_HOME under pytest's tmp dir (not the session's, which the e2e
tests use for ``dag.test()``), so nothing they do leaks into other tests. Every process is started
in its own session and stopped with its children when the module is done.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from loopline.serving.bento_server import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
AIRFLOW = Path(sys.executable).with_name("airflow")
LOOPLINE_DAGS = (
    "credit_risk_batch_score",
    "credit_risk_drift",
    "credit_risk_ingest",
    "credit_risk_rollout",
    "credit_risk_rollout_control",
    "credit_risk_train",
)
MLFLOW_UI = "http://mlflow.loopline.test:5000"
SERVICE_URL = "http://bento.loopline.test:3000"


def wait_until(check: Callable[[], object], timeout: float, what: str, alive: Callable[[], None] = lambda: None):
    """Poll ``check`` until it returns something truthy; ``alive`` raises if a server died meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        alive()
        try:
            result = check()
        except requests.RequestException:  # not listening yet
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        time.sleep(0.5)


def loopline_env(home: Path) -> dict[str, str]:
    """The environment `loopline env` would give for this LOOPLINE_HOME (settings read in a clean env)."""
    from loopline.core.settings import get_settings

    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith(("LOOPLINE_", "AIRFLOW__", "MLFLOW_"))]:
            mp.delenv(key)
        mp.setenv("LOOPLINE_HOME", str(home))
        get_settings.cache_clear()
        settings = get_settings()
        env = {k: v for k, v in os.environ.items()} | settings.as_env()
    get_settings.cache_clear()
    return env


@dataclass
class AirflowUI:
    url: str
    home: Path
    password: str
    env: dict[str, str]
    logs: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    started: float = 0.0
    migrated_in: float = 0.0

    def start(self, name: str, *args: str) -> None:
        log = (self.logs / f"{name}.log").open("w")
        self.processes[name] = subprocess.Popen(
            [str(AIRFLOW), *args], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text()[-3000:]
                raise RuntimeError(f"airflow {name} exited with {process.returncode}:\n{tail}")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)  # its own session: the server and its workers
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def token(self) -> str:
        response = requests.post(f"{self.url}/auth/token", json={"username": "admin", "password": self.password})
        response.raise_for_status()
        return response.json()["access_token"]

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token()}"}
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kwargs)


def seed_serving_state(env: dict[str, str]) -> None:
    """Something for the Loopline page to show: v1 serves, v2 is pinned as a 5% canary (two audited changes)."""
    from loopline.core.serving_state import Route, ServingState

    state = ServingState(env["LOOPLINE_STATE_DB_URI"])
    first = state.change(
        Route("credit_risk", champion_version="1"), "first_champion", "dag:credit_risk_train/seed", "first model"
    )
    pinned = Route("credit_risk", champion_version="1", canary_version="2", canary_weight=0.05, revision=first.revision)
    state.change(pinned, "pin", "user:browser-test", "A/B test <v2> & v1")


def skip_without_chromium() -> None:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(f"{CHROMIUM} or {CHROMEDRIVER} missing (apt-get install -y chromium chromium-driver)")


@pytest.fixture(scope="module")
def airflow_processes(tmp_path_factory) -> Iterator[AirflowUI]:
    """A migrated metadata DB, then api-server, dag-processor and scheduler started (not yet waited for)."""
    skip_without_chromium()
    root = tmp_path_factory.mktemp("airflow-ui")
    home, logs = root / "home", root / "logs"
    logs.mkdir()
    port = free_port()
    password = secrets.token_urlsafe(12)
    env = loopline_env(home)
    airflow_home = Path(env["AIRFLOW_HOME"])
    airflow_home.mkdir(parents=True)
    passwords = airflow_home / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps({"admin": password}))
    env |= {
        "LOOPLINE_STATE_DB_URI": f"sqlite:///{home / 'state.db'}",
        "LOOPLINE_MLFLOW_UI_URL": MLFLOW_UI,
        "LOOPLINE_SERVICE_URL": SERVICE_URL,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # One secret for every process, so tokens one of them issues are valid in the others.
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__PARALLELISM": "2",
    }
    ui = AirflowUI(f"http://127.0.0.1:{port}", home, password, env, logs)
    ui.started = time.monotonic()
    try:
        migrated = subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, text=True, timeout=240)
        assert migrated.returncode == 0, migrated.stdout[-2000:] + migrated.stderr[-3000:]
        ui.migrated_in = time.monotonic() - ui.started
        seed_serving_state(env)
        ui.start("api-server", "api-server")
        ui.start("dag-processor", "dag-processor")
        ui.start("scheduler", "scheduler")
        yield ui
    finally:
        ui.stop()


@pytest.fixture(scope="module")
def browser(airflow_processes):
    """Headless Chromium, started while the Airflow processes boot."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def airflow_ui(airflow_processes, browser) -> AirflowUI:
    """The processes healthy and the Loopline DAGs parsed."""
    ui = airflow_processes

    def healthy() -> bool:
        health = requests.get(f"{ui.url}/api/v2/monitor/health", timeout=5).json()
        return all(health[part]["status"] == "healthy" for part in ("metadatabase", "scheduler", "dag_processor"))

    wait_until(healthy, 150, "Airflow api-server, scheduler and dag-processor healthy", ui.alive)

    def parsed() -> bool:
        dags = ui.api("GET", "/api/v2/dags", params={"tags": "loopline", "limit": 100}).json()["dags"]
        return set(LOOPLINE_DAGS) <= {dag["dag_id"] for dag in dags}

    wait_until(parsed, 120, "the Loopline DAGs parsed", ui.alive)

    # The page's first request imports MLflow and creates its (empty) database in the api-server: start that
    # now, so it happens while the browser logs in and triggers, not when the page is opened.
    headers = {"Authorization": f"Bearer {ui.token()}"}

    def warm_up() -> None:
        try:
            requests.get(f"{ui.url}/loopline/api/overview", headers=headers, timeout=300)
        except requests.RequestException:  # the test itself reports a page that does not answer
            pass

    threading.Thread(target=warm_up, daemon=True).start()
    print(f"Airflow up in {time.monotonic() - ui.started:.0f} s (db migrate {ui.migrated_in:.0f} s)")
    return ui
