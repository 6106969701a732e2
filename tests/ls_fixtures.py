"""Fixtures for tests against a real Label Studio server (marker ``labelstudio``).

One server per test session: ``CURATOR_TEST_LS_URL`` + ``CURATOR_TEST_LS_TOKEN``
name a running one (its local-file root should be
``$CURATOR_TEST_LS_WORKSPACE/media``); otherwise the session starts its own
with ``curator.integrations.labelstudio.server`` (installing ``.venv-ls`` if
missing) on a free port with a random token, and stops it at the end. Tests
use separate projects and their own database; they share the workspace, so
the media folder the server serves is the one push writes links for.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import secrets
import socket
import struct
import uuid
from pathlib import Path

import pytest

from curator.settings import Settings

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "datasets" / "mnist1989"
N_SMALL = 64


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def ls_server(tmp_path_factory):
    """Settings (workspace, URL, token) of the session's Label Studio server."""
    url, token = os.environ.get("CURATOR_TEST_LS_URL"), os.environ.get("CURATOR_TEST_LS_TOKEN")
    if url and token:
        workspace = Path(os.environ.get("CURATOR_TEST_LS_WORKSPACE") or tmp_path_factory.mktemp("ls"))
        yield Settings(workspace=workspace, labelstudio_url=url, labelstudio_token=token)
        return
    from curator.integrations.labelstudio import server

    settings = Settings(
        workspace=tmp_path_factory.mktemp("ls") / "ws",
        labelstudio_url=f"http://127.0.0.1:{_free_port()}",
        labelstudio_token=secrets.token_hex(20),
    )
    server.start(settings, timeout=600, echo=lambda _m: None)
    try:
        yield settings
    finally:
        server.stop(settings, echo=lambda _m: None)


@pytest.fixture(scope="session")
def small_idx(tmp_path_factory):
    """The first 64 images and labels of the bundled MNIST-1989 test split, as IDX files."""
    from curator.ingest.idx import iter_images, read_labels

    out = tmp_path_factory.mktemp("idx")
    _, block = next(iter_images(SAMPLE_DIR / "test-images-idx3-ubyte.gz", batch_size=N_SMALL))
    labels = read_labels(SAMPLE_DIR / "test-labels-idx1-ubyte.gz")[:N_SMALL]
    images = out / "small-images-idx3-ubyte.gz"
    with gzip.open(images, "wb") as fh:
        fh.write(struct.pack(">iiii", 2051, *block.shape) + block.tobytes())
    label_file = out / "small-labels-idx1-ubyte.gz"
    with gzip.open(label_file, "wb") as fh:
        fh.write(struct.pack(">ii", 2049, len(labels)) + labels.tobytes())
    return images, label_file


def with_database(server: Settings, db_url: str | None, tmp_path: Path) -> Settings:
    """The shared server and workspace with a test's own database."""
    return dataclasses.replace(server, db_url=db_url or f"sqlite:///{tmp_path / 'curator.db'}")


@pytest.fixture
def ls_settings(ls_server, tmp_path):
    """The shared server and workspace, with this test's own SQLite database."""
    return with_database(ls_server, None, tmp_path)


#: The dataset ``make_round`` ingests.
LS_DATASET = "mnist89"


def make_round(settings: Settings, small_idx, n: int = 12):
    """Ingest the small sample and record a round of ``n`` samples ranked against id order.

    Returns (the round's number, ranked sample ids, a project name unique to the caller); the round
    is round 1 of dataset ``mnist89`` (``LS_DATASET``).
    """
    from sqlalchemy import select

    from curator.ingest import ingest_idx
    from curator.store.schema import Dataset, Round, RoundItem, Sample
    from curator.store.session import transaction

    ingest_idx(*small_idx, dataset="mnist89", split="test", settings=settings)
    with transaction(settings) as s:
        ds = s.scalar(select(Dataset).where(Dataset.name == "mnist89"))
        ids = s.scalars(select(Sample.id).where(Sample.dataset_id == ds.id).order_by(Sample.id)).all()
        ranked = list(reversed(ids[::3]))[:n]  # rank 0 is a late sample: rank order != id order
        rnd = Round(dataset_id=ds.id, number=1, policy="test", budget=len(ranked), seed=0, status="selected")
        s.add(rnd)
        s.flush()
        s.add_all(RoundItem(round_id=rnd.id, sample_id=sid, rank=r, score=1.0 - r / 100)
                  for r, sid in enumerate(ranked))
    return 1, ranked, f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def ls_round(ls_settings, small_idx):
    """(settings, round number, ranked sample ids, project name) on SQLite; the dataset is ``LS_DATASET``."""
    return (ls_settings, *make_round(ls_settings, small_idx))


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def screenshot_task(settings: Settings, project_id: int, view_id: int, task_id: int, out: Path,
                    expect_text: str) -> Path:
    """Log in as the server's user in headless Chromium, open a task from the queue's view, save a PNG.

    Waits for ``expect_text`` (drawn by the labeling interface) so the picture
    shows the loaded task, not a spinner.
    """
    from playwright.sync_api import sync_playwright

    from curator.integrations.labelstudio import server

    user = os.environ.get(server.USER_ENV, server.DEFAULT_USER)
    password = os.environ.get(server.PASSWORD_ENV) or settings.labelstudio_token
    url = settings.labelstudio_url.rstrip("/")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/user/login/")
            page.fill("input[name=email]", user)
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")
            page.wait_for_load_state("networkidle")
            page.goto(f"{url}/projects/{project_id}/data?tab={view_id}&task={task_id}")
            page.get_by_text(expect_text).first.wait_for(timeout=60_000)
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(1500)  # let the image and the pre-annotation paint
            page.screenshot(path=str(out))
        finally:
            browser.close()
    return out


#: A stand-in for Label Studio's executables (`label-studio`, its `python`): answers /health on the
#: port it is given and writes a database file as Label Studio does; format with ``python=sys.executable``.
FAKE_LABEL_STUDIO = """#!{python}
import http.server, os, sys
data = os.environ["LABEL_STUDIO_BASE_DATA_DIR"]
with open(os.path.join(data, "label_studio.sqlite3"), "w") as fh:
    fh.write("token " + os.environ["LABEL_STUDIO_USER_TOKEN"])
os.makedirs(os.path.join(data, "media", "upload"), exist_ok=True)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
# `label-studio start ... --port P`, or Label Studio's python running curator's launcher: launch.py HOST P ...
port = int(sys.argv[sys.argv.index("--port") + 1] if "--port" in sys.argv else sys.argv[3])
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""
