"""NumPy arrays (in memory, ``.npy`` or ``.npz``) ingested as PNG samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from curator.exceptions import ValidationError
from curator.ingest._common import (
    DEFAULT_BATCH,
    IngestReport,
    label_strings,
    media_folder,
    write_pngs,
    write_records,
)

IMAGE_KEYS = ("images", "x", "X", "arr_0")
LABEL_KEYS = ("labels", "y", "Y", "arr_1")


def load_array_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (memory-mapped for .npy) and labels (from .npz keys) of an array file."""
    if not path.is_file():
        raise ValidationError(f"array file {path} does not exist; check the path")
    try:
        if path.suffix == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False), None
        if path.suffix == ".npz":
            z = np.load(path, allow_pickle=False)
            img = next((k for k in IMAGE_KEYS if k in z.files), None)
            if img is None:
                raise ValidationError(
                    f"{path} has no images array; name it one of {', '.join(IMAGE_KEYS)} "
                    f"(found: {', '.join(z.files) or 'nothing'})"
                )
            lab = next((k for k in LABEL_KEYS if k in z.files and k != img), None)
            return z[img], (z[lab] if lab else None)
    except (ValueError, OSError) as exc:
        raise ValidationError(f"{path} is not a readable NumPy file ({exc}); save it with numpy.save") from None
    raise ValidationError(f"{path}: unsupported suffix {path.suffix!r}; use .npy or .npz")


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
) -> IngestReport:
    """Ingest uint8 image arrays; ``name`` keys the files (defaults to the file stem)."""
    from curator.settings import load_settings

    settings = settings or load_settings()
    file_labels = None
    if isinstance(images, (str, Path)):
        path = Path(images)
        images, file_labels = load_array_file(path)
        name = name or path.stem
    if isinstance(labels, (str, Path)):
        labels, _ = load_array_file(Path(labels))
    labels = labels if labels is not None else file_labels
    if name is None:
        raise ValidationError("name: required for in-memory arrays; it keys their files so re-ingest adds nothing")
    images = check_images(images if isinstance(images, np.ndarray) else np.asarray(images))
    label_names = label_strings(labels, len(images), "labels")
    folder = media_folder(settings, dataset, name)

    def batches():
        for start in range(0, len(images), batch_size):
            block = np.asarray(images[start : start + batch_size])
            lab = None if label_names is None else label_names[start : start + len(block)]
            yield write_pngs(block, start, folder, split, lab)

    return write_records(settings, dataset, batches(), IngestReport(dataset), total=len(images))
