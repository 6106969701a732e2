"""A cold-start embedding: needs no trained model, so a fresh pool can be de-duplicated at once.

Each image is shifted (sub-pixel, bilinear) so that the centre of mass of its
foreground (pixels differing from the median, i.e. the background) sits at the
centre, which undoes small translations; then its luma becomes a small
thumbnail (area-averaged, which also blurs away re-encoding noise), minus its
mean (so a brightness change does not move it) and scaled to unit length (so
a contrast change does not either). A constant image maps to one fixed luma
vector.

Colour: a luma-only vector is colour-blind (a red and a blue car of one shape
would merge), so the same shift is applied to the two chroma planes (Cb, Cr of
ITU-R 601, on [-1, 1]), each area-averaged to an 8 x 8 thumbnail and appended
with weight ``CHROMA_WEIGHT`` / 8, NOT mean-subtracted or normalised: the mean
colour is what tells red from blue, and a stronger colour difference should move
the vector further. The whole vector is then scaled to unit length. Cosine
similarity is (luma correlation + w^2 chroma dot) / norms: a grayscale image
(or a gray picture stored as RGB) has zero chroma, so its vector is exactly the
colour-blind one and MNIST figures are unchanged.

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

#: Chroma thumbnail side: Cb and Cr at 8 x 8 = 128 more dimensions. Colour is coarse in a
#: picture (and JPEG halves its resolution), so a smaller grid than the luma's suffices.
CHROMA_SIDE = 8

#: Weight of the chroma part against the (unit) luma part: the best pair F1 at the default threshold
#: 0.99 on the procedural RGB set (seed 0, 2,000 files; ``benchmarks/own_data/dedup_colour.py``).
#: At 1 no recoloured twin is merged (9 % colour-blind) and precision is 1.00 (0.80 colour-blind);
#: 2 and 4 lose colour-shifted copies (0.92 found at 1, 0.60 at 4). Checked on seed 1 and on the
#: photos shipped with scikit-image/-learn (docs/dedup.md).
CHROMA_WEIGHT = 1.0

#: Name under which the cold-start embedding is recorded as a "model"; VERSION changes whenever
#: its numbers do, so vectors stored by an older curator are never mixed with new ones.
MODEL_NAME = "coldstart-thumb16"
VERSION = "thumb16-chroma8"


def dim(side: int = THUMB_SIDE) -> int:
    """Length of a cold-start vector."""
    return side * side + 2 * CHROMA_SIDE * CHROMA_SIDE

_FLAT_EPS = 1e-6


def _to_array(image) -> np.ndarray:
    """A float32 (h, w) grayscale or (h, w, 3) RGB array in [0, 255] from a PIL image, array or path.

    Paths go through ``curator.images.decode`` (EXIF orientation, transparency on white);
    arrays with an alpha channel are taken as already composited and the alpha dropped.
    """
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        from curator.images import decode

        return decode(os.fspath(image)).astype(np.float32)
    if isinstance(image, Image.Image):
        image = image.convert("L" if image.mode in ("1", "L", "I", "F") else "RGB")
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[..., :3]
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or 0 in arr.shape:
        raise ValidationError(f"coldstart: an image must be (h, w) or (h, w, channels); got shape {arr.shape}")
    return arr.astype(np.float32)


def _luma_chroma(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(luma (h, w), chroma (h, w, 2) Cb/Cr on [-1, 1], or None for grayscale) of a float array."""
    if arr.ndim == 2:
        return arr, None
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = (b - y) / (1.772 * 127.5)
    cr = (r - y) / (1.402 * 127.5)
    if not (np.abs(cb).max(initial=0) > 1e-3 or np.abs(cr).max(initial=0) > 1e-3):
        return y, None  # a gray picture stored as RGB: the same vector as its grayscale file
    return y, np.stack([cb, cr], axis=-1).astype(np.float32)


def thumbnail(gray: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """Area-averaged ``side`` x ``side`` thumbnail of a (h, w) float array."""
    from PIL import Image

    img = Image.fromarray(np.asarray(gray, dtype=np.float32), mode="F")
    return np.asarray(img.resize((side, side), resample=Image.Resampling.BOX), dtype=np.float32)


def _shift_of(gray: np.ndarray) -> tuple[float, float, float]:
    """(dy, dx, background) that moves the centre of mass of ``gray``'s foreground to the centre."""
    g = np.asarray(gray, dtype=np.float32)
    background = float(np.median(g))
    w = np.abs(g - background)
    total = float(w.sum())
    if total <= 0.0:
        return 0.0, 0.0, background
    h, wd = g.shape
    cy = float((w.sum(axis=1) * np.arange(h)).sum() / total)
    cx = float((w.sum(axis=0) * np.arange(wd)).sum() / total)
    return (h - 1) / 2 - cy, (wd - 1) / 2 - cx, background


def _shifted(plane: np.ndarray, dy: float, dx: float, fill: float) -> np.ndarray:
    from PIL import Image

    if abs(dx) < 1e-3 and abs(dy) < 1e-3:
        return np.asarray(plane, dtype=np.float32)
    h, wd = plane.shape
    img = Image.fromarray(np.asarray(plane, dtype=np.float32), mode="F")
    moved = img.transform((wd, h), Image.Transform.AFFINE, (1, 0, -dx, 0, 1, -dy),
                          resample=Image.Resampling.BILINEAR, fillcolor=fill)
    return np.asarray(moved, dtype=np.float32)


def centre(gray: np.ndarray) -> np.ndarray:
    """Shift ``gray`` so the centre of mass of its foreground is the image centre.

    MNIST digits are centred this way already, so a shifted copy comes back to
    the original; on photographs it cancels most of a small crop or shift.
    """
    dy, dx, background = _shift_of(gray)
    return _shifted(gray, dy, dx, background)


def embed_one(image, side: int = THUMB_SIDE) -> np.ndarray:
    """The cold-start vector of one image: unit length, ``side * side`` luma values then
    ``2 * CHROMA_SIDE ** 2`` chroma values (all zero for a grayscale image)."""
    luma, chroma = _luma_chroma(_to_array(image))
    dy, dx, background = _shift_of(luma)
    v = thumbnail(_shifted(luma, dy, dx, background), side).ravel()
    v = v - v.mean()
    norm = float(np.linalg.norm(v))
    if norm < _FLAT_EPS * max(1.0, float(np.abs(v).max(initial=0.0))) or norm == 0.0:
        v = np.zeros_like(v)
        v[0] = 1.0  # constant image: one fixed direction shared by all blank images of one colour
    else:
        v = v / norm
    c = np.zeros(2 * CHROMA_SIDE * CHROMA_SIDE, np.float32)
    if chroma is not None:  # each plane shifted with the luma, its fill the plane's own median
        planes = []
        for k in range(2):
            plane = chroma[..., k]
            planes.append(thumbnail(_shifted(plane, dy, dx, float(np.median(plane))), CHROMA_SIDE).ravel())
        c = np.concatenate(planes) * (CHROMA_WEIGHT / CHROMA_SIDE)
    out = np.concatenate([v, c])
    return out / float(np.linalg.norm(out))


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
        return np.zeros((0, dim(side)), np.float32)
    return np.stack([embed_one(im, side) for im in items]).astype(np.float32)


def embed_paths(paths: Sequence[str | os.PathLike], side: int = THUMB_SIDE) -> np.ndarray:
    """Cold-start embeddings of image files, with a progress bar for long lists."""
    from curator._progress import progress

    out = np.empty((len(paths), dim(side)), np.float32)
    for i, path in enumerate(progress(paths, total=len(paths), desc="cold-start embedding")):
        out[i] = embed_one(path, side)
    return out
