"""Engine, schema and the one transaction helper.

The caller owns the transaction (one per step): functions that read and write
take a ``Session`` and never commit. ``transaction()`` commits on success and
rolls back on any exception, so a failed step leaves the database as it was.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from curator.exceptions import StoreError, ValidationError
from curator.settings import Settings, load_settings, mask_url

from curator._resources import path as _resource_path

#: The Alembic environment: db/ of a checkout, or its copy inside an installed wheel.
MIGRATIONS_DIR = _resource_path("db")
#: How long a SQLite writer waits for another one before "database is locked" (a ``StoreError``).
BUSY_TIMEOUT_S = 30


def _sqlite_pragmas(dbapi_conn, _record):
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA recursive_triggers=ON")  # REPLACE fires delete triggers (label versions)
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
    cur.close()


_ENGINES: dict[str, Engine] = {}


def get_engine(url: str) -> Engine:
    """An engine for ``url`` with the schema migrated to the latest revision.

    SQLite files get WAL mode and enforced foreign keys; an unreachable server
    raises ``StoreError`` naming the URL (password masked) and the fix.
    """
    if url in _ENGINES:
        return _ENGINES[url]
    try:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, ImportError) as exc:
        raise ValidationError(
            f"database URL {mask_url(url)} cannot be used ({exc}); set CURATOR_DB_URL to "
            "sqlite:///path/to/file.db or postgresql+psycopg://user:password@host/db "
            "(PostgreSQL needs: pip install 'curator-loop[postgres]')"
        ) from None
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise StoreError(
            f"database {mask_url(url)} does not answer ({reason}); start the server or fix "
            "CURATOR_DB_URL"
        ) from None
    upgrade(engine)
    _ENGINES[url] = engine
    return engine


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply Alembic migrations from ``db/`` up to ``revision``."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with _migration_lock(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # held until this transaction ends
            conn.execute(text("SELECT pg_advisory_xact_lock(7079745861)"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Two commands started together on a new SQLite file would both create the schema
    (the loser failed with "table alembic_version already exists"): the first to hold this
    file lock migrates, the other then finds the schema at head. PostgreSQL uses an
    advisory lock inside the migration's transaction instead."""
    path = engine.url.database if engine.dialect.name == "sqlite" else None
    if not path or path == ":memory:":
        yield
        return
    import fcntl

    with open(f"{path}.migrate.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def table_names(engine: Engine) -> list[str]:
    return sorted(inspect(engine).get_table_names())


_SESSIONMAKERS: dict[str, sessionmaker[Session]] = {}


def _sessionmaker(url: str) -> sessionmaker[Session]:
    if url not in _SESSIONMAKERS:
        _SESSIONMAKERS[url] = sessionmaker(get_engine(url), expire_on_commit=False)
    return _SESSIONMAKERS[url]


@contextlib.contextmanager
def transaction(settings: Settings | str | None = None) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any exception."""
    if settings is None:
        settings = load_settings()
    url = settings if isinstance(settings, str) else settings.database_url
    try:
        with _sessionmaker(url).begin() as session:
            yield session
    except OperationalError as exc:
        if not _busy(exc):
            raise
        raise StoreError(
            f"database {mask_url(url)} is locked by another curator process (waited {BUSY_TIMEOUT_S} s); "
            "nothing was written by this step: run it again when the other one finishes, or use PostgreSQL "
            "(CURATOR_DB_URL) for several users at once"
        ) from None


def _busy(exc: OperationalError) -> bool:
    """SQLite's answer when another connection held the write lock past the busy timeout."""
    text = str(exc.orig or exc).lower()
    return "database is locked" in text or "database is busy" in text or "database table is locked" in text


def dispose_all() -> None:
    """Close pooled connections and forget engines (tests drop their databases)."""
    for engine in _ENGINES.values():
        engine.dispose()
    _ENGINES.clear()
    _SESSIONMAKERS.clear()
