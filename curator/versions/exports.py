"""A version as files: NumPy arrays, a torch file or ``Dataset``, and the one atomic file writer.

Why its own module: exports read a version once (one short transaction,
``workflow.members``), then decode images and write files with no session
open. Every file curator writes for a version (these and the JSON manifest)
goes through ``_write_atomic``: a temporary file beside the target, renamed
into place, so a failure leaves neither a partial file nor the temporary
one. torch is imported only by the torch exports.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from curator.exceptions import ValidationError
from curator.versions.workflow import Member, _tx, members

_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def _pixels(m: Member) -> np.ndarray:
    """A member's image as uint8 (h, w) or (h, w, c), decoded by ``curator.images``."""
    from curator.images import load_image

    return load_image(m.uri, _MODES[m.channels])


def _check_out(path: Path) -> None:
    """Refuse an output path that cannot be a file, before any work is done."""
    if path.is_dir():
        raise ValidationError(f"output {path} is a folder; give the path of a file (in it or elsewhere)")
    parent = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ValidationError(f"output {path}: {parent} is a file, not a folder; choose another path")
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise ValidationError(f"output {path}: folder {parent} is not writable (permission denied); choose another path")


def _write_atomic(path: Path, write) -> None:
    """Write through ``write(binary file)`` to a temporary file beside ``path``, then rename it
    into place: a failure leaves neither a partial file nor the temporary one (nor folders made for it)."""
    _check_out(path)
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    tmp, done = None, False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # as a plain open() would have made it
        os.replace(tmp, path)
        done = True
    except OSError as exc:
        raise ValidationError(f"output {path} cannot be written ({exc.strerror or exc}); choose another path") from None
    finally:
        if not done:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            for folder in made:  # innermost first
                with contextlib.suppress(OSError):
                    folder.rmdir()



def _class_index(items: list[Member], classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.fromiter((index[m.label] for m in items), dtype=np.int64, count=len(items))


def export_numpy(name: str, path: str | Path | None = None, *, dataset: str | None = None,
                 settings=None) -> dict[str, Any]:
    """Images (uint8 (n, h, w) or (n, h, w, c)), integer labels, classes and sample ids.

    With ``path``, also saved as a ``.npz`` (keys images, labels, classes,
    sample_ids, sha256, checksum) that ``curator ingest`` can read back.
    """
    if path is not None:
        _check_out(Path(path))
    with _tx(settings) as s:
        info_, items, classes = members(s, name, dataset)
    shapes = Counter((m.height, m.width, m.channels) for m in items)
    if len(shapes) > 1:
        raise ValidationError(
            f"version {name!r} mixes image sizes {dict(shapes.most_common(3))}; NumPy export needs one "
            "size: export a manifest (--format manifest) or a torch Dataset with a resizing transform"
        )
    (h, w, c), = shapes
    from curator.images import load_images

    images = load_images([m.uri for m in items], mode=_MODES[c]) if items else np.zeros((0, h, w), np.uint8)
    out = {
        "images": images,
        "labels": _class_index(items, classes),
        "classes": np.array(classes),
        "sample_ids": np.array([m.sample_id for m in items], dtype=np.int64),
        "sha256": np.array([m.sha256 for m in items]),
        "checksum": np.array(info_.checksum),
    }
    if path is not None:
        _write_atomic(Path(path), lambda fh: np.savez(fh, **out))
    return out


@functools.cache
def _torch_dataset_class():
    import torch
    from torch.utils.data import Dataset

    class VersionDataset(Dataset):
        """Map-style dataset over a version: (float tensor (c, h, w) in [0, 1], class index).

        Images are decoded on access, so it costs nothing until iterated.
        """

        def __init__(self, info_, items, classes, transform=None):
            self.version = info_.name
            self.checksum = info_.checksum
            self.classes = classes
            self.items = items
            self.targets = _class_index(items, classes)
            self.transform = transform

        def __len__(self):
            return len(self.items)

        def __getitem__(self, i):
            m = self.items[i]
            x = torch.from_numpy(np.array(_pixels(m))).float().div_(255)
            x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1).contiguous()
            if self.transform is not None:
                x = self.transform(x)
            return x, int(self.targets[i])

    return VersionDataset


def torch_dataset(name: str, *, dataset: str | None = None, transform=None, settings=None):
    """A PyTorch ``Dataset`` of a version (torch is imported only here)."""
    with _tx(settings) as s:
        info_, items, classes = members(s, name, dataset)
    return _torch_dataset_class()(info_, items, classes, transform)


def export_torch(name: str, path: str | Path, *, dataset: str | None = None, settings=None) -> dict[str, Any]:
    """Save a version as a ``torch.save`` file: uint8 images, int64 labels, classes, checksum."""
    import torch

    _check_out(Path(path))
    arrays = export_numpy(name, None, dataset=dataset, settings=settings)
    doc = {
        "images": torch.from_numpy(arrays["images"]),
        "labels": torch.from_numpy(arrays["labels"]),
        "classes": arrays["classes"].tolist(),
        "sample_ids": torch.from_numpy(arrays["sample_ids"]),
        "checksum": str(arrays["checksum"]),
        "version": name,
    }
    _write_atomic(Path(path), lambda fh: torch.save(doc, fh))
    return doc
