"""The harness of the bad-input corpus (issue 13): a command given bad input must be refused.

``refused(sandbox, argv)`` runs ``curator ARGV`` in-process and asserts what the
reliability guarantees say (docs/reliability.md):

- a non-zero exit status and exactly one line on stderr, starting ``error:``
  (an uncaught exception is a traceback: it propagates and fails the test);
- the database unchanged: a digest of every row of every table, before and after;
- no file created, changed or removed anywhere under the sandbox outside the
  workspace (inputs, the sandbox root, the folders a bad name would escape to).

The sandbox is a temporary folder with the workspace at ``ws/`` inside it and
inputs beside it, on SQLite or on a fresh PostgreSQL database (``db_settings``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
from pathlib import Path

import pytest

from curator.settings import Settings


def db_digest(settings: Settings) -> str:
    """sha256 over every row of every table (rows sorted, so physical order does not matter)."""
    from sqlalchemy import MetaData, select

    from curator.store.session import get_engine

    engine = get_engine(settings.database_url)
    meta = MetaData()
    meta.reflect(engine)
    h = hashlib.sha256()
    with engine.connect() as conn:
        for name in sorted(meta.tables):
            rows = sorted(repr(tuple(r)) for r in conn.execute(select(meta.tables[name])))
            h.update(f"{name}:{len(rows)}\n".encode())
            for r in rows:
                h.update(r.encode())
    return h.hexdigest()


def files_outside(root: Path, workspace: Path) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of every file and folder under ``root`` but not under ``workspace``."""
    out = {}
    workspace = workspace.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath).resolve()
        if here == workspace or workspace in here.parents:
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if (here / d).resolve() != workspace]
        for name in dirnames + filenames:
            p = here / name
            st = p.lstat()
            out[str(p)] = (st.st_size if p.is_file() else 0, st.st_mtime_ns if p.is_file() else 0)
    return out


@dataclasses.dataclass
class Sandbox:
    root: Path
    settings: Settings

    @property
    def workspace(self) -> Path:
        return Path(self.settings.workspace)

    def path(self, name: str) -> Path:
        return self.root / name


def run(argv: list[str]) -> tuple[int, str, str]:
    """``curator ARGV`` in this process: (exit status, stdout, stderr)."""
    from curator.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in argv])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def refused(sandbox: Sandbox, argv: list, *, match: str | None = None) -> str:
    """Run ``curator ARGV``; assert it is refused cleanly with nothing changed. Returns the error line."""
    before_db = db_digest(sandbox.settings)
    before_files = files_outside(sandbox.root, sandbox.workspace)
    code, _, err = run(argv)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code != 0, f"curator {argv} exited 0; stderr: {err!r}"
    assert len(lines) == 1 and lines[0].startswith("error:"), f"want one 'error:' line, got {err!r}"
    if match is not None:
        assert match.lower() in lines[0].lower(), f"{lines[0]!r} does not mention {match!r}"
    assert db_digest(sandbox.settings) == before_db, f"curator {argv} changed the database"
    after_files = files_outside(sandbox.root, sandbox.workspace)
    changed = sorted(set(after_files.items()) ^ set(before_files.items()))
    assert not changed, f"curator {argv} wrote outside the workspace: {changed[:5]}"
    return lines[0]


@pytest.fixture
def sandbox(db_settings, tmp_path, monkeypatch) -> Sandbox:
    """A workspace (SQLite or PostgreSQL) with its database created, the CLI pointed at it."""
    from curator.store.session import get_engine

    monkeypatch.setenv("CURATOR_WORKSPACE", str(db_settings.workspace))
    if db_settings.db_url:
        monkeypatch.setenv("CURATOR_DB_URL", db_settings.db_url)
    Path(db_settings.workspace).mkdir(parents=True, exist_ok=True)
    get_engine(db_settings.database_url)
    return Sandbox(root=tmp_path, settings=db_settings)
