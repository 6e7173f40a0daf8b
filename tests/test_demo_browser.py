"""End to end in headless Chromium: start the page on a free localhost port, upload an image, read the verdict,
upload a broken file, read the error. The screenshot is kept in test-artifacts/."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"

pytest.importorskip("gradio", reason="the demo needs the demo extra: pip install dualsight-hf[demo]")
playwright = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (test extra)")
if not os.path.exists(CHROMIUM):
    pytest.skip("the browser test needs Debian's chromium (apt-get install chromium); .ci/run installs it",
                allow_module_level=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, str(REPO / "app.py")], env=env, cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the app did not start: {process.stdout.read()[-3000:]}")
            time.sleep(0.5)
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_upload_an_image_then_a_broken_file(server, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"<html><body>not an image</body></html>")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(server)
        page.locator("#input-image input[type=file]").set_input_files(str(REPO / "examples/real/coffee.png"))
        verdict = page.locator("#verdict")
        verdict.filter(has_text="ms").wait_for(timeout=120_000)
        text = verdict.inner_text()
        assert any(label in text for label in ("real", "ai_generated", "uncertain")) and " ms" in text
        assert page.locator("#authenticity").inner_text().strip()
        page.locator("#heatmap img").wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)

        page.goto(server)  # a fresh page
        page.locator("#input-image input[type=file]").set_input_files(str(broken))
        verdict.filter(has_text="Error").wait_for(timeout=60_000)
        message = verdict.inner_text()
        assert "broken.jpg: not an image: the file holds HTML" in message
        assert "Traceback" not in page.content()
        page.screenshot(path=str(ARTIFACTS / "demo-error.png"), full_page=True)
        browser.close()
