"""curator: choose what to label next, without copies, and keep every labeled set.

The public surface is small and stable; heavy dependencies (torch, faiss,
sqlalchemy, fiftyone, label_studio_sdk) load only where they are used, so
``import curator`` and the CLI answer at once.
"""

from __future__ import annotations

import importlib

from curator.exceptions import *  # noqa: F401,F403
from curator.exceptions import __all__ as _exc_all

__version__ = "0.1.0"

#: name -> "module:attribute", imported on first access.
_LAZY = {
    "Pool": "curator.pool:Pool",
    "policies": "curator.policies:",
    "find_duplicates": "curator.dedup:find_duplicates",
    "load_settings": "curator.settings:load_settings",
    "ingest_folder": "curator.ingest:ingest_folder",
    "ingest_idx": "curator.ingest:ingest_idx",
    "ingest_arrays": "curator.ingest:ingest_arrays",
}

__all__ = [*_exc_all, "__version__", *_LAZY]


def __getattr__(name: str):
    try:
        target = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'curator' has no attribute {name!r}") from None
    module, _, attr = target.partition(":")
    value = importlib.import_module(module)
    if attr:
        value = getattr(value, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
