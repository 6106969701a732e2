"""The one step runner: read (one short transaction) -> compute (no session) -> write (one short transaction).

Every workflow step of the loop and the CLI goes through ``run_step``, so the
transactions of a step are opened here and nowhere else: ``read(session)``
returns plain data (the store's dataclasses and arrays), ``compute(data)``
works on that data alone (it may run on another process or machine: an
executor), and ``write(session, result)`` records the result. Nothing is
held open while computing, and a step that fails in ``compute`` or ``write``
leaves the database as it was (the write transaction rolls back).

``read`` and ``write`` are short functions of a session that call the store
(``curator.store.*``); ``run_step`` is also the way to run just a read
(``run_step(settings, read)``) or just a write (``write=...`` alone).
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from sqlalchemy.orm import Session

from curator.store.session import transaction

__all__ = ["run_step", "read", "write"]

T = TypeVar("T")
R = TypeVar("R")


def run_step(settings, read: Callable[[Session], T] | None = None, compute: Callable[[T], R] | None = None,
             write: Callable[[Session, R], Any] | None = None):
    """Run a step: ``read`` in one transaction, ``compute`` on its result with no session, ``write``
    the computed result in another transaction. Returns what ``write`` returns, else the computed
    result, else what was read. A missing part is skipped (``compute`` then passes data through).
    """
    data = None
    if read is not None:
        with transaction(settings) as s:
            data = read(s)
    result = compute(data) if compute is not None else data
    if write is None:
        return result
    with transaction(settings) as s:
        return write(s, result)


def read(settings, fn: Callable[[Session], T]) -> T:
    """A step that only reads: ``fn(session)`` in one transaction."""
    return run_step(settings, fn)


def write(settings, fn: Callable[[Session], T]) -> T:
    """A step that only writes (or reads and writes under one lock): ``fn(session)`` in one transaction."""
    return run_step(settings, write=lambda s, _: fn(s))
