"""One progress helper for long work (rich, on standard error).

Bars go to stderr so ``--json`` output on stdout stays parseable; set
``CURATOR_PROGRESS=0`` to silence them (CI logs, notebooks). Where stderr is
not a terminal (a log file, a pipe) a bar would only leave blank lines, so the
work that took a while is reported as one line when it ends instead.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")

#: Work shorter than this is not worth a line in a log.
LOG_AFTER_SECONDS = 2.0


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
        yield from _logged(items, desc, weight)
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


def _logged(items: Iterable[T], desc: str, weight: Callable[[T], int] | None) -> Iterator[T]:
    start, done = time.perf_counter(), 0
    for item in items:
        yield item
        done += weight(item) if weight else 1
    elapsed = time.perf_counter() - start
    if desc and elapsed >= LOG_AFTER_SECONDS:
        print(f"{desc}: {done:,} done in {elapsed:.1f} s", file=sys.stderr, flush=True)
