"""The web UI in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium against a server seeded through the
unmodified mlflow client and the study endpoints.

It opens every page from the home page, compares three runs, browses an
artifact, filters runs, watches a study, and promotes a model (one promotion
passes, one is refused by its gate), saving a screenshot of each page into
``$UI_SCREENSHOT_DIR`` (default: a temp folder).

Without Chromium the test skips, unless ``REQUIRE_BROWSER=1`` (set by ``.ci/run``,
which installs it), where a missing browser fails.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import requests

from compat_util import IS_MLFLOW

pytestmark = pytest.mark.skipif(IS_MLFLOW, reason="the web UI is this server's own")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but no Chromium at {CHROMIUM} or no chromedriver at {CHROMEDRIVER}")
        pytest.skip("Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1366,900", "--lang=ko-KR"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def shots():
    folder = Path(os.environ.get("UI_SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="ui-shots-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _loss(lr: float, step: int) -> float:
    return (math.log10(lr) + 2.5) ** 2 + 2.0 / step


def _seed_runs(client, uniq):
    import mlflow
    import pandas as pd

    exp_id = client.create_experiment(f"ui-한국어-{uniq}")
    runs = []
    for i, lr in enumerate([0.001, 0.003, 0.03]):
        run = client.create_run(exp_id, run_name=f"실행-{i}")
        rid = run.info.run_id
        client.log_param(rid, "lr", str(lr))
        client.log_param(rid, "rank", "8" if i < 2 else "16")
        client.log_param(rid, "optimizer", "adamw")
        for step in range(1, 21):
            client.log_metric(rid, "eval_loss", _loss(lr, step), step=step)
            client.log_metric(rid, "정확도", 1.0 - _loss(lr, step) / 10, step=step)
        with tempfile.TemporaryDirectory() as d:
            Path(d, "config.json").write_text(json.dumps({"lr": lr, "설명": "한국어 설정"}))
            Path(d, "notes.txt").write_text("학습 메모\n")
            client.log_artifacts(rid, d, artifact_path="adapter")
        with mlflow.start_run(run_id=rid):
            mlflow.log_input(mlflow.data.from_pandas(pd.DataFrame({"x": [1, 2]}), name="ko-tasks"), context="training")
        client.set_terminated(rid)
        runs.append(rid)
    return exp_id, runs


def _seed_study(url: str, uniq: str) -> str:
    name = f"ui-study-{uniq}"
    api = f"{url}/api/tracker"
    spec = {
        "name": name,
        "objective": {"metric": "loss", "direction": "minimize"},
        "space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}, "layers": {"type": "int", "low": 1, "high": 4}},
        "sampler": "random",
        "scheduler": {"kind": "asha", "min_resource": 1, "max_resource": 9, "reduction_factor": 3},
        "max_trials": 6,
        "seed": 3,
        "run": {"command": ["python3", "train.py"]},
    }
    requests.post(f"{api}/studies/create", json={"spec": spec}, timeout=30).raise_for_status()
    requests.post(f"{api}/workers/register", json={"worker_id": f"gpu-{uniq}"}, timeout=30).raise_for_status()
    while True:
        lease = requests.post(f"{api}/workers/lease", json={"worker_id": f"gpu-{uniq}", "study": name}, timeout=30).json()
        a = lease.get("assignment")
        if not a:
            break
        n, lease_id = a["trial"], a["lease_id"]
        p = a["params"]
        stopped = False
        for step in range(1, a["max_resource"] + 1):
            value = (math.log10(p["lr"]) + 2.5) ** 2 + 1.0 / p["layers"] + 2.0 / step
            r = requests.post(f"{api}/studies/{name}/trials/{n}/report", json={"lease_id": lease_id, "step": step, "value": value}, timeout=30).json()
            if r["decision"] != "continue":
                stopped = True
                break
        if not stopped:
            requests.post(f"{api}/studies/{name}/trials/{n}/complete", json={"lease_id": lease_id}, timeout=30).raise_for_status()
    return name


def _images_loaded(driver) -> list[str]:
    """The src of every image on the page that did not load."""
    return driver.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);"
    )


def _load_all_images(driver):
    # Lazy images load when scrolled to: scroll through the page, then check.
    driver.execute_script("document.querySelectorAll('img').forEach(i => i.loading = 'eager');")
    driver.execute_script("window.scrollTo(0, document.body.scrollHeight);")
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(lambda d: not _images_loaded(d))


def _navigate(driver, action):
    """Runs `action` (a click, an Enter) and waits for the page it loads."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    action()
    # While the old page goes away, chromedriver may answer the staleness check with a generic
    # "node does not belong to the document" error instead of a stale-element one: poll on.
    WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,)).until(ec.staleness_of(old))


def _submit(driver, element, keys):
    """Types into a form field and waits for the page the form loads."""
    _navigate(driver, lambda: element.send_keys(keys))


def _click(driver, element):
    """Clicks a link or button and waits for the page it loads."""
    _navigate(driver, element.click)


def test_every_page_in_a_browser(browser, shots, client, server, uniq):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    url = server.url
    exp_id, runs = _seed_runs(client, uniq)
    study = _seed_study(url, uniq)
    model = f"ko-lora-{uniq}"
    client.create_registered_model(model)
    for rid in runs[:2]:
        client.create_model_version(model, f"runs:/{rid}/adapter", run_id=rid)
    requests.post(f"{url}/api/tracker/models/rules/set", json={"name": model, "rules": ["metrics.eval_loss <= 5"]}, timeout=30).raise_for_status()

    # Home: every section links on.
    browser.get(url + "/")
    assert browser.title.startswith("Home")
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    assert browser.switch_to.active_element.text == "Skip to content", "the first Tab reaches the skip link"
    browser.save_screenshot(str(shots / "home.png"))

    # Experiment: three runs, columns for params and metrics, a filter that narrows them.
    _click(browser, browser.find_element(By.LINK_TEXT, f"ui-한국어-{uniq}"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    assert len(rows) == 3
    headers = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "#runs thead th")]
    assert any("params.lr" in h for h in headers) and any("metrics.정확도" in h for h in headers), headers
    box = browser.find_element(By.NAME, "filter")
    box.clear()
    _submit(browser, box, "params.rank = '16'" + Keys.ENTER)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")) == 1
    box = browser.find_element(By.NAME, "filter")
    box.clear()
    _submit(browser, box, "metrics.eval_loss <" + Keys.ENTER)
    assert "Filter:" in browser.find_element(By.CSS_SELECTOR, ".error").text, "a bad filter is explained"
    browser.get(f"{url}/experiments/{exp_id}")
    browser.save_screenshot(str(shots / "experiment.png"))

    # Compare the three runs.
    for box in browser.find_elements(By.CSS_SELECTOR, "#runs input[type=checkbox]"):
        box.click()
    _click(browser, browser.find_element(By.XPATH, "//button[contains(., 'Compare selected runs')]"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Compare 3 runs"
    diff_rows = [r.find_element(By.TAG_NAME, "td").text for r in browser.find_elements(By.CSS_SELECTOR, "#params tr.diff")]
    assert sorted(diff_rows) == ["lr", "rank"], "only differing params are highlighted"
    assert len(browser.find_elements(By.CSS_SELECTOR, "img")) >= 5  # 2 metrics, 2 scatters, parallel
    _load_all_images(browser)
    browser.execute_script("window.scrollTo(0, 0);")
    browser.save_screenshot(str(shots / "compare.png"))

    # A run: its chart, its dataset input, its artifacts with a JSON preview.
    browser.get(f"{url}/runs/{runs[0]}")
    _load_all_images(browser)
    assert "ko-tasks" in browser.page_source
    _click(browser, browser.find_element(By.LINK_TEXT, "adapter/"))
    _click(browser, browser.find_element(By.LINK_TEXT, "config.json"))
    assert "한국어 설정" in browser.find_element(By.CSS_SELECTOR, "pre.preview").text
    browser.save_screenshot(str(shots / "run.png"))

    # The study: every trial, its charts, importance and the worker.
    browser.get(url + "/")
    _click(browser, browser.find_element(By.CSS_SELECTOR, f"a[href='/studies/{study}']"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#trials tbody tr")) == 6
    assert "finished" in browser.find_element(By.TAG_NAME, "h1").text
    assert f"gpu-{uniq}" in browser.page_source
    _load_all_images(browser)
    browser.execute_script("window.scrollTo(0, 0);")
    browser.save_screenshot(str(shots / "study.png"))

    # The model: promote version 2 (passes the gate), then version 1 against a stricter gate.
    browser.get(url + "/")
    _click(browser, browser.find_element(By.CSS_SELECTOR, f"a[href='/models/{model}']"))
    Select(browser.find_element(By.NAME, "version")).select_by_value("2")
    browser.find_element(By.NAME, "reason").send_keys("브라우저 시험")
    _click(browser, browser.find_element(By.XPATH, "//button[contains(., 'Promote')]"))
    verdict = browser.find_element(By.ID, "verdict").text
    assert "Version 2 now holds 'production'" in verdict and "pass metrics.eval_loss <= 5" in verdict, verdict
    audit = browser.find_element(By.ID, "audit").text
    assert "promote" in audit and "브라우저 시험" in audit, audit
    browser.save_screenshot(str(shots / "model.png"))
    assert client.get_model_version_by_alias(model, "production").version == "2"

    requests.post(f"{url}/api/tracker/models/rules/set", json={"name": model, "rules": ["metrics.eval_loss <= 0"]}, timeout=30).raise_for_status()
    browser.refresh()
    Select(browser.find_element(By.NAME, "version")).select_by_value("1")
    _click(browser, browser.find_element(By.XPATH, "//button[contains(., 'Promote')]"))
    verdict = browser.find_element(By.ID, "verdict").text
    assert "refused by rule 'metrics.eval_loss <= 0'" in verdict, verdict
    assert client.get_model_version_by_alias(model, "production").version == "2", "a refused promotion changes nothing"

    # Error states are pages, not stack traces.
    browser.get(f"{url}/runs/not-a-run")
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("404")
