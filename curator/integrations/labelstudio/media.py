"""How images reach a Label Studio server, including one that cannot read curator's files.

Three modes (``--media`` of ``curator push``, ``labelstudio_media`` in the settings):

``local-files``
    The server reads the workspace's media folder itself (Label Studio's local-file
    storage). Only right when the server runs on this machine with access to the folder.
``upload``
    curator uploads each pushed image through Label Studio's import API; the server keeps
    its own copy and serves it at ``/data/upload/...``. Needs nothing but the API.
``serve``
    curator serves the images itself (``curator labelstudio media``): each task carries a
    URL to that server, signed with an HMAC of the path and an expiry time
    (``labelstudio_media_secret``, ``labelstudio_media_ttl``), so a link works only for the
    file it names and only until it expires. The labelers' browsers fetch it; Label Studio
    stores only the URL. ``labelstudio_media_url`` is where the browsers reach curator.

``auto`` (the default) is ``local-files`` when the server's URL names this machine
(127.0.0.1, localhost, ::1), else ``upload``: curator never assumes a remote server shares
its folder. Small images outside the media folder are embedded as data URIs in every mode
(they need no server at all).
"""

from __future__ import annotations

import hashlib
import hmac
import mimetypes
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, quote, unquote, urlsplit

from curator.exceptions import ValidationError

MODES = ("local-files", "upload", "serve")
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
PREFIX = "/media/"


def choose(settings, given: str | None = None) -> str:
    """The mode to use: ``given`` (the flag), else the setting; ``auto`` by the server's host."""
    mode = (given or settings.labelstudio_media or "auto").strip().lower()
    if mode == "auto":
        host = urlsplit(settings.labelstudio_url).hostname or ""
        return "local-files" if host in LOCAL_HOSTS else "upload"
    if mode not in MODES:
        raise ValidationError(
            f"media mode {mode!r}: use one of auto, {', '.join(MODES)} (--media or CURATOR_LABELSTUDIO_MEDIA)"
        )
    if mode == "serve":
        if not settings.labelstudio_media_url:
            raise ValidationError(
                "--media serve needs the address the labelers' browsers reach curator's media server at: "
                "set CURATOR_LABELSTUDIO_MEDIA_URL (e.g. http://curator-host:8765) and run "
                "`curator labelstudio media` there"
            )
        secret(settings)
    return mode


def secret(settings) -> bytes:
    key = settings.labelstudio_media_secret
    if not key or len(key) < 16:
        raise ValidationError(
            "signed media URLs need a secret of 16 characters or more: set CURATOR_LABELSTUDIO_MEDIA_SECRET "
            "(the same for push and for `curator labelstudio media`)"
        )
    return key.encode()


def _signature(key: bytes, rel: str, expires: int) -> str:
    return hmac.new(key, f"{rel}\n{expires}".encode(), hashlib.sha256).hexdigest()


def _safe_rel(rel: str) -> str | None:
    """``rel`` as a plain relative POSIX path inside the media folder, or None (absolute, ``..``)."""
    path = PurePosixPath(rel)
    if not rel or path.is_absolute() or any(p in ("..", "") for p in path.parts) or "\\" in rel:
        return None
    return path.as_posix()


def signed_url(settings, rel: str, *, now: float | None = None) -> str:
    """URL of media file ``rel`` (relative to the media folder) on curator's media server,
    valid for ``labelstudio_media_ttl`` seconds."""
    rel = _safe_rel(rel)
    if rel is None:
        raise ValueError(f"not a path inside the media folder: {rel!r}")
    expires = int((time.time() if now is None else now) + settings.labelstudio_media_ttl)
    base = settings.labelstudio_media_url.rstrip("/")
    return f"{base}{PREFIX}{quote(rel)}?exp={expires}&sig={_signature(secret(settings), rel, expires)}"


def verify(key: bytes, rel: str, exp: str, sig: str, *, now: float | None = None) -> str | None:
    """Why the request must be refused, or None when the signature holds and has not expired."""
    if _safe_rel(rel) is None:
        return "bad path"
    try:
        expires = int(exp)
    except ValueError:
        return "bad expiry"
    if not hmac.compare_digest(_signature(key, rel, expires), sig):
        return "bad signature"
    if expires < (time.time() if now is None else now):
        return "expired"
    return None


class _Handler(BaseHTTPRequestHandler):
    server_version = "curator-media"
    root: Path
    key: bytes

    def do_HEAD(self):  # noqa: N802 (http.server's naming)
        self._serve(body=False)

    def do_GET(self):  # noqa: N802
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        parts = urlsplit(self.path)
        if not parts.path.startswith(PREFIX):
            return self._fail(404, "not found")
        rel = unquote(parts.path[len(PREFIX):])
        query = parse_qs(parts.query)
        refused = verify(self.key, rel, (query.get("exp") or [""])[0], (query.get("sig") or [""])[0])
        if refused:
            return self._fail(403, refused)
        path = self.root / rel
        try:
            data = path.read_bytes()
        except OSError:
            return self._fail(404, "no such file")
        self.send_response(200)
        self.send_header("Content-Type", mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "private, max-age=3600")
        self.send_header("Access-Control-Allow-Origin", "*")  # the labeling UI is another origin
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _fail(self, code: int, why: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(why)))
        self.end_headers()
        self.wfile.write(why.encode())

    def log_message(self, fmt, *args):
        """Log the path only: the query holds the signature, a bearer credential until it expires."""
        line = fmt % args
        query_at = line.find("?")
        if query_at >= 0:
            end = line.find(" ", query_at)
            line = line[:query_at] + (line[end:] if end >= 0 else "")
        if os.environ.get("CURATOR_MEDIA_LOG", "1") != "0":
            super().log_message("%s", line)


class MediaServer(ThreadingHTTPServer):
    """Serves ``settings.media_dir`` to holders of a signed URL (``signed_url``); nothing else."""

    daemon_threads = True

    def __init__(self, settings, host: str = "0.0.0.0", port: int = 8765):
        handler = type("Handler", (_Handler,), {"root": Path(settings.media_dir).resolve(), "key": secret(settings)})
        super().__init__((host, port), handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="curator-media", daemon=True)
        thread.start()
        return thread
