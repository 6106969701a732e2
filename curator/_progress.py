"""One progress helper for long work (rich, on standard error).

Bars go to stderr so ``--json`` output on stdout stays parseable; set
``CURATOR_PROGRESS=0`` to silence them (CI logs, notebooks). Where stderr is
not a terminal (a log file, a pipe) a bar would only leave blank lines, so the
work is reported as a line every ``LOG_EVERY_SECONDS`` while it runs (an hour's
verification in a log shows how far it got) and one line when it ends.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")

#: Work shorter than this is not worth a line in a log.
LOG_AFTER_SECONDS = 2.0
#: Where stderr is a log, how often long work says how far it got.
LOG_EVERY_SECONDS = 60.0


def enabled() -> bool:
    return os.environ.get("CURATOR_PROGRESS", "1") not in ("0", "false", "no")


def progress(
    items: Iterable[T],
    total: int | None = None,
    desc: str = "",
    weight: Callable[[T], int] | None = None,
) -> Iterator[T]:
    """Iterate ``items`` with a progress bar; ``weight(item)`` counts a batch as its size."""
    if not enabled():
        yield from items
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(file=sys.stderr)
    if not console.is_terminal:
        yield from _logged(items, desc, weight, total)
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(desc, total=total)
        for item in items:
            yield item
            bar.advance(task, weight(item) if weight else 1)


def _logged(items: Iterable[T], desc: str, weight: Callable[[T], int] | None,
            total: int | None = None) -> Iterator[T]:
    start, done = time.perf_counter(), 0
    said = start
    for item in items:
        yield item
        done += weight(item) if weight else 1
        now = time.perf_counter()
        if desc and now - said >= LOG_EVERY_SECONDS:
            said = now
            of = f" of {total:,}" if total else ""
            print(f"{desc}: {done:,}{of} after {now - start:.0f} s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - start
    if desc and elapsed >= LOG_AFTER_SECONDS:
        print(f"{desc}: {done:,} done in {elapsed:.1f} s", file=sys.stderr, flush=True)
