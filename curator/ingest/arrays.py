"""NumPy arrays (in memory, ``.npy`` or ``.npz``) ingested as PNG samples.

A damaged file (truncated, garbage, a broken zip or compressed member, pickled
objects) is one ``ValidationError`` naming it, raised before anything is
written; so are a wrong dtype or shape and a label count that differs.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from curator.exceptions import ValidationError
from curator.images import MAX_PIXELS_ENV, max_pixels
from curator.ingest._common import (
    DEFAULT_BATCH,
    IngestReport,
    check_batch_size,
    label_strings,
    media_folder,
    png_records,
    write_records,
)

IMAGE_KEYS = ("images", "x", "X", "arr_0")
LABEL_KEYS = ("labels", "y", "Y", "arr_1")


def load_array_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (memory-mapped for .npy) and labels (from .npz keys) of an array file."""
    if not path.is_file():
        raise ValidationError(f"array file {path} does not exist; check the path")
    if path.suffix not in (".npy", ".npz"):
        raise ValidationError(f"{path}: unsupported suffix {path.suffix!r}; use .npy or .npz")
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
        if not head.startswith((b"\x93NUMPY", b"PK\x03\x04", b"PK\x05\x06")):
            raise damaged(path, "not NumPy data: it starts with neither the .npy nor the zip signature")
        if path.suffix == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False), None
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not a zip archive of arrays")
        with z:
            img = next((k for k in IMAGE_KEYS if k in z.files), None)
            if img is None:
                raise ValidationError(
                    f"{path} has no images array; name it one of {', '.join(IMAGE_KEYS)} "
                    f"(found: {', '.join(z.files) or 'nothing'})"
                )
            lab = next((k for k in LABEL_KEYS if k in z.files and k != img), None)
            return z[img], (z[lab] if lab else None)
    except ValidationError:
        raise
    except PermissionError:
        raise ValidationError(
            f"array file {path} cannot be read: permission denied; give this user read access "
            "(chmod u+r) or run curator as its owner"
        ) from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as exc:
        objects = "pickle" in str(exc) or "Python objects" in str(exc)
        raise damaged(path, "pickled objects are not read" if objects else f"{type(exc).__name__}: {exc}") from None


def damaged(path: Path, reason: str) -> ValidationError:
    how = "numpy.save" if path.suffix == ".npy" else "numpy.savez"
    return ValidationError(
        f"{path} is not a readable NumPy {path.suffix} file ({reason}); it is truncated, damaged "
        f"or not NumPy data: save it again with {how}"
    )


def check_images(images: np.ndarray, name: str = "images") -> np.ndarray:
    """Images must be uint8 (n, h, w) or (n, h, w, c) with c in 1, 3, 4."""
    if images.dtype != np.uint8:
        raise ValidationError(
            f"{name}: dtype {images.dtype}, expected uint8; convert with "
            "(x * 255).clip(0, 255).astype(numpy.uint8) for images in [0, 1]"
        )
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3, 4)):
        raise ValidationError(
            f"{name}: shape {images.shape}, expected (n, height, width) or "
            "(n, height, width, channels) with 1, 3 or 4 channels"
        )
    if len(images) == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise ValidationError(f"{name}: shape {images.shape} holds no pixels; pass at least one image")
    return images


def ingest_arrays(
    images: np.ndarray | str | Path,
    labels: np.ndarray | str | Path | None = None,
    *,
    dataset: str,
    split: str | None = None,
    name: str | None = None,
    settings=None,
    batch_size: int = DEFAULT_BATCH,
    max_image_pixels: int | None = None,
    classes=None,
) -> IngestReport:
    """Ingest uint8 image arrays; ``name`` keys the files (defaults to the file stem).

    Everything is checked before the transaction: batch size, the files,
    dtype and shape, the image size against ``max_image_pixels``, the labels.
    """
    from curator.settings import load_settings

    settings = settings or load_settings()
    check_batch_size(batch_size)
    limit = max_pixels(max_image_pixels)
    file_labels = None
    what, what_labels = "images", "labels"
    if isinstance(images, (str, Path)):
        path = Path(images)
        images, file_labels = load_array_file(path)
        name = name or path.stem
        what = f"images of {path}"
        what_labels = f"labels of {path}"
    if isinstance(labels, (str, Path)):
        what_labels = f"labels in {labels}"
        labels, _ = load_array_file(Path(labels))
    labels = labels if labels is not None else file_labels
    if name is None:
        raise ValidationError("name: required for in-memory arrays; it keys their files so re-ingest adds nothing")
    images = check_images(images if isinstance(images, np.ndarray) else np.asarray(images), what)
    h, w = images.shape[1:3]
    if h * w > limit:
        raise ValidationError(
            f"{what}: {w} x {h} = {h * w:,} pixels each, over the limit of {limit:,}; "
            f"if that is genuine, raise it with --max-pixels N or {MAX_PIXELS_ENV}=N"
        )
    label_names = label_strings(labels, len(images), what_labels)
    folder = media_folder(settings, dataset, name)

    def batches():
        for start in range(0, len(images), batch_size):
            block = np.asarray(images[start : start + batch_size])
            lab = None if label_names is None else label_names[start : start + len(block)]
            yield png_records(block, start, folder, split, lab)

    return write_records(settings, dataset, batches(), IngestReport(dataset), total=len(images), classes=classes)
