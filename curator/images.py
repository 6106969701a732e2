"""Decoded pixels of samples, read from their file URIs in batches.

Samples store a URI (an absolute path, or ``file://`` URL) to the image file
that ingest wrote or found; models need arrays. Everything is returned as
uint8, (n, H, W) for grayscale and (n, H, W, C) for colour.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import unquote, urlparse

import numpy as np

from curator._progress import progress
from curator.exceptions import ValidationError

__all__ = ["path_of", "load_image", "load_images", "iter_batches", "max_pixels", "open_image",
           "MAX_PIXELS_ENV", "DEFAULT_MAX_PIXELS"]

#: Largest image (width x height) curator decodes: PIL's own default, about 0.25 GB of RGB.
#: A header can announce far more than the file holds (a "decompression bomb"); decoding
#: it would take that much memory, so bigger images are refused before any pixel is read.
DEFAULT_MAX_PIXELS = 89_478_485
MAX_PIXELS_ENV = "CURATOR_MAX_PIXELS"


def max_pixels(value: int | None = None) -> int:
    """The pixel limit: ``value`` if given, else $CURATOR_MAX_PIXELS, else the default."""
    source = "--max-pixels"
    if value is None:
        raw = os.environ.get(MAX_PIXELS_ENV)
        if not raw:
            return DEFAULT_MAX_PIXELS
        source = MAX_PIXELS_ENV
        try:
            value = int(raw.replace("_", "").replace(",", ""))
        except ValueError:
            raise ValidationError(f"{MAX_PIXELS_ENV}={raw!r} is not a whole number; set it to a pixel "
                                  f"count such as {DEFAULT_MAX_PIXELS}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"{source} {value!r}: the pixel limit must be a whole number of 1 or more "
                              f"(default {DEFAULT_MAX_PIXELS:,})")
    return value


def too_large(name, width: int, height: int, limit: int) -> ValidationError:
    return ValidationError(
        f"image {name} announces {width} x {height} = {width * height:,} pixels, over the limit of "
        f"{limit:,} (a guard against decompression bombs); if it is genuine, raise the limit with "
        f"--max-pixels N or {MAX_PIXELS_ENV}=N, or pass --skip-bad to skip such files"
    )


@contextlib.contextmanager
def open_image(source, name=None, limit: int | None = None):
    """``PIL.Image.open`` with curator's pixel limit checked on the header, before decoding.

    PIL's own guard (a warning, then an error at twice its limit, which cannot
    say how to raise it) is off while the header is read and replaced by one
    refusal at ``limit``; decoding happens only under that limit.
    """
    from PIL import Image

    limit = max_pixels(limit)
    name = name if name is not None else source
    saved = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            Image.MAX_IMAGE_PIXELS = None  # the header is checked below, against curator's limit
            img = Image.open(source)
            with img:
                width, height = img.size
                if width * height > limit:
                    raise too_large(name, width, height, limit)
                # decoding (frames, tiles) checked by PIL again: never below curator's limit
                Image.MAX_IMAGE_PIXELS = None if saved is None else max(saved, limit)
                yield img
        except Image.DecompressionBombError as exc:
            raise ValidationError(f"image {name}: {exc} Raise the limit with --max-pixels N or "
                                  f"{MAX_PIXELS_ENV}=N, or pass --skip-bad to skip such files") from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved


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
        with open_image(path) as im:
            if mode is None:
                mode = "L" if im.mode in ("1", "L", "I", "I;16", "F") else "RGB"
            im = im.convert(mode)
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except ValidationError:
        raise
    except FileNotFoundError:
        raise ValidationError(f"image file {path} is missing; re-ingest the dataset or restore the file") from None
    except PermissionError:
        raise ValidationError(f"image file {path} cannot be read: permission denied; "
                              "give this user read access to it (chmod u+r)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
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
