"""The one place fiftyone is imported: offline by default, with an install hint."""

from __future__ import annotations

import os


def fiftyone():
    """``import fiftyone`` with usage tracking off unless the user turned it on."""
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    try:
        import fiftyone as fo
    except ImportError:
        from curator.exceptions import MissingExtraError

        raise MissingExtraError("fiftyone", "fiftyone") from None
    return fo


def brain():
    fiftyone()
    try:
        import fiftyone.brain as fob
    except ImportError:
        from curator.exceptions import MissingExtraError

        raise MissingExtraError("fiftyone-brain", "fiftyone") from None
    return fob


def fo_dataset_names() -> list[str]:
    return sorted(fiftyone().list_datasets())


def load_fo_dataset(name: str):
    """A FiftyOne dataset by name, or NotFoundError listing the known ones."""
    from curator.exceptions import NotFoundError

    fo = fiftyone()
    if not fo.dataset_exists(name):
        known = fo_dataset_names()
        shown = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
        raise NotFoundError(
            f"FiftyOne dataset {name!r} does not exist (known: {shown or 'none'}); "
            "check the name with: fiftyone datasets list"
        )
    return fo.load_dataset(name)
