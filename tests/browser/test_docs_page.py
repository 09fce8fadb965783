"""GET /docs in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium):
the reference renders from the node's /openapi.json and its playground talks to the node itself.

Skips, saying why, where no Chromium is installed (`.ci/run` installs it). The run takes a
screenshot of the page showing the 202; with FOGLAMP_UPDATE_SCREENSHOT=1 it replaces
docs/docs-page.png, the one README.md shows (otherwise it goes to the test's temporary directory,
so that a test run leaves the tree as it was).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.nodes import REPO, Node, create_key, create_org, query, wait_for_rows

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
README_SCREENSHOT = REPO / "docs" / "docs-page.png"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1700")  # fmt: skip

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(f"no Chromium: {CHROMIUM} or {CHROMEDRIVER} is missing "
                "(apt-get install chromium chromium-driver; .ci/run does)", allow_module_level=True)  # fmt: skip

from selenium import webdriver  # noqa: E402  (after the skip: the module needs a browser anyway)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

INGEST = "#operations-ingest-ingest"
HIDE_KEYS = """
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  node.nodeValue = node.nodeValue.replace(/fl_[A-Za-z0-9_-]+/g, "fl_…");
}
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    data_dir = tmp_path_factory.mktemp("docs") / "data"
    node = Node(data_dir, workers=1, env={"INGEST_FLUSH_INTERVAL_MS": "200"}).start()
    yield node
    assert node.stop() == 0, node.logs()


@pytest.fixture(scope="module")
def key(node: Node) -> str:
    return create_key(node.data_dir, create_org(node.data_dir, "docs"), "--name", "docs-page")


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def wait_for(driver: WebDriver, css: str, timeout_s: float = 30) -> WebElement:
    return WebDriverWait(driver, timeout_s).until(lambda d: d.find_element(By.CSS_SELECTOR, css))


def click(driver: WebDriver, css: str) -> None:
    element = wait_for(driver, css)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.click()


def execute(driver: WebDriver, screenshot: Path | None = None) -> tuple[str, str]:
    """Press Execute on POST /ingest; the status and body the page shows for the node's answer
    (and a screenshot of the page showing it)."""
    click(driver, f"{INGEST} .btn.execute")
    status = wait_for(driver, f"{INGEST} .live-responses-table tbody .response-col_status").text.strip()
    body = wait_for(driver, f"{INGEST} .live-responses-table tbody .response-col_description pre").text
    if screenshot is not None:
        live = driver.find_element(By.CSS_SELECTOR, f"{INGEST} .live-responses-table")
        driver.execute_script("arguments[0].scrollIntoView({block: 'end'})", live)
        screenshot.parent.mkdir(exist_ok=True)
        # The README shows no key, not even a test's throwaway one.
        driver.execute_script(HIDE_KEYS)
        driver.save_screenshot(str(screenshot))
    click(driver, f"{INGEST} .btn-clear")  # so that the next answer is a new one
    WebDriverWait(driver, 10).until(lambda d: not d.find_elements(By.CSS_SELECTOR, f"{INGEST} .live-responses-table"))
    return status, body


def choose_example(driver: WebDriver, name: str) -> None:
    """Pick a named request example; wait until the body editor holds it (its trace id)."""
    select = wait_for(driver, f"{INGEST} .opblock-section-request-body .examples-select select")
    Select(select).select_by_value(name)
    trace_id = f"docs-{'example' if name == 'valid' else name}-trace"
    editor = f"{INGEST} textarea.body-param__text"
    WebDriverWait(driver, 10).until(
        lambda d: trace_id in d.find_element(By.CSS_SELECTOR, editor).get_attribute("value")
    )


def authorize(driver: WebDriver, key: str | None) -> None:
    """The Authorize dialog: log in the Bearer scheme with `key`, or log out of it (None)."""
    click(driver, ".auth-wrapper .authorize")
    container = wait_for(driver, ".modal-ux .auth-container")
    if key is None:
        container.find_element(By.XPATH, ".//button[normalize-space()='Logout']").click()
    else:
        container.find_element(By.CSS_SELECTOR, "input").send_keys(key)
        container.find_element(By.XPATH, ".//button[normalize-space()='Authorize']").click()
    click(driver, ".modal-ux .btn-done")


def test_docs_assets_are_served_offline(node: Node) -> None:
    page = httpx.get(f"{node.url}/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text  # nothing from another origin
    assets = re.findall(r'(?:href|src)="(/docs/swagger-ui-[^"]+)"', page.text)
    assert len(assets) == 5, assets
    for path in assets:
        asset = httpx.get(f"{node.url}{path}")
        assert asset.status_code == 200 and asset.content, path
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
    prefix = assets[0].rsplit("/", 1)[0]
    assert httpx.get(f"{node.url}{prefix}/swagger-ui-bundle.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{node.url}{prefix}/swagger-ui.css").headers["content-type"].startswith("text/css")
    assert httpx.get(f"{node.url}{prefix}/index.html").status_code == 404  # only the listed files


def test_playground_sends_batches_to_the_node(node: Node, key: str, browser: WebDriver, tmp_path: Path) -> None:
    screenshot = README_SCREENSHOT if os.environ.get("FOGLAMP_UPDATE_SCREENSHOT") == "1" else tmp_path / "docs-page.png"
    browser.get(f"{node.url}/docs")
    # The reference renders every path of the node's document.
    wait_for(browser, INGEST)
    paths = {e.get_attribute("data-path") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/ingest", "/healthz", "/readyz", "/metrics"} <= paths, paths
    click(browser, f"{INGEST} .opblock-summary")

    # No key: 401.
    status, body = execute(browser)
    assert status == "401" and '"unauthorized"' in body, (status, body)

    # With a key, the ready example as is: 202 and its spans are stored.
    authorize(browser, key)
    choose_example(browser, "valid")
    status, body = execute(browser, screenshot=screenshot)
    assert status == "202" and '"accepted": 2' in body, (status, body)
    assert screenshot.stat().st_size > 10_000  # a PNG of the rendered page
    sql = "SELECT count() AS c FROM foglamp.spans FINAL WHERE trace_id = 'docs-example-trace'"
    assert wait_for_rows(node.data_dir, sql, 2) == 2
    rows = query(node.data_dir, "SELECT span_id, model FROM foglamp.spans FINAL "
                                "WHERE trace_id = 'docs-example-trace' ORDER BY span_id")  # fmt: skip
    assert [(r["span_id"], r["model"]) for r in rows] == [("llm-1", "gpt-4o-mini"), ("root", "")]

    # The invalid example: 400 with the paths of its issues.
    choose_example(browser, "invalid")
    status, body = execute(browser)
    assert status == "400" and '"invalid_payload"' in body, (status, body)
    assert '"startTime"' in body and '"inputTokens"' in body, body

    # Logged out again: 401.
    authorize(browser, None)
    choose_example(browser, "valid")
    status, body = execute(browser)
    assert status == "401", (status, body)
