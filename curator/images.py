"""Decoded pixels of samples, read from their file URIs in streamed batches.

Samples store a URI (an absolute path, or ``file://`` URL) to the image file
that ingest wrote or found; models need arrays. ``decode`` is the ONE place a
file becomes pixels: EXIF orientation honoured, transparency composited on
white (``BACKGROUND``: what viewers and labeling tools show), converted to the
model's channels and resized to its input size (``frame``: what its
``InputSpec`` declares, else the first image's size and mode). ``iter_batches``
yields uint8 batches, (n, H, W) for grayscale and (n, H, W, C) for colour, one
at a time, so memory is bounded by the batch, not the pool; normalisation
(mean/std) is the model's ``InputSpec.to_tensor``.
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

__all__ = ["path_of", "decode", "load_image", "load_images", "iter_batches", "frame", "max_pixels", "open_image",
           "MAX_PIXELS_ENV", "DEFAULT_MAX_PIXELS", "BACKGROUND", "RESIZE_MODES"]

#: Colour transparent pixels are composited on: white, as image viewers and Label Studio show them.
BACKGROUND = (255, 255, 255)

#: How an image meets a declared (H, W): "stretch" it (aspect not kept, nothing lost), "crop" the
#: centre after scaling the short side (aspect kept, edges lost), or "pad" it with BACKGROUND.
RESIZE_MODES = ("stretch", "crop", "pad")

#: Threads that decode one batch's files (Pillow releases the GIL while decoding and resizing):
#: 1.5-2.8x the sequential rate on a loaded 2-core machine (benchmarks/own_data/decode_speed.py),
#: where a DataLoader with 2 worker processes was 3-4x slower than sequential (process start-up).
DECODE_THREADS = min(4, os.cpu_count() or 1)

_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})

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


def _has_alpha(im) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def _to_pixels(im, mode: str | None, size: tuple[int, int] | None, resize: str):
    """A PIL image upright, without alpha, in ``mode`` ("L"/"RGB"; None: its own) and ``size`` (H, W)."""
    from PIL import Image, ImageOps

    if size is not None and im.format == "JPEG":  # decode at a reduced DCT scale (>= the target): far less memory
        turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
        im.draft("L" if mode == "L" else "RGB", (size[0], size[1]) if turned else (size[1], size[0]))
    gray = im.mode in _GRAY_MODES or (im.mode == "P" and im.palette is not None and im.palette.mode == "L")
    mode = mode or ("L" if gray else "RGB")
    im = ImageOps.exif_transpose(im)  # pixels as the camera meant them: portrait stays portrait
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND + (255,)), rgba)
    if im.mode != mode:
        im = im.convert(mode)
    if size is not None and im.size != (size[1], size[0]):
        target = (size[1], size[0])
        if resize == "crop":
            im = ImageOps.fit(im, target, Image.Resampling.BILINEAR)
        elif resize == "pad":
            im = ImageOps.pad(im, target, Image.Resampling.BILINEAR, color=BACKGROUND if mode == "RGB" else 255)
        else:
            im = im.resize(target, Image.Resampling.BILINEAR)
    return im


def decode(uri: str, mode: str | None = None, size: tuple[int, int] | None = None,
           resize: str = "stretch") -> np.ndarray:
    """One image file as uint8 (H, W) or (H, W, 3): upright, composited, in ``mode`` and ``size``.

    A missing, unreadable or corrupt file is one ValidationError naming the file and the fix.
    """
    from PIL import UnidentifiedImageError

    if resize not in RESIZE_MODES:
        raise ValidationError(f"resize mode {resize!r} is not one of {', '.join(RESIZE_MODES)}")
    path = path_of(uri)
    try:
        with open_image(path) as im:
            return np.asarray(_to_pixels(im, mode, size, resize), dtype=np.uint8)
    except ValidationError:
        raise
    except FileNotFoundError:
        raise ValidationError(f"image file {path} is missing; re-ingest the dataset or restore the file") from None
    except PermissionError:
        raise ValidationError(f"image file {path} cannot be read: permission denied; "
                              "give this user read access to it (chmod u+r)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValidationError(f"image file {path} cannot be decoded ({exc}); replace it or delete it "
                              "and re-ingest the dataset") from None


def load_image(uri: str, mode: str | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """One image as uint8; ``mode`` "L" or "RGB" converts, ``size`` (H, W) resizes (``decode``)."""
    return decode(uri, mode, size)


def frame(uris: Sequence[str], spec=None) -> tuple[str, tuple[int, int], str]:
    """(mode, (H, W), resize mode) every image of a pool is decoded to, so batches stack and agree.

    ``spec`` (a model's ``InputSpec``, or a model carrying one as ``input_spec``) decides what it
    declares: channels 1 -> "L", 3 -> "RGB"; its size. What it leaves open comes from the first
    image (the one rule older pools were decoded by).
    """
    spec = getattr(spec, "input_spec", spec)
    channels, size = getattr(spec, "channels", None), getattr(spec, "size", None)
    resize = getattr(spec, "resize", None) or "stretch"
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None or size is None:
        if len(uris) == 0:
            raise ValidationError("no images to decode (empty list of URIs)")
        first = decode(uris[0], mode)
        mode = mode or ("L" if first.ndim == 2 else "RGB")
        size = size or first.shape[:2]
    return mode, (int(size[0]), int(size[1])), resize


def iter_batches(uris: Sequence[str], batch_size: int = 256, *, mode: str | None = None,
                 size: tuple[int, int] | None = None, spec=None, resize: str | None = None,
                 threads: int | None = None, desc: str = "load images") -> Iterator[np.ndarray]:
    """uint8 batches of ``batch_size`` images, decoded one batch at a time (memory: one batch).

    Every image goes to one frame: ``mode``/``size`` if given, else ``frame(uris, spec)``.
    ``threads`` (default ``DECODE_THREADS``) > 1 decodes a batch's files on that many threads;
    never more than one batch is in flight.
    """
    if len(uris) == 0:
        return
    if mode is None or size is None:
        fmode, fsize, fresize = frame(uris, spec)
        mode, size, resize = mode or fmode, size or fsize, resize or fresize
    resize = resize or getattr(getattr(spec, "input_spec", spec), "resize", None) or "stretch"
    pool = None
    threads = DECODE_THREADS if threads is None else threads
    if threads > 1 and len(uris) > 1:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=int(threads), thread_name_prefix="curator-decode")
    try:
        starts = range(0, len(uris), batch_size)
        for s in progress(starts, total=len(starts), desc=desc):
            chunk = uris[s: s + batch_size]
            one = lambda u: decode(u, mode, size, resize)  # noqa: E731
            yield np.stack(list(pool.map(one, chunk)) if pool is not None else [one(u) for u in chunk])
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def load_images(uris: Sequence[str], batch_size: int = 1024, *, mode: str | None = None,
                size: tuple[int, int] | None = None, spec=None) -> np.ndarray:
    """All images of ``uris`` as one uint8 array (n, H, W) or (n, H, W, C): for sets that must be
    in memory at once (a labeled training set); pools go through ``iter_batches``."""
    if len(uris) == 0:
        raise ValidationError("no images to load (empty list of URIs)")
    return np.concatenate(list(iter_batches(uris, batch_size, mode=mode, size=size, spec=spec)))
