"""Images for a Label Studio server that cannot read curator's files (issue 17, item 5).

The server runs as another Unix user (``lsremote``) with its own data folder;
curator's workspace is private to root (0700), so the server can reach an image
only the way a remote server would: an upload through the API (``--media
upload``) or a signed URL served by curator (``--media serve``).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from conftest import unavailable
from curator.integrations.labelstudio import media
from curator.settings import Settings

REMOTE_USER = "lsremote"


# -- signed URLs, without a server ---------------------------------------------------------
def _media_settings(tmp_path, **kw) -> Settings:
    return Settings(workspace=tmp_path, labelstudio_media_url="http://media.example:8765",
                    labelstudio_media_secret="s" * 32, **kw)


def test_signed_url_opens_one_file_until_it_expires(tmp_path):
    settings = _media_settings(tmp_path, labelstudio_media_ttl=60)
    url = media.signed_url(settings, "mnist/a b.png", now=1000.0)
    assert url.startswith("http://media.example:8765/media/mnist/a%20b.png?exp=1060&sig=")
    sig = url.rsplit("sig=", 1)[1]
    key = media.secret(settings)
    assert media.verify(key, "mnist/a b.png", "1060", sig, now=1059.0) is None
    assert media.verify(key, "mnist/a b.png", "1060", sig, now=1061.0) == "expired"
    assert media.verify(key, "mnist/other.png", "1060", sig, now=1000.0) == "bad signature"  # another file
    assert media.verify(key, "mnist/a b.png", "9999", sig, now=1000.0) == "bad signature"  # a longer life
    assert media.verify(b"x" * 32, "mnist/a b.png", "1060", sig, now=1000.0) == "bad signature"  # another key
    assert media.verify(key, "../etc/passwd", "1060", sig, now=1000.0) == "bad path"
    with pytest.raises(ValueError):
        media.signed_url(settings, "/etc/passwd")


def test_media_mode_auto_is_local_files_only_for_a_server_on_this_machine(tmp_path):
    from curator.exceptions import ValidationError

    assert media.choose(Settings(workspace=tmp_path, labelstudio_url="http://127.0.0.1:8080")) == "local-files"
    assert media.choose(Settings(workspace=tmp_path, labelstudio_url="http://localhost:8080")) == "local-files"
    assert media.choose(Settings(workspace=tmp_path, labelstudio_url="https://ls.example.org")) == "upload"
    assert media.choose(Settings(workspace=tmp_path, labelstudio_url="http://127.0.0.1:8080"), "upload") == "upload"
    with pytest.raises(ValidationError, match="CURATOR_LABELSTUDIO_MEDIA_URL"):
        media.choose(Settings(workspace=tmp_path), "serve")
    with pytest.raises(ValidationError, match="CURATOR_LABELSTUDIO_MEDIA_SECRET"):
        media.choose(Settings(workspace=tmp_path, labelstudio_media_url="http://h:1"), "serve")
    with pytest.raises(ValidationError, match="use one of"):
        media.choose(Settings(workspace=tmp_path), "nfs")


def test_media_server_answers_signed_urls_only_and_never_logs_the_signature(tmp_path, capfd):
    settings = _media_settings(tmp_path)
    (tmp_path / "media" / "d").mkdir(parents=True)
    (tmp_path / "media" / "d" / "x.png").write_bytes(b"\x89PNG-bytes")
    (tmp_path / "secret.txt").write_text("not media")
    server = media.MediaServer(settings, host="127.0.0.1", port=0)
    server.start_background()
    try:
        settings = dataclasses.replace(settings, labelstudio_media_url=server.url)
        url = media.signed_url(settings, "d/x.png")
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.read() == b"\x89PNG-bytes" and resp.headers["Content-Type"] == "image/png"
        sig = url.rsplit("sig=", 1)[1]
        for bad in (url.replace(sig, "0" * 64), url.split("?")[0],
                    media.signed_url(settings, "d/x.png", now=time.time() - 10 * 86400),  # expired
                    f"{server.url}/media/../secret.txt?exp=9999999999&sig={sig}"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(bad, timeout=10)
            assert err.value.code in (403, 404)
        missing = media.signed_url(settings, "d/none.png")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(missing, timeout=10)
        assert err.value.code == 404
    finally:
        server.shutdown()
        server.server_close()
    logged = capfd.readouterr().err
    assert "/media/d/x.png" in logged and sig not in logged and "sig=" not in logged


# -- a Label Studio server as another user -------------------------------------------------
def _runs_as_remote(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", REMOTE_USER, "--", *cmd], capture_output=True, text=True, timeout=60)


def _ensure_user() -> None:
    """The user ``lsremote`` (created once; idempotent), or skip/fail via ``unavailable``."""
    if os.geteuid() != 0 or not shutil.which("runuser") or not shutil.which("useradd"):
        unavailable("the remote-server test needs root, runuser and useradd (to run Label Studio as another user)")
    if subprocess.run(["id", REMOTE_USER], capture_output=True).returncode != 0:
        made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                               REMOTE_USER], capture_output=True, text=True)
        if made.returncode != 0 and subprocess.run(["id", REMOTE_USER], capture_output=True).returncode != 0:
            unavailable(f"cannot create user {REMOTE_USER}: {made.stderr.strip()}")


def _remote_python(venv: Path) -> tuple[str, Path]:
    """(a Python ``lsremote`` may run, Label Studio's site-packages): the venv's own interpreter,
    or the system's of the same version when the venv's lives in a private home (pyenv under /root)."""
    site = next((venv / "lib").glob("python3.*/site-packages"), None)
    if site is None:
        unavailable(f"{venv} has no site-packages; install Label Studio: curator labelstudio up")
    version = site.parent.name  # python3.11
    for python in (str(venv / "bin" / "python3"), f"/usr/bin/{version}", f"/usr/local/bin/{version}",
                   shutil.which(version) or version):
        if Path(python).exists() and _runs_as_remote(python, "-c", "pass").returncode == 0:
            return python, site
    unavailable(f"no {version} that user {REMOTE_USER} may run (the venv's interpreter is in a private folder)")


@pytest.fixture(scope="module")
def remote_ls():
    """Settings of a Label Studio server running as ``lsremote`` in its own 0700 data folder."""
    from curator.integrations.labelstudio import server

    _ensure_user()
    if not server.executable().exists():
        unavailable(f"{server.executable()} is missing: install Label Studio with `curator labelstudio up` "
                    "(or set CURATOR_LABELSTUDIO_VENV)")
    python, site = _remote_python(server.venv_dir())
    home = Path(tempfile.mkdtemp(prefix="lsremote-"))
    from ls_fixtures import _free_port

    remote = Settings(workspace=home / "ws", labelstudio_url=f"http://127.0.0.1:{_free_port()}",
                      labelstudio_token=secrets.token_hex(20))
    data = home / "ws" / "labelstudio"
    data.mkdir(parents=True)
    env = server.server_env(remote, data, server.DEFAULT_USER, remote.labelstudio_token)
    env["HOME"] = str(home)
    subprocess.run(["chown", "-R", REMOTE_USER, str(home)], check=True)
    home.chmod(0o700)
    # The system's 3.11 may predate 3.11.3, where redis (Label Studio's) still imports async_timeout,
    # a backport of asyncio.timeout that the venv does not carry: alias it to the standard one.
    code = (f"import site, sys, asyncio, types, importlib.util; site.addsitedir({str(site)!r}); "
            "sys.argv[0] = 'label-studio'\n"
            "if importlib.util.find_spec('async_timeout') is None:\n"
            "    sys.modules['async_timeout'] = types.SimpleNamespace(timeout=asyncio.timeout)\n"
            "from label_studio.server import main; sys.exit(main())")
    log = open(home / "server.log", "ab")
    proc = subprocess.Popen(
        ["runuser", "-u", REMOTE_USER, "--", python, "-c", code, "start", "--no-browser", "--internal-host",
         "127.0.0.1", "--port", str(remote.labelstudio_url.rsplit(":", 1)[1])],
        env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not server.health(remote.labelstudio_url):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (home / "server.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"Label Studio as {REMOTE_USER} did not come up:\n{tail}")
            time.sleep(1.0)
        yield remote
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=30)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def _curator_side(remote: Settings, db_url: str | None, tmp_path: Path, **kw) -> Settings:
    """curator's own workspace, private to root: the server's user cannot read a byte of it."""
    ws = tmp_path / "ws"
    ws.mkdir()
    tmp_path.chmod(0o700)
    return Settings(workspace=ws, db_url=db_url or f"sqlite:///{ws / 'curator.db'}",
                    labelstudio_url=remote.labelstudio_url, labelstudio_token=remote.labelstudio_token, **kw)


def _sample_files(settings, ids):
    from curator.store.schema import Sample
    from curator.store.session import transaction

    with transaction(settings) as s:
        return dict(s.execute(select(Sample.id, Sample.uri).where(Sample.id.in_(ids))).all())


def _images_of_tasks(client, pid):
    return {int(t["data"]["sample_id"]): t["data"]["image"] for t in client.tasks(pid, "id,data")}


def _label_and_pull(settings, project, n):
    from curator.integrations.labelstudio import oracle
    from curator.integrations.labelstudio.pull import pull

    done = oracle.annotate(settings, project, limit=n)
    assert done.annotated == n
    got = pull(settings, project)
    assert got.new == n and got.labeled_samples == n


@pytest.mark.labelstudio
@pytest.mark.slow
def test_upload_reaches_a_server_that_cannot_read_the_workspace(remote_ls, db_settings, small_idx, tmp_path):
    from curator.integrations.labelstudio.client import Client
    from curator.integrations.labelstudio.push import push
    from ls_fixtures import LS_DATASET, make_round

    settings = _curator_side(remote_ls, db_settings.db_url, tmp_path)
    number, ranked, project = make_round(settings, small_idx, n=5)
    files = _sample_files(settings, ranked)
    assert _runs_as_remote("cat", files[ranked[0]]).returncode != 0  # the server's user cannot read it

    rep = push(settings, LS_DATASET, number, project=project, media="upload")
    assert rep.imported == 5
    client = Client.from_settings(settings)
    images = _images_of_tasks(client, rep.project_id)
    assert set(images) == set(ranked)
    for sid, url in images.items():
        assert url.startswith("/data/upload/")
        # what the labeling UI fetches: the server's own copy, read by the server's user
        got = client.sdk._client_wrapper.httpx_client.request(url.lstrip("/"), method="GET")
        assert got.status_code == 200 and got.content == Path(files[sid]).read_bytes()
    assert not any(st for st in client.call("storages", client.sdk.import_storage.local.list, project=rep.project_id))

    again = push(settings, LS_DATASET, number, project=project, media="upload")  # nothing uploaded twice
    assert again.imported == 0 and again.already_linked == 5
    _label_and_pull(settings, project, 5)


@pytest.mark.labelstudio
@pytest.mark.slow
def test_signed_urls_reach_a_server_that_cannot_read_the_workspace(remote_ls, small_idx, tmp_path):
    from curator.integrations.labelstudio.client import Client
    from curator.integrations.labelstudio.push import push
    from ls_fixtures import LS_DATASET, make_round

    settings = _curator_side(remote_ls, None, tmp_path, labelstudio_media_secret=secrets.token_hex(16),
                             labelstudio_media_ttl=3600)
    number, ranked, project = make_round(settings, small_idx, n=4)
    files = _sample_files(settings, ranked)
    srv = media.MediaServer(settings, host="127.0.0.1", port=0)
    srv.start_background()
    try:
        settings = dataclasses.replace(settings, labelstudio_media_url=srv.url)
        rep = push(settings, LS_DATASET, number, project=project, media="serve")
        assert rep.imported == 4
        images = _images_of_tasks(Client.from_settings(settings), rep.project_id)
        assert set(images) == set(ranked)
        fetch = "import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1]).read())"
        for sid, url in images.items():
            assert url.startswith(srv.url + "/media/") and "sig=" in url
            # fetched as the other user would, over HTTP: the bytes of the private file
            got = subprocess.run(["runuser", "-u", REMOTE_USER, "--", sys.executable if os.access(
                sys.executable, os.X_OK) else "python3", "-c", fetch, url], capture_output=True, timeout=60)
            if got.returncode != 0:  # this interpreter lives in a private folder: the system one
                got = subprocess.run(["runuser", "-u", REMOTE_USER, "--", "/usr/bin/python3", "-c", fetch, url],
                                     capture_output=True, timeout=60)
            assert got.returncode == 0, got.stderr[-500:]
            assert got.stdout == Path(files[sid]).read_bytes()
        _label_and_pull(settings, project, 4)
    finally:
        srv.shutdown()
        srv.server_close()
