"""No leftovers, private files (issue 13): a killed ingest leaves nothing once the workspace is
started again or `curator doctor --fix` runs; the workspace and Label Studio's data are 0700/0600.

The kill tests run a real ``curator ingest`` subprocess and ``kill -9`` it at a point chosen by a
condition, never by a sleep: midway (once it has staged PNG files, polled on disk) and between
its commit and the move of its files into place (``Staging.publish`` replaced by a self-kill).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from curator.ingest.idx import iter_images
from curator.store.schema import Dataset, Sample
from curator.store.session import transaction

from badinput import run
from conftest import ROOT, SAMPLE
from ls_fixtures import FAKE_LABEL_STUDIO

SMALL = SAMPLE / "test-images-idx3-ubyte.gz"  # 2,007 images


def env_for(settings, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURATOR_")}
    env.update(PYTHONPATH=str(ROOT), CURATOR_PROGRESS="0", CURATOR_WORKSPACE=str(settings.workspace), **extra)
    if settings.db_url:
        env["CURATOR_DB_URL"] = settings.db_url
    return env


def curator(settings, *argv, umask=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curator", *map(str, argv)], env=env_for(settings),
                          capture_output=True, text=True, timeout=300, umask=-1 if umask is None else umask)


def big_idx(path: Path, n: int = 30_000) -> Path:
    """An uncompressed IDX file of ``n`` images (the bundled train set, tiled): big enough that an
    ingest is still encoding when it is killed."""
    _, block = next(iter_images(SAMPLE / "train-images-idx3-ubyte.gz", batch_size=10_000))
    images = np.resize(block, (n, *block.shape[1:]))
    images[:, 0, 0] = np.arange(n) % 251  # no two tiles identical
    with open(path, "wb") as fh:
        fh.write(np.array([2051, n, *block.shape[1:]], dtype=">i4").tobytes())
        fh.write(images.tobytes())
    return path


def counts(settings) -> tuple[int, int]:
    with transaction(settings) as s:
        return (s.scalar(select(func.count()).select_from(Dataset)),
                s.scalar(select(func.count()).select_from(Sample)))


def media_files(settings, staged: bool) -> list[Path]:
    media = Path(settings.workspace) / "media"
    if not media.exists():
        return []
    return [p for p in media.rglob("*") if p.is_file() and (".staging" in p.parts) == staged
            and not p.name.endswith(".lock")]


def wait_for(cond, proc, what: str, timeout=240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the ingest ended (exit {proc.returncode}) before {what}: {err[-2000:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.parametrize("cleanup", ["doctor", "next-ingest"])
def test_ingest_killed_midway_leaves_nothing(db_settings, tmp_path, cleanup):
    source = big_idx(tmp_path / "big-images-idx3-ubyte")
    Path(db_settings.workspace).mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-m", "curator", "ingest", str(source), "-d", "big",
                             "--batch-size", "256"], env=env_for(db_settings),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(media_files(db_settings, staged=True)) >= 600, proc, "600 PNG files were staged")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert counts(db_settings) == (0, 0)
    assert media_files(db_settings, staged=False) == []  # nothing ever reached the media folder
    staged = media_files(db_settings, staged=True)
    assert len(staged) >= 600

    if cleanup == "doctor":
        dry = curator(db_settings, "doctor", "--json")
        assert dry.returncode == 0, dry.stderr
        found = json.loads(dry.stdout)["findings"]
        assert {(f["kind"], f["action"]) for f in found} == {("staging", "delete")}
        assert len(found) == len(staged)
        assert len(media_files(db_settings, staged=True)) == len(staged)  # a dry run changes nothing
        fixed = curator(db_settings, "doctor", "--fix")
        assert fixed.returncode == 0 and "deleted" in fixed.stdout, fixed.stderr
        assert media_files(db_settings, staged=True) == []
        assert json.loads(curator(db_settings, "doctor", "--json").stdout)["findings"] == []
    done = curator(db_settings, "ingest", SMALL, "-d", "small")
    assert done.returncode == 0, done.stderr
    assert media_files(db_settings, staged=True) == []
    assert counts(db_settings) == (1, 2007)
    assert len(media_files(db_settings, staged=False)) == 2007
    staging_root = Path(db_settings.workspace) / "media" / ".staging"
    assert not staging_root.exists() or not list(staging_root.iterdir())


KILL_AT_PUBLISH = """
import os, signal, sys
from curator.ingest import staging
staging.Staging.publish = lambda self: os.kill(os.getpid(), signal.SIGKILL)
from curator.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("cleanup", ["doctor", "next-ingest"])
def test_ingest_killed_between_commit_and_publish_is_repaired(db_settings, tmp_path, cleanup):
    done = subprocess.run([sys.executable, "-c", KILL_AT_PUBLISH, "ingest", str(SMALL), "-d", "digits"],
                          env=env_for(db_settings), capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert counts(db_settings) == (1, 2007)  # the rows were committed ...
    assert media_files(db_settings, staged=False) == []  # ... their files not yet in place
    assert len(media_files(db_settings, staged=True)) == 2007

    if cleanup == "doctor":
        found = json.loads(curator(db_settings, "doctor", "--json").stdout)["findings"]
        assert {(f["kind"], f["action"]) for f in found} == {("staging", "publish")} and len(found) == 2007
        assert curator(db_settings, "doctor", "--fix").returncode == 0
    else:
        tiny = tmp_path / "tiny.npz"
        np.savez(tiny, images=np.zeros((3, 8, 8), np.uint8))
        again = curator(db_settings, "ingest", tiny, "-d", "other")
        assert again.returncode == 0, again.stderr
    assert media_files(db_settings, staged=True) == []
    import hashlib

    with transaction(db_settings) as s:
        rows = s.execute(select(Sample.uri, Sample.sha256).join(Dataset).where(Dataset.name == "digits")).all()
    assert len(rows) == 2007
    for uri, sha in rows:  # every row's file is in place, with the bytes that were hashed
        assert hashlib.sha256(Path(uri).read_bytes()).hexdigest() == sha


def test_publish_failing_midway_is_finished_by_the_next_start(db_settings, monkeypatch):
    """The disk fills up while files are moved into place after the commit: one clear error, and
    the files not yet moved stay staged until the next ingest moves them (none is lost)."""
    import hashlib

    from curator import ingest_arrays, ingest_idx
    from curator.exceptions import CuratorError
    from curator.ingest import staging

    real, calls = staging.move_into_place, []

    def full_disk(src, dst):
        calls.append(src)
        if len(calls) > 100:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(staging, "move_into_place", full_disk)
    with pytest.raises(CuratorError, match="stored but their image files could not be moved.*doctor --fix"):
        ingest_idx(SMALL, dataset="digits", settings=db_settings)
    assert counts(db_settings) == (1, 2007)
    assert len(media_files(db_settings, staged=False)) == 100
    assert len(media_files(db_settings, staged=True)) == 1907
    monkeypatch.setattr(staging, "move_into_place", real)
    ingest_arrays(np.zeros((2, 4, 4), np.uint8), dataset="other", name="z", settings=db_settings)
    assert media_files(db_settings, staged=True) == []
    with transaction(db_settings) as s:
        rows = s.execute(select(Sample.uri, Sample.sha256)).all()
    assert len(rows) == 2009
    for uri, sha in rows:
        assert hashlib.sha256(Path(uri).read_bytes()).hexdigest() == sha


def test_doctor_finds_orphans_and_keeps_what_rows_name(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("CURATOR_WORKSPACE", str(settings.workspace))
    assert run(["ingest", SMALL, "-d", "digits"])[0] == 0
    ws = Path(settings.workspace)
    kept = sorted((ws / "media").rglob("*.png"))
    orphans = {
        "media": ws / "media" / "digits" / "test-images" / "9999999.png",
        "embeddings": ws / "embeddings" / "7-7.f32",
        "models": ws / "models" / "deadbeef.pt",
        "temp": ws / "media" / "digits" / "0000001.tmp",
    }
    for path in orphans.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 10)
    secret = ws / "labelstudio" / "old.tmp"  # Label Studio's folder is never touched
    secret.parent.mkdir()
    secret.write_bytes(b"x")

    code, out, _ = run(["doctor", "--json"])
    assert code == 0 and json.loads(out)["findings"] == []  # all just written: younger than --min-age
    code, out, _ = run(["doctor", "--json", "--min-age", "0"])
    found = {f["kind"]: f for f in json.loads(out)["findings"]}
    assert {k: Path(f["path"]) for k, f in found.items()} == {k: p.resolve() for k, p in orphans.items()}
    assert all(p.exists() for p in orphans.values())  # dry run
    code, out, _ = run(["doctor", "--fix", "--min-age", "0"])
    assert code == 0 and "deleted" in out
    assert not any(p.exists() for p in orphans.values())
    assert sorted((ws / "media").rglob("*.png")) == kept and len(kept) == 2007
    assert secret.exists()


def test_doctor_keeps_media_of_a_moved_workspace(tmp_path, monkeypatch):
    """Rows name files under the old path: the copies in the new workspace are not deleted."""
    import shutil

    db = f"sqlite:///{tmp_path / 'shared.db'}"
    monkeypatch.setenv("CURATOR_DB_URL", db)
    monkeypatch.setenv("CURATOR_WORKSPACE", str(tmp_path / "old"))
    assert run(["ingest", SMALL, "-d", "digits"])[0] == 0
    shutil.move(tmp_path / "old", tmp_path / "new")
    monkeypatch.setenv("CURATOR_WORKSPACE", str(tmp_path / "new"))
    code, out, _ = run(["doctor", "--fix", "--json", "--min-age", "0"])
    found = json.loads(out)["findings"]
    assert len(found) == 2007 and {f["action"] for f in found} == {"keep"}
    assert len(list((tmp_path / "new" / "media").rglob("*.png"))) == 2007
    from curator.store.session import dispose_all

    dispose_all()


def modes(root: Path) -> dict[str, set[str]]:
    """Octal modes of the folders and files under ``root`` (itself included)."""
    out = {"dirs": {oct(stat.S_IMODE(root.stat().st_mode))}, "files": set()}
    for p in root.rglob("*"):
        if p.is_symlink():
            continue
        out["dirs" if p.is_dir() else "files"].add(oct(stat.S_IMODE(p.stat().st_mode)))
    return out


def test_workspace_is_private_to_its_user(tmp_path):
    from curator.settings import Settings

    settings = Settings(workspace=tmp_path / "ws")
    done = curator(settings, "ingest", SMALL, "-d", "digits", umask=0o022)
    assert done.returncode == 0, done.stderr
    assert modes(settings.workspace) == {"dirs": {"0o700"}, "files": {"0o600"}}
    assert len(list(settings.workspace.rglob("*.png"))) == 2007

    old = Settings(workspace=tmp_path / "old")  # a workspace made before: open to everyone
    (old.workspace / "media").mkdir(parents=True)
    old.workspace.chmod(0o755)
    assert curator(old, "datasets", umask=0o022).returncode == 0
    assert stat.S_IMODE(old.workspace.stat().st_mode) == 0o700


def test_label_studio_data_folder_is_private(tmp_path, monkeypatch):
    """`start` with a stand-in server (answers /health, writes a database as Label Studio does)."""
    from curator.integrations.labelstudio import server
    from curator.settings import Settings

    venv = tmp_path / "venv"
    exe = venv / "bin" / "label-studio"
    exe.parent.mkdir(parents=True)
    for name in ("label-studio", "python"):
        (exe.parent / name).write_text(FAKE_LABEL_STUDIO.format(python=sys.executable))
        (exe.parent / name).chmod(0o755)
    monkeypatch.setenv("CURATOR_LABELSTUDIO_VENV", str(venv))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(workspace=tmp_path / "ws", labelstudio_url=f"http://127.0.0.1:{port}",
                        labelstudio_token="secret-token-123")
    old = os.umask(0o022)
    try:
        server.start(settings, timeout=60, echo=lambda *a: None, install=False)
    finally:
        os.umask(old)
    try:
        data = server.data_dir(settings)
        assert (data / "label_studio.sqlite3").exists() and (data / "media" / "upload").is_dir()
        assert modes(data) == {"dirs": {"0o700"}, "files": {"0o600"}}
    finally:
        assert server.stop(settings, echo=lambda *a: None)

    (data / "label_studio.sqlite3").chmod(0o644)  # a data folder from before: tightened
    data.chmod(0o755)
    server.private_data_dir(settings)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "label_studio.sqlite3").stat().st_mode) == 0o600
