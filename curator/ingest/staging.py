"""Files that become visible only with the rows that point to them.

An ingest of IDX or NumPy sources writes PNG files. Writing them straight into
the media folder left thousands of orphans when the process was killed (the
rows roll back, the files stay). Instead each ingest writes into its own
staging folder, ``media/.staging/<token>/``, laid out like the media folder,
and moves the files into place (``publish``) only after the transaction that
stores their rows has committed.

A live ingest holds an exclusive ``flock`` on ``media/.staging/<token>.lock``;
the kernel drops it when the process dies, however it dies. ``recover`` (run
at the start of every ingest, and by ``curator doctor --fix``) takes over the
folders whose lock is free: a staged file whose row exists (the process died
between commit and publish) is moved into place, every other one is deleted.
"""

from __future__ import annotations

import dataclasses
import fcntl
import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable

STAGING = ".staging"


def staging_root(media: Path) -> Path:
    return Path(media) / STAGING


class Staging:
    """One ingest's staging folder; use as a context manager around the whole ingest.

    ``put`` writes a staged file for a final path under ``media``; ``publish``
    (call it after the commit) moves the staged files into place. Leaving the
    block without ``publish`` (an error) deletes what was staged.
    """

    def __init__(self, media: Path):
        self.media = Path(media).resolve()
        self.root = staging_root(self.media)
        self.dir: Path | None = None
        self._fd: int | None = None
        self._staged: list[Path] = []
        self._publishing = False

    def __enter__(self) -> "Staging":
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            token = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
            lock = self.root / f"{token}.lock"
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:  # a recover() may have removed the lock file between open and flock
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd, self.dir = fd, self.root / token
        self.dir.mkdir()
        return self

    def staged_path(self, final: Path) -> Path:
        return self.dir / Path(final).resolve().relative_to(self.media)

    def put(self, final: Path, data: bytes) -> None:
        """Stage ``data`` as the future content of ``final`` (a path under the media folder)."""
        path = self.staged_path(final)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
        self._staged.append(path)

    def publish(self) -> int:
        """Move every staged file into place (after the commit); returns how many.

        If this fails midway (disk full ...), the rest stays staged for ``recover``.
        """
        self._publishing = True
        for path in self._staged:
            move_into_place(path, self.media / path.relative_to(self.dir))
        n, self._staged, self._publishing = len(self._staged), [], False
        return n

    def __exit__(self, *exc) -> None:
        try:
            if not self._publishing:  # else committed rows need these files: recover() finishes
                shutil.rmtree(self.dir, ignore_errors=True)
                (self.root / f"{self.dir.name}.lock").unlink(missing_ok=True)
        finally:
            os.close(self._fd)
        with contextlib.suppress(OSError):  # the last ingest out leaves no empty .staging behind
            self.root.rmdir()


def move_into_place(staged: Path, final: Path) -> None:
    """Rename ``staged`` to ``final``, making its folder (again, if a cleaner just removed it)."""
    for attempt in range(3):
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(staged, final)
            return
        except FileNotFoundError:
            if not staged.exists() or attempt == 2:
                raise


@dataclasses.dataclass
class Leftover:
    """A staging folder whose ingest died: files to move into place and files to delete."""

    dir: Path
    publish: list[Path]
    discard: list[Path]


def _try_lock(lock: Path) -> int | None:
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _dead(media: Path) -> Iterable[tuple[Path, Path, int | None]]:
    """(folder, lock file, locked fd) of each staging folder no live ingest holds."""
    root = staging_root(media)
    if not root.is_dir():
        return
    for entry in sorted(root.iterdir()):
        if entry.suffix == ".lock":
            if not entry.with_suffix("").exists():  # an ingest died before making its folder
                fd = _try_lock(entry)
                if fd is not None:
                    yield entry.with_suffix(""), entry, fd
            continue
        lock = root / f"{entry.name}.lock"
        if not lock.exists():
            yield entry, lock, None  # no owner can hold it (the lock comes first)
            continue
        fd = _try_lock(lock)
        if fd is not None:
            yield entry, lock, fd


def recover(settings, *, fix: bool = True) -> list[Leftover]:
    """Finish or undo the staging folders of ingests that died (see module docstring).

    With ``fix=False`` only reports what would be done.
    """
    media = Path(settings.media_dir).resolve()
    out = []
    for folder, lock, fd in _dead(media):
        try:
            files = _files(folder) if folder.is_dir() else []
            finals = [media / p.relative_to(folder) for p in files]
            have = stored_uris(settings, [str(f) for f in finals]) if files else set()
            item = Leftover(folder, [], [])
            for staged, final in zip(files, finals):
                (item.publish if str(final) in have else item.discard).append(staged)
            out.append(item)
            if fix:
                for staged in item.publish:
                    move_into_place(staged, media / staged.relative_to(folder))
                shutil.rmtree(folder, ignore_errors=True)
                lock.unlink(missing_ok=True)
        finally:
            if fd is not None:
                os.close(fd)
    return out


def stored_uris(settings, uris: list[str]) -> set[str]:
    """The URIs among ``uris`` that some sample row holds."""
    from curator.steps import run_step
    from curator.store import samples as store_samples

    return run_step(settings, lambda s: store_samples.stored_uris(s, uris))
