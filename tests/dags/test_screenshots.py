"""README screenshots of the Airflow UI (grid, trigger form) and the HTML report, taken in headless Chromium.

The pictures are taken from the session's stack (``segmentation_stack``, shared with
``test_scheduler.py``), so they show the current DAG, form and report. They are written to a
temporary folder; with ``REFRESH_SCREENSHOTS=1`` they replace the README's in ``docs/img/``. Chromium is driven over the DevTools protocol (``websockets``, already
installed with uvicorn) because the trigger form is a dialog a button opens: it has no URL.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests
from websockets.sync.client import connect

from tests.airflow_stack import DAG_ID, ROOT, SMALL_DATA_CONF

pytestmark = pytest.mark.slow

README_IMG_DIR = ROOT / "docs" / "img"
MAX_BYTES = 300_000
WIDTH, HEIGHT = 1280, 800
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--remote-debugging-port=0", "--remote-allow-origins=*"]


class Browser:
    """A headless Chromium page driven over the DevTools protocol."""

    def __init__(self) -> None:
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if not binary:
            pytest.fail("Debian's chromium is required (scripts/test.sh installs it: apt-get install chromium)")
        self.profile = Path(tempfile.mkdtemp(prefix="chromium-h16-"))
        self.proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = [t for t in requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
                 if t["type"] == "page"]
        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.ids = itertools.count(1)
        self.call("Emulation.setDeviceMetricsOverride",
                  width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params) -> dict:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 90) -> None:
        """Wait until a JavaScript expression is truthy (the React app renders asynchronously)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate(expression):
                return
            time.sleep(0.5)
        text = self.evaluate("document.body ? document.body.innerText.slice(0, 2000) : ''")
        raise AssertionError(f"page never satisfied {expression!r}; it shows:\n{text}")

    def click(self, element: str) -> None:
        """Click the element a JavaScript expression finds, with real mouse events (React listens to pointer events)."""
        self.wait_for(f"!!({element})")
        box = self.evaluate(f"(() => {{ const e = {element}; e.scrollIntoView({{block: 'center'}}); "
                            "const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def open(self, url: str) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", url=url)

    def screenshot(self, path: Path) -> bytes:
        time.sleep(1.0)  # let transitions and fonts settle
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return data

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def img_dir(tmp_path_factory) -> Path:
    """``docs/img`` when ``REFRESH_SCREENSHOTS=1``, else a temporary folder (a test run leaves the repo as it was)."""
    if os.environ.get("REFRESH_SCREENSHOTS") == "1":
        return README_IMG_DIR
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def browser():
    page = Browser()
    yield page
    page.close()


@pytest.fixture(scope="module")
def finished_run(segmentation_stack) -> dict:
    """A successful run on the stack (the scheduler test's, or one triggered here when run alone)."""
    runs = [r for r in segmentation_stack.dag_runs(DAG_ID) if r["state"] == "success"]
    if not runs:
        run_id = segmentation_stack.trigger(DAG_ID, {**SMALL_DATA_CONF, "as_of_date": "2026-11-07"})
        runs = [segmentation_stack.wait_for_run(DAG_ID, run_id, 1800)]
    assert runs[-1]["state"] == "success"
    return runs[-1]


def _check_png(data: bytes) -> None:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (WIDTH, HEIGHT)
    assert len(data) < MAX_BYTES, f"{len(data):,} bytes: keep README pictures under {MAX_BYTES:,}"


def _button(text: str) -> str:
    return f"[...document.querySelectorAll('button')].find(b => b.innerText.trim() === {json.dumps(text)})"


def _has_text(*texts: str) -> str:
    return " && ".join(f"document.body && document.body.innerText.includes({json.dumps(t)})" for t in texts)


def test_grid_screenshot(segmentation_stack, finished_run, browser, img_dir):
    browser.open(f"{segmentation_stack.base_url}/dags/{DAG_ID}")
    browser.wait_for(_has_text("extract_validate", "render_report", "push_outbox"))
    _check_png(browser.screenshot(img_dir / "airflow-grid.png"))


def test_trigger_form_screenshot(segmentation_stack, finished_run, browser, img_dir):
    browser.open(f"{segmentation_stack.base_url}/dags/{DAG_ID}")
    browser.click(_button("Trigger"))
    browser.wait_for(_has_text("Trigger Dag", "Essentials", "Segmentation"))
    # Open the first section of the form: the essentials, with their titles (Param(title=...)).
    browser.click(_button("Essentials"))
    browser.wait_for(_has_text("CRM targets", "As-of date"))
    _check_png(browser.screenshot(img_dir / "airflow-trigger-form.png"))


def test_report_screenshot(segmentation_stack, finished_run, browser, img_dir):
    reports = sorted((segmentation_stack.data_dir / "reports").glob("segment_report_*.html"))
    assert reports, "the run wrote no HTML report"
    browser.open(reports[-1].as_uri())
    browser.wait_for(_has_text("Segment"))
    _check_png(browser.screenshot(img_dir / "segment-report.png"))
