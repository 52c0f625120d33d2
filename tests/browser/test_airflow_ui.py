"""The Airflow 3 UI as a person uses it, in headless Chromium against real Airflow processes.

Log in through the login form, find the Loopline DAGs, trigger ``credit_risk_train`` through its
typed Trigger form (Params), see the run exist, see the Loopline task extra links on a task,
and open the Loopline page from the navigation. A screenshot per step lands in pytest's tmp dir.

The run is triggered with "Unpause on trigger" switched off, so it stays queued: nothing trains
here (the e2e tests do), and the task links are fed the XComs the train tasks return, through
Airflow's REST API, to check what the api-server makes of them.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, unquote

import pytest
import requests
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import LOOPLINE_DAGS, MLFLOW_UI, SERVICE_URL

pytestmark = pytest.mark.slow

REASON = "browser test: <weekly> retrain & check"
TRAIN_RUN = {
    "model_name": "credit_risk",
    "run_id": "4f2b9c0d1e",
    "experiment_id": "3",
    "data": {"dataset": "credit_risk", "version": "v0001"},
    "fingerprint": "f00d",
    "reused": False,
    "model_version": None,
}


def click(wait: WebDriverWait, locator: tuple[str, str]) -> None:
    """Click once the element is there and clickable; React may replace it meanwhile, so look it up again."""

    def clicked(driver) -> bool:
        try:
            element = driver.find_element(*locator)
            if not (element.is_displayed() and element.is_enabled()):
                return False
            element.click()
            return True
        except (NoSuchElementException, StaleElementReferenceException, ElementClickInterceptedException):
            return False

    wait.until(clicked, f"no clickable {locator}")


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory, request):
    folder = tmp_path_factory.mktemp("screenshots")
    taken: list[Path] = []

    def shoot(driver, name: str) -> Path:
        path = folder / f"{len(taken) + 1:02d}-{name}.png"
        driver.save_screenshot(str(path))
        taken.append(path)
        print(f"screenshot: {path}")
        return path

    yield shoot
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and taken:
        reporter.write_line(f"\nAirflow UI screenshots ({len(taken)}) in {folder}:")
        for path in taken:
            reporter.write_line(f"  {path}")


def test_login_trigger_links_and_loopline_page(browser, airflow_ui, screenshots):
    driver, url = browser, airflow_ui.url
    wait = WebDriverWait(driver, 60)

    # 1. Log in through the UI's login form (SimpleAuthManager).
    driver.get(f"{url}/dags")
    wait.until(EC.presence_of_element_located((By.NAME, "username"))).send_keys("admin")
    driver.find_element(By.NAME, "password").send_keys(airflow_ui.password)
    screenshots(driver, "login")
    wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "button[type=submit]"))).click()
    wait.until(lambda d: "/auth/login" not in d.current_url)

    # 2. The DAG list shows every Loopline DAG.
    driver.get(f"{url}/dags?tags=loopline")
    wait.until(
        EC.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=dag-id][href='/dags/credit_risk_train']"))
    )
    dag_links = driver.find_elements(By.CSS_SELECTOR, "[data-testid=dag-id]")
    listed = {el.get_attribute("href").rsplit("/", 1)[-1] for el in dag_links}
    assert set(LOOPLINE_DAGS) <= listed, listed
    screenshots(driver, "dag-list")

    # 3. credit_risk_train -> Trigger: the typed Params form; only the reason is filled in.
    driver.find_element(By.CSS_SELECTOR, "[data-testid=dag-id][href='/dags/credit_risk_train']").click()
    wait.until(EC.url_to_be(f"{url}/dags/credit_risk_train"))
    click(wait, (By.CSS_SELECTOR, "[data-testid=trigger-dag-button]"))  # the DAG page's, not the list's
    reason = wait.until(EC.element_to_be_clickable((By.ID, "element_reason")))
    assert driver.find_element(By.ID, "element_data_version").get_attribute("value") == "latest"
    reason.send_keys(Keys.CONTROL, "a")
    reason.send_keys(REASON)
    unpause = driver.find_element(By.XPATH, "//label[.//span[starts-with(normalize-space(), 'Unpause')]]")
    unpause.click()  # keep the DAG paused: the run is created, and stays queued
    assert not unpause.find_element(By.TAG_NAME, "input").is_selected()
    screenshots(driver, "trigger-form")
    submit = driver.find_element(By.CSS_SELECTOR, "[data-testid=trigger-dag-submit]")
    try:
        WebDriverWait(driver, 10).until(lambda d: submit.is_enabled())
    except Exception:
        screenshots(driver, "trigger-form-blocked")
        required_empty = [
            el.get_attribute("name")
            for el in driver.find_elements(By.CSS_SELECTOR, "[data-testid=config-form] input[required]")
            if not el.get_attribute("value")
        ]
        pytest.fail(
            "Trigger stays disabled with only the reason filled in; required but empty: "
            f"{required_empty}. A Param the form may leave empty needs type=['null', 'string']."
        )
    submit.click()

    # 4. The run exists, with the reason from the form (REST API), and the UI shows it.
    wait.until(EC.url_contains("/dags/credit_risk_train/runs/"))
    run_id = unquote(driver.current_url.split("/runs/", 1)[1].split("/", 1)[0])
    run = airflow_ui.api("GET", f"/api/v2/dags/credit_risk_train/dagRuns/{quote(run_id, safe='')}").json()
    assert run["conf"]["reason"] == REASON and run["conf"]["data_version"] == "latest"
    assert run["run_type"] == "manual" and run["state"] == "queued"
    runs = airflow_ui.api("GET", "/api/v2/dags/credit_risk_train/dagRuns").json()["dag_runs"]
    assert [r["dag_run_id"] for r in runs] == [run_id]  # paused: no scheduled run besides ours
    screenshots(driver, "run-created")

    # 5. Task extra links, from what the train tasks return (XComs set through the REST API).
    tis = f"/api/v2/dags/credit_risk_train/dagRuns/{quote(run_id, safe='')}/taskInstances"
    for task_id, value in [
        ("start_run", TRAIN_RUN),
        ("register_model", {**TRAIN_RUN, "model_version": "1"}),
        ("package_bento", "credit-risk:v1-abc123"),
    ]:
        created = airflow_ui.api("POST", f"{tis}/{task_id}/xcomEntries", json={"key": "return_value", "value": value})
        assert created.status_code == 201, created.text
    run_url = f"{MLFLOW_UI}/#/experiments/3/runs/4f2b9c0d1e"
    version_url = f"{MLFLOW_UI}/#/models/credit_risk/versions/1"
    expected = {
        "start_run": {"MLflow run": run_url, "Model version": None, "Bento": None},
        "validate_data": {"MLflow run": run_url, "Model version": None, "Bento": None},
        "register_model": {"MLflow run": run_url, "Model version": version_url, "Bento": None},
        "package_bento": {"MLflow run": run_url, "Model version": version_url, "Bento": f"{SERVICE_URL}/"},
    }
    for task_id, links in expected.items():
        assert airflow_ui.api("GET", f"{tis}/{task_id}/links").json()["extra_links"] == links, task_id
    driver.get(f"{url}/dags/credit_risk_train/runs/{quote(run_id, safe='')}/tasks/register_model/details")
    mlflow_run = wait.until(EC.presence_of_element_located((By.XPATH, "//a[normalize-space()='MLflow run']")))
    assert mlflow_run.get_attribute("href") == run_url
    assert driver.find_element(By.XPATH, "//a[normalize-space()='Model version']").get_attribute("href") == version_url
    assert not driver.find_elements(By.XPATH, "//a[normalize-space()='Bento']")
    screenshots(driver, "task-extra-links")

    # 6. The Loopline page, from the navigation: an iframe on /plugin/loopline showing /loopline/.
    click(wait, (By.CSS_SELECTOR, "a[aria-label=Loopline][href='/plugin/loopline']"))
    frame = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "iframe[title=Loopline]")))
    driver.switch_to.frame(frame)
    WebDriverWait(driver, 120).until(EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), "Loopline"))
    page = driver.find_element(By.TAG_NAME, "body").text
    assert "credit_risk" in page and "champion v1 95%" in page and "canary v2 5%" in page
    assert "A/B test <v2> & v1" in page and "first_champion" in page  # rendered as text, not markup
    assert "No registered versions yet." in page and "No drift checks recorded yet." in page
    driver.switch_to.default_content()
    screenshots(driver, "loopline-page")

    # Links on the page open in a new tab even from inside the sandboxed frame.
    driver.switch_to.frame(frame)
    driver.find_element(
        By.XPATH, "//h2/a[normalize-space()='credit_risk']"
    ).click()  # its MLflow model (the picker above links within the page)
    WebDriverWait(driver, 20).until(lambda d: len(d.window_handles) == 2)
    driver.switch_to.default_content()

    # The page's JSON needs a login too.
    overview = airflow_ui.api("GET", "/loopline/api/overview").json()
    credit_risk = next(m for m in overview["models"] if m["name"] == "credit_risk")  # by name: card_fraud sorts first
    assert credit_risk["route"]["split"] == {"1": 0.95, "2": 0.05}
    assert requests.get(f"{url}/loopline/api/overview", timeout=30).status_code == 401
