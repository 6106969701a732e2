"""The App side: install curator's plugin and serve the App on this machine."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from curator.exceptions import FiftyOneError, NotFoundError, ValidationError

from curator._resources import path as _resource_path

#: plugins/fiftyone of a checkout, or its copy inside an installed wheel.
PLUGIN_SOURCE = _resource_path("fiftyone_plugin")
PLUGIN_NAME = "@curator/fiftyone"
INSTALL_NAME = "curator"


def install(plugins_dir: str | os.PathLike | None = None, *, copy: bool = False) -> Path:
    """Link (or copy) ``plugins/fiftyone`` into FiftyOne's plugins folder as ``curator``."""
    if not (PLUGIN_SOURCE / "fiftyone.yml").is_file():
        raise FiftyOneError(
            f"the plugin sources are not at {PLUGIN_SOURCE}; reinstall curator-loop from its wheel "
            "or copy a checkout's plugins/fiftyone folder into FiftyOne's plugins folder by hand"
        )
    if plugins_dir is None:
        from curator.integrations.fiftyone._fo import fiftyone

        plugins_dir = fiftyone().config.plugins_dir
        if not plugins_dir:
            raise ValidationError("FiftyOne has no plugins_dir; set FIFTYONE_PLUGINS_DIR or pass --plugins-dir")
    target = Path(plugins_dir) / INSTALL_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        manifest = target / "fiftyone.yml"
        if not manifest.is_file() or PLUGIN_NAME not in manifest.read_text():
            raise FiftyOneError(f"{target} exists and is not curator's plugin; move it away first")
        shutil.rmtree(target)
    if copy:
        shutil.copytree(PLUGIN_SOURCE, target, ignore=shutil.ignore_patterns("__pycache__", "screenshots"))
    else:
        target.symlink_to(PLUGIN_SOURCE, target_is_directory=True)
    return target


def app_url(address: str, port: int, fo_dataset: str | None = None) -> str:
    from urllib.parse import quote

    url = f"http://{address}:{port}"
    return f"{url}/datasets/{quote(fo_dataset, safe='')}" if fo_dataset else url


def serve_app(
    fo_dataset: str | None = None,
    *,
    dataset: str | None = None,
    port: int = 5151,
    address: str = "127.0.0.1",
    echo: Callable[[str], None] = print,
) -> None:
    """Serve the App in this process until interrupted (Ctrl-C or SIGTERM)."""
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    if fo_dataset is None and dataset is not None:
        from curator.integrations.fiftyone.sync import default_name

        fo_dataset = default_name(dataset)
    if fo_dataset is not None:
        from curator.integrations.fiftyone._fo import load_fo_dataset

        try:
            load_fo_dataset(fo_dataset)
        except NotFoundError as exc:
            hint = f"; sync it first: curator fiftyone sync --dataset {dataset}" if dataset else ""
            raise NotFoundError(f"{exc}{hint}") from None
    from fiftyone.server.main import start_server  # sets FIFTYONE_SERVER before fiftyone loads

    echo(f"FiftyOne App at {app_url(address, port, fo_dataset)} (Ctrl-C to stop)")
    try:
        start_server(port=port, address=address)
    except OSError as exc:
        raise FiftyOneError(f"cannot serve the App on {address}:{port} ({exc}); pick another --port") from None
