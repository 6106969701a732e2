"""The App as a person sees it: `curator fiftyone app` serving a synced dataset on
127.0.0.1, opened in headless Chromium.

Saves three screenshots: the sample grid, curator's operators in the App's
operator browser, and the select-batch form refusing a budget larger than the
pool. They go to a temporary folder; to refresh the committed ones run

    CURATOR_SCREENSHOTS=plugins/fiftyone/screenshots .venv/bin/pytest tests/test_fiftyone_app.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, unavailable
from fiftyone_data import make_workspace

pytestmark = [pytest.mark.fiftyone, pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path(os.environ.get("CURATOR_CHROMIUM", "/usr/bin/chromium"))
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


LOCAL = ("http://127.0.0.1:", "data:", "blob:")
FONTS = ("https://fonts.googleapis.com/", "https://fonts.gstatic.com/")


def _local_only(route, blocked: list) -> None:
    url = route.request.url
    if url.startswith(LOCAL):
        route.continue_()
    else:
        blocked.append(url)
        route.abort()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def app(settings, fiftyone_db, tmp_path):
    """A synced dataset served by `curator fiftyone app` in a subprocess; yields its URL."""
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing: apt-get install chromium (tests/services.sh does)")
    import fiftyone as fo

    from curator.integrations.fiftyone import sync
    from curator.integrations.fiftyone.app import app_url, install

    install(fiftyone_db["FIFTYONE_PLUGINS_DIR"])
    data = make_workspace(settings)
    sync(settings, "digits")
    port = _free_port()
    log = tmp_path / "app.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "curator", "fiftyone", "app", "curator-digits", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **fiftyone_db},
        )
    try:
        _wait_for(f"http://127.0.0.1:{port}/", proc, log)
        yield app_url("127.0.0.1", port, "curator-digits"), data
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        fo.delete_datasets("*")


def _wait_for(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the App exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the App did not answer on {url} within {timeout:.0f} s: {log.read_text()[-2000:]}")


def test_app_shows_the_synced_grid_and_curator_operators(app, tmp_path):
    from playwright.sync_api import sync_playwright

    url, data = app
    out = ROOT / os.environ["CURATOR_SCREENSHOTS"] if os.environ.get("CURATOR_SCREENSHOTS") else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        # playwright gives the browser a fresh temporary profile
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        media = []  # the grid fetches each thumbnail from the server's /media route
        blocked = []  # nothing may leave this machine: every other address is refused
        page.route("**/*", lambda route: _local_only(route, blocked))
        page.on("requestfinished", lambda req: media.append(req.url) if "/media" in req.url else None)
        page.goto(url)
        page.get_by_text(f"{len(data['ids'])} samples").wait_for(timeout=90_000)
        deadline = time.monotonic() + 90
        while len(media) < 24 and time.monotonic() < deadline:
            page.wait_for_timeout(250)
        assert len(media) >= 24, f"the grid loaded {len(media)} images"
        dismiss = page.get_by_text("Dismiss")  # the App's promotional pop-up, when shown
        if dismiss.count():
            dismiss.first.click()
        page.wait_for_timeout(2000)  # let the grid paint them
        body = page.inner_text("body")
        for field in ("curator_entropy", "curator_rank", "curator_dup_group", "prediction", "human_label"):
            assert field in body
        page.screenshot(path=str(out / "grid.png"))

        page.keyboard.press("`")  # the operator browser
        page.keyboard.type("curator")
        for label in ("curator: score the pool", "curator: select the next batch",
                      "curator: push a round to Label Studio", "curator: pull annotations",
                      "curator: create a labeled-set version"):
            page.get_by_text(label).wait_for(timeout=30_000)
        page.screenshot(path=str(out / "operators.png"))

        page.get_by_text("curator: select the next batch").click()
        budget = page.locator("input[type=number]").first
        budget.wait_for(timeout=30_000)
        budget.fill("999")
        message = page.get_by_text("budget 999 is larger than the pool")
        message.wait_for(timeout=30_000)
        assert page.get_by_role("button", name="Execute").is_disabled()
        page.screenshot(path=str(out / "select-batch-budget-error.png"))
        browser.close()
    # The App's own page links two Google Fonts stylesheets (refused, it falls back to local
    # fonts); anything else it, or curator's plugin, asks from outside fails the test.
    assert all(u.startswith(FONTS) for u in blocked), f"asked outside this machine: {blocked[:5]}"
    for name in ("grid.png", "operators.png", "select-batch-budget-error.png"):
        assert (out / name).stat().st_size > 10_000
