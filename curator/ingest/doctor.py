"""Find and remove what crashes leave in a workspace: files no row points to.

Kinds of leftovers (``Finding.kind``):

- ``staging``: files of an ingest that died (``curator/ingest/staging.py``);
  a file whose sample row was committed is moved into place, the rest deleted;
- ``media``: files in the media folder that no sample points to;
- ``embeddings`` / ``models``: arrays and weights no embedding set or model
  row names;
- ``temp``: ``*.tmp`` files (half-written files of an interrupted write).

Only staging folders whose ingest is provably dead (its lock is free) are
touched, however young. Other files must also be older than ``min_age``
seconds, so a command running right now (an embedding half written, a model
saved a moment before its row) is never cleaned under its feet. Files are
listed *before* the rows are read: a file published after a commit is then
always matched by its row. A media file whose twin path under another media
folder is a missing sample's URI (the workspace was moved or copied) is
reported but kept.

The Label Studio data folder is never looked at.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from curator.ingest.staging import STAGING, recover
from curator.images import path_of
from curator.settings import Settings, private_umask
from curator.steps import run_step
from curator.store import embeddings as store_emb
from curator.store import models as store_models
from curator.store import samples as store_samples

__all__ = ["Finding", "examine", "DEFAULT_MIN_AGE"]

#: Seconds a file must be left untouched before it counts as a leftover.
DEFAULT_MIN_AGE = 3600
_SKIP_TOP = {"labelstudio"}


@dataclasses.dataclass
class Finding:
    kind: str
    path: str
    action: str  # "delete", "publish" (move into place) or "keep" (reported only)
    size: int
    reason: str = ""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _files(folder: Path, *, skip: set[str] = frozenset()) -> list[Path]:
    out = []
    if not folder.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(folder):
        if Path(dirpath) == folder:
            dirnames[:] = [d for d in dirnames if d not in skip]
        out.extend(Path(dirpath) / f for f in filenames)
    return sorted(out)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _old(path: Path, min_age: float, now: float) -> bool:
    try:
        return now - path.stat().st_mtime >= min_age
    except FileNotFoundError:
        return False


def _sample_uris(settings: Settings) -> list[str]:
    return run_step(settings, store_samples.all_uris)


def _embedding_names(settings: Settings) -> set[str]:
    return run_step(settings, store_emb.all_file_names)


def _model_names(settings: Settings) -> set[str]:
    return {Path(p).name for p in run_step(settings, store_models.paths)}


def examine(settings: Settings, *, fix: bool = False, min_age: float = DEFAULT_MIN_AGE) -> list[Finding]:
    """Every leftover in the workspace of ``settings``; with ``fix`` they are removed too."""
    ws = Path(settings.workspace).resolve()
    media = Path(settings.media_dir).resolve()
    now = time.time()
    found: list[Finding] = []

    with private_umask():
        for item in recover(settings, fix=fix):
            found += [Finding("staging", str(p), "publish", _size(p), "its row was committed")
                      for p in item.publish]
            found += [Finding("staging", str(p), "delete", _size(p), "its ingest died before the commit")
                      for p in item.discard]

    temp = [p for p in _files(ws, skip=_SKIP_TOP) if p.name.endswith(".tmp") and STAGING not in p.parts]
    media_files = [p for p in _files(media, skip={STAGING}) if not p.name.endswith(".tmp")]
    emb_files = [p for p in _files(Path(settings.embeddings_dir).resolve()) if not p.name.endswith(".tmp")]
    model_files = [p for p in _files(ws / "models") if not p.name.endswith(".tmp")]
    # rows are read after the files are listed (see module docstring)
    uris = _sample_uris(settings) if media_files else []
    emb_names = _embedding_names(settings) if emb_files else set()
    model_names = _model_names(settings) if model_files else set()

    found += [Finding("temp", str(p), "delete", _size(p), "an interrupted write")
              for p in temp if _old(p, min_age, now)]
    if media_files:
        stored = {str(path_of(u)) for u in uris}
        moved = {u.rsplit("/media/", 1)[1] for u in stored
                 if "/media/" in u and not u.startswith(str(media) + os.sep) and not Path(u).exists()}
        for p in media_files:
            if str(p) in stored or not _old(p, min_age, now):
                continue
            rel = str(p.relative_to(media))
            if rel in moved:
                found.append(Finding("media", str(p), "keep", _size(p),
                                     "a missing sample points to the same file in another media folder "
                                     "(was the workspace moved?); re-ingest or fix the URIs first"))
            else:
                found.append(Finding("media", str(p), "delete", _size(p), "no sample points to it"))
    found += [Finding("embeddings", str(p), "delete", _size(p), "no embedding set names it")
              for p in emb_files if p.name not in emb_names and _old(p, min_age, now)]
    found += [Finding("models", str(p), "delete", _size(p), "no model row names it")
              for p in model_files if p.name not in model_names and _old(p, min_age, now)]

    if fix:
        for f in found:
            if f.action == "delete" and f.kind != "staging":
                Path(f.path).unlink(missing_ok=True)
        _prune_empty(media)
    return found


def _prune_empty(folder: Path) -> None:
    """Remove folders left empty under ``folder`` (deepest first), keeping ``folder`` itself."""
    if not folder.is_dir():
        return
    for dirpath, _, _ in sorted(os.walk(folder), key=lambda t: -len(Path(t[0]).parts)):
        if Path(dirpath) != folder and STAGING not in Path(dirpath).relative_to(folder).parts:
            try:
                os.rmdir(dirpath)
            except OSError:
                pass
