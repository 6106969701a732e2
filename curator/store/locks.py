"""Named locks held by the database, that die with their holder.

A push to Label Studio must hold its project from "what is on the server"
to "links recorded" (several transactions and HTTP calls), so a row lock of
one transaction is not enough, and a lock that outlives a ``kill -9`` would
block the project for good.

- PostgreSQL: ``pg_try_advisory_xact_lock`` on a connection of its own whose
  transaction stays open while the lock is held; the server drops the lock
  when the transaction ends or the connection does (a killed holder).
- SQLite (no advisory locks): a row of ``curator_locks`` naming its holder
  (host, pid and the process's start time). A row whose holder process is
  gone (on this host: no such pid, a zombie, or another process that reused
  the pid) is taken over; SQLite's file is local, so its holders are too.

``hold`` waits (polling) up to ``wait`` seconds, then raises ``StoreError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import time
from typing import Callable, Iterator

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from curator.exceptions import StoreError

POLL_S = 0.2


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None where unknown."""
    try:
        raw = open(f"/proc/{pid}/stat", "rb").read().decode("ascii", "replace")
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def holder_id() -> str:
    """host:pid:start of this process, unique even when pids are reused."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid()) or '-'}"


def _alive(holder: str) -> bool:
    """Whether ``holder`` (a ``holder_id``) still runs; holders on other hosts count as alive."""
    host, _, rest = holder.partition(":")
    pid_s, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_s.isdigit():
        return True
    return pid_alive(int(pid_s), start)


def pid_alive(pid: int, start: str | None = None) -> bool:
    """Whether process ``pid`` runs (a zombie, killed but not yet reaped, does not); with
    ``start`` (its start time in clock ticks), only if it is that same process, not a reused pid."""
    if os.path.isdir("/proc"):
        try:
            raw = open(f"/proc/{pid}/stat", "rb").read().decode("ascii", "replace")
        except OSError:
            return False
        fields = raw.rsplit(")", 1)[-1].split()
        if fields and fields[0] in ("Z", "X"):  # killed, not yet reaped by its parent
            return False
        return start in (None, "-", "") or len(fields) <= 19 or fields[19] == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pg_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"curator-lock:{name}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def hold(settings, name: str, *, wait: float = 600.0, on_wait: Callable[[str], None] | None = None,
         what: str | None = None) -> Iterator[None]:
    """Hold the lock ``name`` for the ``with`` block; wait up to ``wait`` s for another holder."""
    from curator.store.session import get_engine

    url = settings if isinstance(settings, str) else settings.database_url
    engine = get_engine(url)
    what = what or f"lock {name!r}"
    deadline = time.monotonic() + wait
    told = False

    def waiting(other: str | None) -> None:
        nonlocal told
        if time.monotonic() >= deadline:
            raise StoreError(
                f"{what} is held by another curator process{f' ({other})' if other else ''} for more than "
                f"{wait:.0f} s; wait for it to finish and run this again"
            )
        if not told and on_wait is not None:
            on_wait(f"waiting for another curator process{f' ({other})' if other else ''} holding {what}")
            told = True
        time.sleep(POLL_S)

    if engine.dialect.name == "postgresql":
        conn = engine.connect()
        try:
            key = _pg_key(name)
            while not conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}).scalar():
                conn.rollback()
                waiting(None)
            yield
        finally:
            try:
                conn.rollback()  # ends the transaction: the lock goes with it
            finally:
                conn.close()
        return

    me = holder_id()
    _sqlite_acquire(engine, name, me, waiting)
    try:
        yield
    finally:
        _sqlite_release(engine, name, me)


def _sqlite_acquire(engine, name: str, me: str, waiting) -> None:
    """Insert the lock row, or take over one whose holder is gone. Every statement that may
    write is the first of its transaction, so SQLite's busy timeout applies (no upgrade of a read)."""
    from curator.store.schema import CuratorLock, utcnow
    from curator.store.session import _busy

    while True:
        try:
            try:
                with engine.begin() as conn:
                    conn.execute(insert(CuratorLock).values(name=name, holder=me, acquired_at=utcnow()))
                return
            except IntegrityError:
                pass
            with engine.connect() as conn:
                other = conn.execute(select(CuratorLock.holder).where(CuratorLock.name == name)).scalar()
            if other is None:
                continue  # released meanwhile
            if other == me or not _alive(other):  # ours (a release that failed) or its holder is gone
                with engine.begin() as conn:
                    taken = conn.execute(
                        update(CuratorLock).where(CuratorLock.name == name, CuratorLock.holder == other)
                        .values(holder=me, acquired_at=utcnow())
                    ).rowcount
                if taken:
                    return
                continue
        except OperationalError as exc:
            if not _busy(exc):
                raise
            other = None
        waiting(other)


def _sqlite_release(engine, name: str, me: str) -> None:
    """Delete our row; if the database stays locked the row stays too, and the next taker
    sees its holder is gone (or is us) and takes it over."""
    from curator.store.schema import CuratorLock
    from curator.store.session import _busy

    try:
        with engine.begin() as conn:
            conn.execute(delete(CuratorLock).where(CuratorLock.name == name, CuratorLock.holder == me))
    except OperationalError as exc:
        if not _busy(exc):
            raise
