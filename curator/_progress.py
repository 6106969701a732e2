"""One progress helper for long work (rich, on standard error).

Bars go to stderr so ``--json`` output on stdout stays parseable; set
``CURATOR_PROGRESS=0`` to silence them (CI logs, notebooks).
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


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
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=not console.is_terminal,
    ) as bar:
        task = bar.add_task(desc, total=total)
        for item in items:
            yield item
            bar.advance(task, weight(item) if weight else 1)
