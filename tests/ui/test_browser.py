"""The Streamlit app in a real headless Chromium: `streamlit run` as a subprocess against
the stub API, the form filled and submitted through the page, the answer read off it.

Needs Debian's Chromium at /usr/bin/chromium (driven by Playwright's Python API; no
`playwright install`). Its background-networking flags keep it from hanging on this
machine's closed network.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.tools import require
from tests.ui.conftest import APP_PATH, StubApi, free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STARTUP_SECONDS = 30
PAGE_TIMEOUT_MS = 20_000

pytestmark = pytest.mark.slow


def wait_until_healthy(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    """Poll Streamlit's health endpoint until it answers 200; fail early if it exits."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"streamlit exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/_stcore/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"streamlit did not answer at {url} within {STARTUP_SECONDS} s")


@pytest.fixture
def streamlit_url(stub_api: StubApi, tmp_path: Path) -> Iterator[str]:
    """`streamlit run` of the app on a free port, pointed at the stub API; stopped after."""
    port = free_port()
    env = {**os.environ, "API_URL": stub_api.url, "HOME": str(tmp_path)}
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_PATH),
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
    ]
    log = tmp_path / "streamlit.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=env, cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, url, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_person_fills_the_form_and_sees_the_prediction(
    streamlit_url: str, stub_api: StubApi
) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=require(CHROMIUM, "chromium"), args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.goto(streamlit_url)

            days = page.get_by_role("spinbutton", name="Time in hospital (days)", exact=True)
            days.fill("5")
            page.get_by_role("spinbutton", name="Patient number (optional)").fill("8222157")
            page.get_by_role("textbox", name="Primary diagnosis", exact=True).fill("250.83")
            page.get_by_role("button", name="Predict", exact=True).click()

            expect(page.get_by_text("Readmitted within 30 days (<30)")).to_be_visible()
            expect(page.get_by_text("v3", exact=True)).to_be_visible()
            expect(page.get_by_text("16.0%", exact=True)).to_be_visible()

            page.get_by_role("link", name="Model registry", exact=True).click()
            expect(page.get_by_role("heading", name="Production history")).to_be_visible()
            expect(page.get_by_text("python -m readmission rollback")).to_be_visible()
        finally:
            browser.close()

    (body,) = stub_api.predict_bodies
    assert body["time_in_hospital"] == 5
    assert body["patient_nbr"] == 8222157
    assert body["diag_1"] == "250.83"
    assert body["admission_type_id"] == 1
    assert stub_api.calls("/model/history") == 1
