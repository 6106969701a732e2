"""IDX files (the MNIST format), gzip-compressed or not, read in streaming batches.

The whole file is checked (magic number, dimensions, length, a readable gzip
stream) before anything is written, so a truncated, garbled or foreign file
changes nothing in the database: every way it can be bad is one
``ValidationError`` naming the file.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from curator.exceptions import ValidationError
from curator.images import max_pixels
from curator.ingest._common import (
    DEFAULT_BATCH,
    IngestReport,
    check_batch_size,
    media_folder,
    png_records,
    write_records,
)

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_CHUNK = 1 << 22
#: What a damaged gzip stream or file raises while being read.
_DAMAGED = (EOFError, gzip.BadGzipFile, zlib.error)


def _open(path: Path) -> BinaryIO:
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def _kind(magic: int) -> str:
    return "images" if magic == IMAGES_MAGIC else "labels"


def _check_dims(path: Path, dims: tuple[int, ...], magic: int) -> None:
    kind = _kind(magic)
    if dims[0] <= 0:
        raise ValidationError(
            f"{path}: the header announces {dims[0]} {kind}; an IDX file must hold at least one, "
            "so there is nothing to ingest; pass a file with data"
        )
    if magic == IMAGES_MAGIC and (dims[1] <= 0 or dims[2] <= 0):
        raise ValidationError(
            f"{path}: the header announces images of {dims[1]} x {dims[2]} pixels; rows and columns "
            "must be 1 or more, the file is damaged or not an IDX images file"
        )


def read_header(path: Path, magic: int) -> tuple[int, ...]:
    """Dimensions of an IDX file after checking its magic number, dimensions and full length."""
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"IDX file {path} does not exist; check the path")
    kind = _kind(magic)
    try:
        with _open(path) as fh:
            head = fh.read(4)
            if len(head) < 4 or struct.unpack(">i", head)[0] != magic:
                found = struct.unpack(">i", head)[0] if len(head) == 4 else None
                raise ValidationError(
                    f"{path} is not an IDX {kind} file: magic number {found}, expected {magic}; "
                    f"pass the {kind} file (e.g. *-{'images-idx3' if kind == 'images' else 'labels-idx1'}-ubyte.gz)"
                )
            ndim = 3 if magic == IMAGES_MAGIC else 1
            raw = fh.read(4 * ndim)
            if len(raw) < 4 * ndim:
                raise ValidationError(f"{path}: header is truncated; the file is damaged, download it again")
            dims = struct.unpack(f">{ndim}i", raw)
            _check_dims(path, dims, magic)
            expected = math.prod(dims)
            got = 0
            while chunk := fh.read(_CHUNK):
                got += len(chunk)
                if got > expected:
                    break
    except PermissionError:
        raise ValidationError(
            f"IDX file {path} cannot be read: permission denied; give this user read access "
            "(chmod u+r) or run curator as its owner"
        ) from None
    except (OSError, *_DAMAGED) as exc:
        raise ValidationError(
            f"{path}: cannot be read ({type(exc).__name__}: {exc}); the file is damaged, download it again"
        ) from None
    shape = " x ".join(map(str, dims))
    if got < expected:
        raise ValidationError(
            f"{path}: short read, {got} bytes of data where the header announces {expected} "
            f"({shape}); the file is truncated or damaged, download it again"
        )
    if got > expected:
        raise ValidationError(
            f"{path}: holds more data than the header announces ({shape}, {expected} bytes); "
            "the header or the file is damaged, download it again"
        )
    return dims


def read_labels(path: Path) -> np.ndarray:
    (n,) = read_header(path, LABELS_MAGIC)
    with _open(Path(path)) as fh:
        fh.read(8)
        return np.frombuffer(fh.read(n), dtype=np.uint8)


def iter_images(path: Path, batch_size: int = DEFAULT_BATCH) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start, uint8 array (b, rows, cols)) without holding more than one batch."""
    check_batch_size(batch_size)
    n, rows, cols = read_header(path, IMAGES_MAGIC)
    size = rows * cols
    with _open(Path(path)) as fh:
        fh.read(16)
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            buf = fh.read(b * size)
            if len(buf) != b * size:
                raise ValidationError(f"{path} changed while it was read; run the ingest again")
            yield start, np.frombuffer(buf, dtype=np.uint8).reshape(b, rows, cols)


def ingest_idx(
    images: str | Path,
    labels: str | Path | None = None,
    *,
    dataset: str,
    split: str | None = None,
    settings=None,
    batch_size: int = DEFAULT_BATCH,
    max_image_pixels: int | None = None,
    classes=None,
) -> IngestReport:
    """Ingest an IDX images file (and optional labels file) as PNG samples.

    Everything is checked first (batch size, both headers, lengths, label
    count, image size against ``max_image_pixels``); then one transaction.
    """
    from curator.images import MAX_PIXELS_ENV
    from curator.settings import load_settings

    settings = settings or load_settings()
    check_batch_size(batch_size)
    limit = max_pixels(max_image_pixels)
    images = Path(images)
    n, rows, cols = read_header(images, IMAGES_MAGIC)
    if rows * cols > limit:
        raise ValidationError(
            f"{images}: the header announces images of {rows} x {cols} = {rows * cols:,} pixels, over the "
            f"limit of {limit:,}; if that is genuine, raise it with --max-pixels N or {MAX_PIXELS_ENV}=N"
        )
    label_names = None
    if labels is not None:
        arr = read_labels(Path(labels))
        if len(arr) != n:
            raise ValidationError(
                f"{labels} holds {len(arr)} labels but {images} holds {n} images; "
                "pass the labels file that belongs to these images"
            )
        label_names = [str(x) for x in arr.tolist()]
    folder = media_folder(settings, dataset, images.name.split(".")[0])

    def batches():
        for start, block in iter_images(images, batch_size):
            lab = None if label_names is None else label_names[start : start + len(block)]
            yield png_records(block, start, folder, split, lab)

    return write_records(settings, dataset, batches(), IngestReport(dataset), total=n, classes=classes)
