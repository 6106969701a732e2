"""A version as files: NumPy arrays, a torch file or ``Dataset``, an ImageFolder tree, a CSV or
JSONL manifest, a Hugging Face ``datasets`` dataset, and the atomic writers.

Why its own module: exports read a version once (one short transaction,
``workflow.members``), then decode images and write files with no session
open. Every file curator writes for a version (these and the JSON manifest)
goes through ``_write_atomic``: a temporary file beside the target, renamed
into place, so a failure leaves neither a partial file nor the temporary
one; folders (ImageFolder, Hugging Face) go through ``_write_folder_atomic``
the same way, and never into or over an existing path. torch is imported
only by the torch exports, Hugging Face ``datasets`` only by ``export_hf``.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import os
import shutil
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
        os.chmod(tmp, 0o666 & ~_umask())  # as a plain open() would have made it
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


def _write_folder_atomic(path: Path, fill) -> None:
    """Fill a new folder through ``fill(staging folder)``, then rename it to ``path``: a failure
    (or Ctrl-C) leaves no partial tree. An existing ``path`` is refused before any work."""
    path = _check_new_folder(path)
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    staging, done = None, False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        fill(staging)
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; as a plain mkdir would
        os.rename(staging, path)  # refused if another process made a non-empty path meanwhile
        done = True
    except OSError as exc:
        raise ValidationError(f"output {path} cannot be written ({exc.strerror or exc}); choose another path") from None
    finally:
        if not done:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            for folder in made:  # innermost first
                with contextlib.suppress(OSError):
                    folder.rmdir()


def _check_new_folder(path: str | Path) -> Path:
    """Refuse an output folder that exists or cannot be made, before any work is done."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise ValidationError(f"output {path} already exists; give a new folder (curator never writes into "
                              "or over an existing one), or remove it first")
    _check_out(path)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


# --------------------------------------------------------------------------- files people load


def folder_name(label: str) -> str:
    """A class label as one safe folder name: unchanged when it is one, else percent-encoded
    ('/' and other separators, leading dots, control characters), so no label escapes the tree."""
    from urllib.parse import quote

    name = quote(label, safe=" !#$&'()+,;=@[]^_`{}~-.")
    return "%2E" + name[1:] if name.startswith(".") else name or "%00"


def _source(m: Member) -> Path:
    from curator.images import path_of

    src = path_of(m.uri).absolute()
    if not src.is_file():
        raise ValidationError(f"image file {src} of sample {m.sample_id} is missing; restore it "
                              "(`curator version verify NAME --files` lists every missing one) and export again")
    return src


def export_imagefolder(name: str, out: str | Path, *, copy: bool = False, dataset: str | None = None,
                       settings=None) -> dict[str, Any]:
    """A version as ``out/<class>/<sample id><suffix>``: symbolic links to the stored images,
    or copies with ``copy=True`` (a tree that outlives the workspace). torchvision's
    ``ImageFolder`` and Hugging Face's ``imagefolder`` loader read it as it is."""
    out = _check_new_folder(out)
    with _tx(settings) as s:
        info_, items, classes = members(s, name, dataset)
    folders = {c: folder_name(c) for c in classes}
    if len(set(folders.values())) < len(folders):
        raise ValidationError(f"version {name!r}: two class names map to one folder name; export a manifest "
                              "(--format csv or jsonl) instead")

    def fill(root: Path) -> None:
        for folder in folders.values():
            (root / folder).mkdir()
        for m in items:
            src = _source(m)
            dst = root / folders[m.label] / f"{m.sample_id}{src.suffix.lower()}"
            if copy:
                shutil.copyfile(src, dst)
            else:
                dst.symlink_to(src)

    _write_folder_atomic(out, fill)
    return {"out": str(out), "samples": len(items), "classes": folders, "checksum": info_.checksum}


#: Manifest columns, in order (CSV header; JSONL keys).
TABLE_FIELDS = ("sample_id", "path", "label", "label_index", "sha256", "width", "height", "channels")


def _rows(items: list[Member], classes: list[str]):
    from curator.images import path_of

    index = {c: i for i, c in enumerate(classes)}
    for m in items:
        yield {"sample_id": m.sample_id, "path": str(path_of(m.uri).absolute()), "label": m.label,
               "label_index": index[m.label], "sha256": m.sha256, "width": m.width, "height": m.height,
               "channels": m.channels}


def export_table(name: str, out: str | Path, fmt: str = "csv", *, dataset: str | None = None,
                 settings=None) -> dict[str, Any]:
    """One row per labeled sample (``TABLE_FIELDS``): a CSV file with a header, or JSON Lines.

    ``label_index`` follows the version's class order (the dataset's, as in the other exports).
    """
    if fmt not in ("csv", "jsonl"):
        raise ValidationError(f"format {fmt!r}: a table is csv or jsonl")
    _check_out(Path(out))
    with _tx(settings) as s:
        info_, items, classes = members(s, name, dataset)

    def write(fh) -> None:
        text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
        if fmt == "csv":
            writer = csv.DictWriter(text, fieldnames=TABLE_FIELDS)
            writer.writeheader()
            writer.writerows(_rows(items, classes))
        else:
            for row in _rows(items, classes):
                text.write(json.dumps(row, ensure_ascii=False) + "\n")
        text.flush()
        text.detach()

    _write_atomic(Path(out), write)
    return {"out": str(out), "samples": len(items), "classes": classes, "checksum": info_.checksum}


def _hf_datasets():
    """Hugging Face ``datasets``, imported by name only here (curator has no package of that
    name; a checkout's ``datasets/`` data folder is a namespace package, not the library)."""
    from curator.exceptions import MissingExtraError

    try:
        import datasets as hf
    except ImportError:
        hf = None
    if getattr(hf, "Dataset", None) is None or not hasattr(hf, "Features"):
        raise MissingExtraError("datasets (Hugging Face)", "hf")
    return hf


def export_hf(name: str, out: str | Path, *, dataset: str | None = None, settings=None) -> dict[str, Any]:
    """A version as a Hugging Face dataset saved with ``save_to_disk`` (``load_from_disk(out)``):
    columns image (the encoded file, embedded), label (``ClassLabel`` of the version's classes),
    sample_id, sha256. Written through an on-disk cache, so memory stays one row at a time."""
    out = _check_new_folder(out)
    hf = _hf_datasets()
    with _tx(settings) as s:
        info_, items, classes = members(s, name, dataset)
    features = hf.Features({"image": hf.Image(), "label": hf.ClassLabel(names=classes),
                            "sample_id": hf.Value("int64"), "sha256": hf.Value("string")})
    index = {c: i for i, c in enumerate(classes)}
    rows = [(str(_source(m)), index[m.label], m.sample_id, m.sha256) for m in items]

    def generate(rows):
        for src, label, sid, sha in rows:
            yield {"image": {"bytes": Path(src).read_bytes(), "path": Path(src).name}, "label": label,
                   "sample_id": sid, "sha256": sha}

    def fill(root: Path) -> None:
        bars_on = not hf.are_progress_bars_disabled()  # curator's own output only; restored after
        if bars_on:
            hf.disable_progress_bars()
        try:
            with tempfile.TemporaryDirectory(dir=root.parent, prefix=f".{out.name}.cache.") as cache:
                ds = hf.Dataset.from_generator(generate, features=features, cache_dir=cache,
                                               gen_kwargs={"rows": rows}, keep_in_memory=False)
                ds.info.description = f"curator version {info_.name} (checksum {info_.checksum})"
                ds.save_to_disk(str(root / "data"))
                del ds
        finally:
            if bars_on:
                hf.enable_progress_bars()
        for f in (root / "data").iterdir():  # save_to_disk wants a path of its own: lift it into place
            f.rename(root / f.name)
        (root / "data").rmdir()

    _write_folder_atomic(out, fill)
    return {"out": str(out), "samples": len(items), "classes": classes, "checksum": info_.checksum}
