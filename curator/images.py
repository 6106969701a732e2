"""Decoded pixels of samples, read from their file URIs in batches.

Samples store a URI (an absolute path, or ``file://`` URL) to the image file
that ingest wrote or found; models need arrays. Everything is returned as
uint8, (n, H, W) for grayscale and (n, H, W, C) for colour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import unquote, urlparse

import numpy as np

from curator._progress import progress
from curator.exceptions import ValidationError

__all__ = ["path_of", "load_image", "load_images", "iter_batches"]


def path_of(uri: str) -> Path:
    """The local path of a sample URI (plain path or ``file://`` URL)."""
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path))
    if "://" in uri:
        raise ValidationError(f"image URI {uri!r} is not a local file; only paths and file:// URLs can be read")
    return Path(uri)


def load_image(uri: str, mode: str | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """One image as uint8; ``mode`` "L" or "RGB" converts, ``size`` (H, W) resizes."""
    from PIL import Image, UnidentifiedImageError

    path = path_of(uri)
    try:
        with Image.open(path) as im:
            if mode is None:
                mode = "L" if im.mode in ("1", "L", "I", "I;16", "F") else "RGB"
            im = im.convert(mode)
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise ValidationError(f"image file {path} is missing; re-ingest the dataset or restore the file") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ValidationError(f"image file {path} cannot be decoded ({exc})") from None


def iter_batches(uris: Sequence[str], batch_size: int = 1024, *, mode: str | None = None,
                 size: tuple[int, int] | None = None, desc: str = "load images") -> Iterator[np.ndarray]:
    """Batches of decoded images, all converted to the mode and size of the first image."""
    if len(uris) == 0:
        return
    first = load_image(uris[0], mode, size)
    mode = mode or ("L" if first.ndim == 2 else "RGB")
    size = size or first.shape[:2]
    starts = range(0, len(uris), batch_size)
    for s in progress(starts, total=len(starts), desc=desc):
        chunk = uris[s: s + batch_size]
        yield np.stack([load_image(u, mode, size) for u in chunk])


def load_images(uris: Sequence[str], batch_size: int = 1024, *, mode: str | None = None,
                size: tuple[int, int] | None = None) -> np.ndarray:
    """All images of ``uris`` as one uint8 array (n, H, W) or (n, H, W, C)."""
    if len(uris) == 0:
        raise ValidationError("no images to load (empty list of URIs)")
    return np.concatenate(list(iter_batches(uris, batch_size, mode=mode, size=size)))
