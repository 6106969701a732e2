"""IDX files (the MNIST format), gzip-compressed or not, read in streaming batches.

The whole file is checked (magic number, dimensions, length) before anything
is written, so a truncated or foreign file changes nothing in the database.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from curator.exceptions import ValidationError
from curator.ingest._common import DEFAULT_BATCH, IngestReport, media_folder, write_pngs, write_records

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_CHUNK = 1 << 22


def _open(path: Path) -> BinaryIO:
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def read_header(path: Path, magic: int) -> tuple[int, ...]:
    """Dimensions of an IDX file after checking its magic number and full length."""
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"IDX file {path} does not exist; check the path")
    kind = "images" if magic == IMAGES_MAGIC else "labels"
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
            expected = int(np.prod(dims))
            got = 0
            while chunk := fh.read(_CHUNK):
                got += len(chunk)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ValidationError(f"{path}: cannot be read ({exc}); the file is damaged, download it again") from None
    if got != expected:
        raise ValidationError(
            f"{path}: short read, {got} bytes of data where the header announces {expected} "
            f"({' x '.join(map(str, dims))}); the file is truncated or damaged, download it again"
        )
    return dims


def read_labels(path: Path) -> np.ndarray:
    (n,) = read_header(path, LABELS_MAGIC)
    with _open(Path(path)) as fh:
        fh.read(8)
        return np.frombuffer(fh.read(n), dtype=np.uint8)


def iter_images(path: Path, batch_size: int = DEFAULT_BATCH) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start, uint8 array (b, rows, cols)) without holding more than one batch."""
    n, rows, cols = read_header(path, IMAGES_MAGIC)
    size = rows * cols
    with _open(Path(path)) as fh:
        fh.read(16)
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            buf = fh.read(b * size)
            yield start, np.frombuffer(buf, dtype=np.uint8).reshape(b, rows, cols)


def ingest_idx(
    images: str | Path,
    labels: str | Path | None = None,
    *,
    dataset: str,
    split: str | None = None,
    settings=None,
    batch_size: int = DEFAULT_BATCH,
) -> IngestReport:
    """Ingest an IDX images file (and optional labels file) as PNG samples."""
    from curator.settings import load_settings

    settings = settings or load_settings()
    images = Path(images)
    n, _, _ = read_header(images, IMAGES_MAGIC)
    label_names = None
    if labels is not None:
        arr = read_labels(Path(labels))
        if len(arr) != n:
            raise ValidationError(
                f"{labels} holds {len(arr)} labels but {images} holds {n} images; "
                "pass the labels file that belongs to these images"
            )
        label_names = [str(x) for x in arr.tolist()]
    stem = images.name.split(".")[0]
    folder = media_folder(settings, dataset, stem)

    def batches():
        for start, block in iter_images(images, batch_size):
            lab = None if label_names is None else label_names[start : start + len(block)]
            yield write_pngs(block, start, folder, split, lab)

    return write_records(settings, dataset, batches(), IngestReport(dataset), total=n)
