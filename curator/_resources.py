"""Data folders curator reads at run time: the Alembic migrations, the demo sample, the App plugin.

Why one module: the checkout's top-level folders (``db/``, ``datasets/mnist1989``,
``plugins/fiftyone``) are the one source of truth, and an installed wheel has no
checkout. The wheel build (``setup.py``) copies each folder named in ``BUNDLED`` into
``curator/_data/<name>``; at run time ``path(name)`` reads that copy through
``importlib.resources`` and falls back to the checkout's folder (a clone, an editable
install or ``PYTHONPATH``). Nothing here imports more than the standard library, so
``setup.py`` can load it at build time.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.resources
from pathlib import Path

#: name inside ``curator/_data`` -> folder of the checkout it is copied from.
BUNDLED = {
    "db": "db",
    "mnist1989": "datasets/mnist1989",
    "fiftyone_plugin": "plugins/fiftyone",
}
#: Never copied into the wheel (byte code; the plugin's screenshots are documentation).
IGNORE = ("__pycache__", "*.pyc", "screenshots")
DATA = "_data"

_KEEP = contextlib.ExitStack()  # real paths stay valid for the life of the process
atexit.register(_KEEP.close)
_PATHS: dict[str, Path] = {}


def checkout_root() -> Path:
    """The folder above the ``curator`` package (the repository root in a checkout)."""
    return Path(__file__).resolve().parents[1]


def path(name: str) -> Path:
    """A real folder holding resource ``name`` (Alembic's ``script_location`` needs a path).

    The copy inside the installed package first (``importlib.resources`` with ``as_file``),
    then the checkout's folder; neither is a one-line error naming both places and the fix.
    """
    if name in _PATHS:
        return _PATHS[name]
    if name not in BUNDLED:
        raise KeyError(f"unknown resource {name!r}; one of {', '.join(BUNDLED)}")
    bundled = importlib.resources.files("curator").joinpath(DATA, name)
    if bundled.is_dir():
        found = _KEEP.enter_context(importlib.resources.as_file(bundled))
    else:
        found = checkout_root() / BUNDLED[name]
        if not found.is_dir():
            from curator.exceptions import NotFoundError

            raise NotFoundError(
                f"curator's {BUNDLED[name]} folder is missing: neither in the installed package "
                f"(curator/{DATA}/{name}) nor in a checkout ({found}); reinstall the "
                "curator-loop wheel (pip install --force-reinstall curator_loop-*.whl) or run from a checkout"
            )
    _PATHS[name] = Path(found)
    return _PATHS[name]
