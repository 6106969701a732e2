"""Planted copies of real images, of the kinds real pools hold.

Used by ``threshold.py`` (which chose ``curator.dedup.DEFAULT_THRESHOLD``) and
by ``tests/test_dedup.py``. Every copy is made with an explicit generator.
"""

from __future__ import annotations

import io

import numpy as np

#: name -> what it does (parameters drawn per copy)
KINDS = {
    "jpeg90": "JPEG re-encoding at quality 90",
    "jpeg75": "JPEG re-encoding at quality 75",
    "brightness": "brightness x U(0.85, 1.15)",
    "contrast": "contrast x U(0.85, 1.15)",
    "shift1": "1-pixel shift in a random direction (edge repeated)",
    "rotate": "rotation by U(-5, 5) degrees",
    "scale": "zoom by U(0.95, 1.05) about the centre",
    "noise": "Gaussian pixel noise, sigma 4 (of 255)",
    "combo": "JPEG 90 + brightness + 1-pixel shift",
}


def _pil(img: np.ndarray):
    from PIL import Image

    return Image.fromarray(img)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    _pil(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


def _shift(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift by one pixel, repeating the edge (as a crop offset does; black for MNIST)."""
    dy, dx = [(0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1)][rng.integers(8)]
    pad = [(1, 1), (1, 1)] + [(0, 0)] * (img.ndim - 2)
    big = np.pad(img, pad, mode="edge")
    h, w = img.shape[:2]
    return np.ascontiguousarray(big[1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w])


def make_copy(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A near copy of a uint8 image (h, w) or (h, w, 3)."""
    from PIL import Image, ImageEnhance

    if kind == "jpeg90":
        return _jpeg(img, 90)
    if kind == "jpeg75":
        return _jpeg(img, 75)
    if kind == "brightness":
        return np.asarray(ImageEnhance.Brightness(_pil(img)).enhance(rng.uniform(0.85, 1.15)))
    if kind == "contrast":
        return np.asarray(ImageEnhance.Contrast(_pil(img)).enhance(rng.uniform(0.85, 1.15)))
    if kind == "shift1":
        return _shift(img, rng)
    if kind == "rotate":
        return np.asarray(_pil(img).rotate(rng.uniform(-5, 5), resample=Image.Resampling.BILINEAR))
    if kind == "scale":
        h, w = img.shape[:2]
        z = rng.uniform(0.95, 1.05)
        big = _pil(img).resize((max(1, round(w * z)), max(1, round(h * z))), Image.Resampling.BILINEAR)
        out = Image.new(big.mode, (w, h))
        out.paste(big, ((w - big.width) // 2, (h - big.height) // 2))
        return np.asarray(out)
    if kind == "noise":
        return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    if kind == "combo":
        b = np.asarray(ImageEnhance.Brightness(_pil(_jpeg(img, 90))).enhance(rng.uniform(0.9, 1.1)))
        return _shift(b, rng)
    raise ValueError(f"unknown copy kind {kind!r}; known: {', '.join(KINDS)}")


def read_idx_images(path, count: int, offset: int = 0) -> np.ndarray:
    """``count`` images from ``offset`` of an IDX images file (uint8 (n, h, w))."""
    from curator.ingest.idx import iter_images

    out = []
    need_end = offset + count
    for start, batch in iter_images(path, batch_size=4096):
        lo, hi = max(offset, start), min(need_end, start + len(batch))
        if lo < hi:
            out.append(batch[lo - start : hi - start])
        if start + len(batch) >= need_end:
            break
    return np.concatenate(out)


def synthetic_images(count: int, rng: np.random.Generator, side: int = 48) -> np.ndarray:
    """Colour images not drawn from MNIST: random shapes over random gradients."""
    from PIL import Image, ImageDraw

    out = np.empty((count, side, side, 3), np.uint8)
    yy, xx = np.mgrid[0:side, 0:side] / side
    for i in range(count):
        a, b, c = rng.uniform(0, 255, 3), rng.uniform(-120, 120, 3), rng.uniform(-120, 120, 3)
        bg = np.clip(a + b * yy[..., None] + c * xx[..., None], 0, 255).astype(np.uint8)
        img = Image.fromarray(bg)
        draw = ImageDraw.Draw(img)
        for _ in range(rng.integers(2, 6)):
            x0, y0 = rng.uniform(0, side * 0.8, 2)
            x1, y1 = x0 + rng.uniform(6, side * 0.6), y0 + rng.uniform(6, side * 0.6)
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            shape = rng.integers(3)
            if shape == 0:
                draw.ellipse([x0, y0, x1, y1], fill=fill)
            elif shape == 1:
                draw.rectangle([x0, y0, x1, y1], fill=fill)
            else:
                draw.line([x0, y0, x1, y1], fill=fill, width=int(rng.integers(1, 5)))
        out[i] = np.asarray(img)
    return out


def plant(images: np.ndarray, copies: int, kinds, rng: np.random.Generator):
    """Originals followed by ``copies`` planted copies (one kind each, cycled).

    Returns (all images as a list, source position of each row: itself for
    originals, its original for copies, kind of each copy row or "").
    """
    n = len(images)
    src = rng.choice(n, copies, replace=copies > n)
    kinds = list(kinds)
    rows = list(images)
    origin = list(range(n))
    kind_of = [""] * n
    for c, s in enumerate(src.tolist()):
        kind = kinds[c % len(kinds)]
        rows.append(make_copy(images[s], kind, rng))
        origin.append(s)
        kind_of.append(kind)
    return rows, np.asarray(origin), np.asarray(kind_of)


def pair_scores(groups, origin: np.ndarray) -> dict:
    """Pair precision and recall of predicted groups against planted truth.

    True pairs: two rows with the same origin. Predicted pairs: two rows in one group.
    """
    from collections import Counter

    truth = sum(c * (c - 1) // 2 for c in Counter(origin.tolist()).values())
    predicted = hit = 0
    for grp in groups:
        predicted += len(grp) * (len(grp) - 1) // 2
        hit += sum(c * (c - 1) // 2 for c in Counter(origin[grp].tolist()).values())
    return {
        "true_pairs": truth,
        "predicted_pairs": predicted,
        "precision": hit / predicted if predicted else 1.0,
        "recall": hit / truth if truth else 1.0,
    }
