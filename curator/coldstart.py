"""A cold-start embedding: needs no trained model, so a fresh pool can be de-duplicated at once.

Each image is shifted (sub-pixel, bilinear) so that the centre of mass of its
foreground (pixels differing from the median, i.e. the background) sits at the
centre, which undoes small translations; then it becomes a small grayscale
thumbnail (area-averaged, which also blurs away re-encoding noise), minus its
mean (so a brightness change does not move it) and scaled to unit length (so
a contrast change does not either). Cosine similarity of two such vectors is the
correlation of the two thumbnails. Colour is ignored: two images differing
only in hue count as copies. A constant image (no pattern at all) maps to one
fixed vector, so blank images are copies of one another.

``DEFAULT_THRESHOLD`` in ``curator.dedup`` was chosen for this embedding.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from curator.exceptions import ValidationError

#: Thumbnail side: 16 x 16 = 256 dimensions. On 2,000 MNIST digits with 1,800
#: planted copies (centred thumbnails, threshold 0.97), side 12 grouped more
#: distinct digits together (pair precision 0.32, recall 0.98) than 16 (0.52,
#: 0.98); 20 was about the same as 16 (0.58, 0.97), so the smaller one stays.
THUMB_SIDE = 16

#: Name under which the cold-start embedding is recorded as a "model".
MODEL_NAME = "coldstart-thumb16"

_FLAT_EPS = 1e-6


def _to_gray_array(image) -> np.ndarray:
    """A float32 (h, w) grayscale array in [0, 255] from a PIL image, array or path."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        try:
            with Image.open(path) as img:
                return np.asarray(img.convert("L"), dtype=np.float32)
        except FileNotFoundError:
            raise ValidationError(f"image {path} does not exist; re-ingest the dataset or fix the path") from None
        except OSError as exc:
            raise ValidationError(f"image {path} cannot be decoded ({exc}); replace or delete it") from None
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("L"), dtype=np.float32)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValidationError(f"coldstart: an image must be (h, w) or (h, w, channels); got shape {arr.shape}")
    return arr.astype(np.float32)


def thumbnail(gray: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """Area-averaged ``side`` x ``side`` thumbnail of a (h, w) float array."""
    from PIL import Image

    img = Image.fromarray(np.asarray(gray, dtype=np.float32), mode="F")
    return np.asarray(img.resize((side, side), resample=Image.Resampling.BOX), dtype=np.float32)


def centre(gray: np.ndarray) -> np.ndarray:
    """Shift ``gray`` so the centre of mass of its foreground is the image centre.

    MNIST digits are centred this way already, so a shifted copy comes back to
    the original; on photographs it cancels most of a small crop or shift.
    """
    from PIL import Image

    g = np.asarray(gray, dtype=np.float32)
    background = float(np.median(g))
    w = np.abs(g - background)
    total = float(w.sum())
    if total <= 0.0:
        return g
    h, wd = g.shape
    cy = float((w.sum(axis=1) * np.arange(h)).sum() / total)
    cx = float((w.sum(axis=0) * np.arange(wd)).sum() / total)
    dy, dx = (h - 1) / 2 - cy, (wd - 1) / 2 - cx
    if abs(dx) < 1e-3 and abs(dy) < 1e-3:
        return g
    img = Image.fromarray(g, mode="F")
    moved = img.transform((wd, h), Image.Transform.AFFINE, (1, 0, -dx, 0, 1, -dy),
                          resample=Image.Resampling.BILINEAR, fillcolor=background)
    return np.asarray(moved, dtype=np.float32)


def embed_one(image, side: int = THUMB_SIDE) -> np.ndarray:
    """The cold-start vector of one image (unit length, ``side * side`` values)."""
    v = thumbnail(centre(_to_gray_array(image)), side).ravel()
    v = v - v.mean()
    norm = float(np.linalg.norm(v))
    if norm < _FLAT_EPS * max(1.0, float(np.abs(v).max(initial=0.0))) or norm == 0.0:
        out = np.zeros_like(v)
        out[0] = 1.0  # constant image: one fixed direction shared by all blank images
        return out
    return v / norm


def embed_images(images: Iterable | np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """Cold-start embeddings (n, side*side) float32 of images, arrays or image paths.

    A uint8 array (n, h, w) or (n, h, w, c) is taken as a batch of images.
    """
    if isinstance(images, np.ndarray) and images.ndim in (3, 4):
        if images.ndim == 4 and images.shape[3] not in (1, 3, 4):
            raise ValidationError(f"coldstart: images must be (n, h, w) or (n, h, w, c); got {images.shape}")
        items: Sequence = list(images)
    else:
        items = list(images)
    if not items:
        return np.zeros((0, side * side), np.float32)
    return np.stack([embed_one(im, side) for im in items]).astype(np.float32)


def embed_paths(paths: Sequence[str | os.PathLike], side: int = THUMB_SIDE) -> np.ndarray:
    """Cold-start embeddings of image files, with a progress bar for long lists."""
    from curator._progress import progress

    out = np.empty((len(paths), side * side), np.float32)
    for i, path in enumerate(progress(paths, total=len(paths), desc="cold-start embedding")):
        out[i] = embed_one(path, side)
    return out
