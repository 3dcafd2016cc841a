"""What a user sees first in the MLflow UI, checked in a real browser.

A tiny tracked project (``tests.tracking.build_project``: two strategies, no training) is
served by ``mlflow ui`` on a free loopback port and opened in headless Chromium (Debian's
``chromium`` + ``chromium-driver``, driven by Selenium) at the link the track stage records
(``reports/mlflow_runs.json`` ``ui_path``). The page is a React app: every check waits for the
elements it needs, never for a fixed time. Without a browser the tests skip and say why.

Set ``PETS_UI_SCREENSHOT=<file.png>`` to keep the runs view's screenshot (docs/mlflow-runs.png
was made that way).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from petsml.cli.server_commands import JOB_EXECUTION, UI_WORKERS
from petsml.testing.browser import browser_paths, chromium, free_port, wait_http
from tests.tracking import METRICS, STRATEGIES

pytestmark = [pytest.mark.slow(seconds=55), pytest.mark.integration]

UI_TIMEOUT_S = 240  # a cold React bundle and its first queries on a busy 2-core CI machine
SCROLLER = "[data-testid='experiment-view-compare-runs-chart-area']"


@pytest.fixture(scope="module")
def ui(tmp_path_factory, registered_project):
    """(browser, base URL, mlflow_runs.json record) for a tracked tiny project: the session's
    ``registered_project`` (tracked as the track stage does, then registered)."""
    paths = browser_paths("MLflow UI browser tests")
    root = tmp_path_factory.mktemp("ui")
    project, uri, _ = registered_project
    record = json.loads((project / "reports" / "mlflow_runs.json").read_text())

    port = free_port()
    log = root / "mlflow-ui.log"
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    with open(log, "w") as out:
        server = subprocess.Popen(
            [str(mlflow_cli), "ui", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(UI_WORKERS), "--backend-store-uri", uri],
            cwd=project, stdout=out, stderr=subprocess.STDOUT,
            # the page, as `pets ui` serves it: its workers, no GenAI job runner
            env={**os.environ, JOB_EXECUTION: "false"},
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/health", server, log, UI_TIMEOUT_S)
        with chromium(paths) as browser:
            yield browser, base, record, root
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def _in_viewport(browser, element) -> bool:
    """Displayed and entirely inside the window: seen without scrolling or clicking."""
    return element.is_displayed() and browser.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        "return r.width > 0 && r.top >= 0 && r.left >= 0 &&"
        " r.bottom <= window.innerHeight && r.right <= window.innerWidth;",
        element,
    )


def _row_cells(browser, strategy: str, column: str):
    """The run-name link and ``column``'s cell of the table row of run ``strategy``.

    ag-grid renders a row in several containers (pinned name, scrolling metrics) that share a
    ``row-index``; the name's row gives the index of the metrics' row.
    """
    from selenium.webdriver.common.by import By

    links = [a for a in browser.find_elements(By.LINK_TEXT, strategy) if a.is_displayed()]
    if not links:
        return None
    row = links[0].find_element(By.XPATH, "./ancestor::*[@role='row'][@row-index]")
    index = row.get_attribute("row-index")
    cells = browser.find_elements(
        By.CSS_SELECTOR, f"[role='row'][row-index='{index}'] [col-id='{column}']"
    )
    return (links[0], cells[0]) if cells else None


def test_runs_view_lists_every_strategy_with_its_test_accuracy_without_clicks(ui):
    from selenium.webdriver.support.ui import WebDriverWait

    browser, base, record, root = ui
    browser.get(base + record["ui_path"])
    column = "metrics.`test_accuracy`"

    def all_rows(driver):
        found = {s: _row_cells(driver, s, column) for s in STRATEGIES}
        return found if all(v is not None and v[1].text.strip() for v in found.values()) else False

    rows = WebDriverWait(browser, UI_TIMEOUT_S, poll_frequency=0.5).until(
        all_rows, message=f"runs view never listed {STRATEGIES} with a test_accuracy column"
    )
    shot = Path(os.environ.get("PETS_UI_SCREENSHOT") or root / "mlflow-runs.png")
    browser.save_screenshot(str(shot))
    print(f"screenshot: {shot}")
    for strategy, (link, cell) in rows.items():
        assert float(cell.text) == pytest.approx(METRICS[strategy]["test_accuracy"], abs=5e-3)
        assert _in_viewport(browser, link), f"{strategy} is not on the first screen"
        assert _in_viewport(browser, cell), f"{strategy}'s test_accuracy is not on the first screen"
    # the view is the model-training side of the UI, not MLflow 3's GenAI overview
    assert "workflowType=machine_learning" in browser.current_url
    assert "Token Usage" not in browser.page_source
    # best validation accuracy first (the selection rule); only this execution's strategy runs
    order = sorted(rows, key=lambda s: rows[s][1].location["y"])
    assert order == sorted(STRATEGIES, key=lambda s: -METRICS[s]["val_accuracy"])
    assert json.loads(json.dumps(record["children"])).keys() == set(STRATEGIES)


def test_chart_view_compares_final_metrics_as_bars(ui):
    """The runs' default charts: each final metric is one bar per strategy, not a line of
    single points at different steps. (Charts render as they scroll into view.)"""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser, base, record, _ = ui
    browser.get(base + record["ui_path"] + "&compareRunsMode=CHART")
    wait = WebDriverWait(browser, UI_TIMEOUT_S, poll_frequency=1)
    for metric in ("test_accuracy", "val_accuracy", "test_macro_f1", "train_seconds"):
        card = (
            f"//*[normalize-space(text())='{metric}']"
            "/ancestor::*[.//*[contains(@class, 'js-plotly-plot')]][1]"
        )

        def bars(driver, card=card):
            found = driver.find_elements(By.XPATH, card)
            if not found:  # the chart grid renders rows as they scroll into view
                for scroller in driver.find_elements(By.CSS_SELECTOR, SCROLLER):
                    driver.execute_script(
                        "const e = arguments[0];"
                        "e.scrollTop = e.scrollTop + e.clientHeight / 2 >= e.scrollHeight"
                        " - e.clientHeight ? 0 : e.scrollTop + e.clientHeight / 2;",
                        scroller,
                    )
                return False
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", found[0])
            points = found[0].find_elements(By.CSS_SELECTOR, ".barlayer .point")
            lines = found[0].find_elements(By.CSS_SELECTOR, ".scatterlayer .trace")
            return (len(points), len(lines)) if points or lines else False

        shape = wait.until(bars, message=f"no chart of {metric} rendered")
        assert shape == (len(STRATEGIES), 0), f"{metric}: (bars, lines) = {shape}"
