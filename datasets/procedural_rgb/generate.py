"""A procedural RGB classification set with known near copies, deterministic by seed.

No RGB photo data set exists on the machines curator is tested on and none can be downloaded, so this
script draws one: eight classes of shapes and textures (circle, square, triangle, star, ring, cross,
stripes, checker) at random colours, positions, scales and rotations over gradient, noise or wave
backgrounds, written as files of MIXED sizes (96-320 px a side, not square) and formats (RGB JPEG,
RGB PNG, RGBA PNG, grayscale JPEG/PNG, JPEG with an EXIF orientation tag: pixels stored turned,
upright once the tag is honoured). Besides the originals it writes

* planted **copies** of originals (crop, colour shift, JPEG re-encode, resize, small rotation,
  noise, EXIF-turned, combined), which a de-duplicator should group with their original;
* **look-alikes**: the same class and colour on the same background colours, drawn at another place,
  size and angle: distinct samples that must NOT be grouped;
* **recoloured** twins: the same drawing with the shape's hue turned by 120-240 degrees (a red and a
  blue car): distinct, must NOT be grouped.

The truth goes to ``manifest.jsonl`` (one JSON object per file: id, file, class, role, of, kind,
format, mode, width, height, exif_orientation). Files lie in class folders (``OUT/<class>/``), so
``curator ingest folder OUT`` takes the class as ground truth.

    python datasets/procedural_rgb/generate.py --out DIR --n 2000 --seed 0 --copies 0.1

``datasets/`` is not a Python package: tests load this file by path (``importlib``) and call
``generate(out, n=..., seed=...)``. Same arguments, same files, byte for byte.
"""

from __future__ import annotations

import argparse
import colorsys
import io
import json
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("circle", "square", "triangle", "star", "ring", "cross", "stripes", "checker")
COPY_KINDS = ("crop", "colour", "jpeg", "resize", "rotate", "noise", "exif", "combo")
SIZE_RANGE = (96, 320)
EXIF_ORIENTATION = 0x0112
#: Pixels stored turned by this transpose, tag value that turns them upright (PIL's exif_transpose).
_EXIF_TURNS = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}


# -- drawing ------------------------------------------------------------------------------------

def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32) * 255


def _mask(p: dict, W: int, H: int, ss: int = 2) -> np.ndarray:
    """Coverage in [0, 1] of the shape (anti-aliased by ``ss`` x ``ss`` supersampling), computed
    only in the shape's bounding box (every class lies within 1.25 radii of its centre)."""
    side = min(W, H)
    r = p["r"] * side
    reach = 1.25 * r
    x0, x1 = max(0, int(p["cx"] * W - reach)), min(W, int(math.ceil(p["cx"] * W + reach)))
    y0, y1 = max(0, int(p["cy"] * H - reach)), min(H, int(math.ceil(p["cy"] * H + reach)))
    out = np.zeros((H, W), np.float32)
    if x1 <= x0 or y1 <= y0:
        return out
    ys, xs = np.mgrid[y0 * ss:y1 * ss, x0 * ss:x1 * ss].astype(np.float32)
    r *= ss
    x, y = xs + 0.5 - p["cx"] * W * ss, ys + 0.5 - p["cy"] * H * ss
    a = math.radians(p["angle"])
    u = (x * math.cos(a) + y * math.sin(a)) / r
    v = (-x * math.sin(a) + y * math.cos(a)) / r
    rho = np.hypot(u, v)
    cls = p["cls"]
    if cls == "circle":
        m = rho <= 1
    elif cls == "square":
        m = np.maximum(abs(u), abs(v)) <= 0.8
    elif cls == "triangle":
        m = np.ones_like(u, bool)
        for k in range(3):
            t = math.radians(90 + 120 * k)
            m &= u * math.cos(t) + v * math.sin(t) <= 0.5
    elif cls == "star":
        theta = np.arctan2(v, u)
        m = rho <= 0.42 + 0.58 * ((np.cos(5 * theta) + 1) / 2) ** 3
    elif cls == "ring":
        m = (rho <= 1) & (rho >= 0.62)
    elif cls == "cross":
        m = ((abs(u) <= 0.28) & (abs(v) <= 1)) | ((abs(v) <= 0.28) & (abs(u) <= 1))
    elif cls == "stripes":
        m = (rho <= 1) & (np.sin(u * math.pi * 2.5) > 0)
    elif cls == "checker":
        m = (np.maximum(abs(u), abs(v)) <= 0.85) & ((np.floor(u * 2.5) + np.floor(v * 2.5)) % 2 == 0)
    else:
        raise ValueError(f"unknown class {cls!r}")
    out[y0:y1, x0:x1] = m.reshape(y1 - y0, ss, x1 - x0, ss).mean(axis=(1, 3), dtype=np.float32)
    return out


def _background(p: dict, W: int, H: int) -> np.ndarray:
    b = p["bg"]
    c0, c1 = np.array(b["c0"], np.float32), np.array(b["c1"], np.float32)
    ys, xs = np.ogrid[0:H, 0:W]
    ys, xs = ys.astype(np.float32), xs.astype(np.float32)
    if b["kind"] == "gradient":
        a = math.radians(b["dir"])
        t = (xs / W - 0.5) * math.cos(a) + (ys / H - 0.5) * math.sin(a)
        t = np.clip(t + 0.5, 0, 1)
    elif b["kind"] == "waves":
        a = math.radians(b["dir"])
        t = 0.5 + 0.5 * np.sin((xs * math.cos(a) + ys * math.sin(a)) / min(W, H) * 2 * math.pi * b["freq"])
    else:  # noise: smooth random field from a coarse grid, upsampled
        rng = np.random.default_rng(b["noise_seed"])
        coarse = Image.fromarray((rng.random((6, 6)) * 255).astype(np.uint8))
        t = np.asarray(coarse.resize((W, H), Image.Resampling.BICUBIC), np.float32) / 255
    return c0 * (1 - t[..., None]) + c1 * t[..., None]


def render(p: dict) -> Image.Image:
    """The RGB picture of parameters ``p`` (see ``_random_params``), at its own size."""
    W, H = p["size"]
    alpha = _mask(p, W, H)[..., None]
    img = _background(p, W, H) * (1 - alpha) + _hsv(p["hue"], p["sat"], p["val"]) * alpha
    if p.get("grain"):
        img = img + 3 * np.random.default_rng(p["grain"]).standard_normal(img.shape, dtype=np.float32)
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), "RGB")


def _random_params(rng: np.random.Generator, cls: str) -> dict:
    W, H = (int(v) for v in rng.integers(SIZE_RANGE[0], SIZE_RANGE[1] + 1, size=2))
    c0 = _hsv(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.25, 0.95))
    c1 = _hsv(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.25, 0.95))
    bg = {"kind": str(rng.choice(["gradient", "noise", "waves"])), "c0": c0.round(1).tolist(),
          "c1": c1.round(1).tolist(), "dir": float(rng.uniform(0, 360)), "freq": float(rng.uniform(1, 4)),
          "noise_seed": int(rng.integers(2 ** 31))}
    return {"cls": cls, "size": [W, H], "cx": float(rng.uniform(0.3, 0.7)), "cy": float(rng.uniform(0.3, 0.7)),
            "r": float(rng.uniform(0.18, 0.32)), "angle": float(rng.uniform(0, 360)), "hue": float(rng.random()),
            "sat": float(rng.uniform(0.65, 1.0)), "val": float(rng.uniform(0.6, 1.0)), "bg": bg,
            "grain": int(rng.integers(1, 2 ** 31))}


def _lookalike(rng: np.random.Generator, p: dict) -> dict:
    """Same class, colour and background colours; another place, size, angle and grain."""
    q = json.loads(json.dumps(p))
    sign = lambda: float(rng.choice([-1, 1]))  # noqa: E731
    q["cx"] = float(np.clip(p["cx"] + sign() * rng.uniform(0.12, 0.2), 0.25, 0.75))
    q["cy"] = float(np.clip(p["cy"] + sign() * rng.uniform(0.12, 0.2), 0.25, 0.75))
    q["r"] = float(p["r"] * rng.choice([0.7, 1.35]))
    q["angle"] = float(p["angle"] + sign() * rng.uniform(20, 40))
    q["bg"]["dir"] = float(p["bg"]["dir"] + sign() * rng.uniform(30, 90))
    q["bg"]["noise_seed"] = int(rng.integers(2 ** 31))
    q["grain"] = int(rng.integers(1, 2 ** 31))
    return q


def _recolour(rng: np.random.Generator, p: dict) -> dict:
    q = json.loads(json.dumps(p))
    q["hue"] = float((p["hue"] + rng.uniform(1 / 3, 2 / 3)) % 1.0)
    return q


# -- planted copies -----------------------------------------------------------------------------

def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    return Image.open(buf).convert(img.mode)


def _colour_shift(img: Image.Image, rng) -> Image.Image:
    from PIL import ImageEnhance

    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.88, 1.12))
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.85, 1.15))
    x = np.asarray(img, np.float32) * rng.uniform(0.94, 1.06, size=3)  # a slight white-balance cast
    return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8), "RGB")


def _crop(img: Image.Image, rng) -> Image.Image:
    W, H = img.size
    fw, fh = rng.uniform(0.86, 0.95, size=2)
    w, h = int(W * fw), int(H * fh)
    x0, y0 = int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1))
    return img.crop((x0, y0, x0 + w, y0 + h))


def plant(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """A copy of ``img`` of ``kind`` (one of COPY_KINDS; "exif" is made at save time)."""
    if kind == "crop":
        return _crop(img, rng)
    if kind == "colour":
        return _colour_shift(img, rng)
    if kind == "jpeg":
        return _jpeg(img, rng.integers(25, 60))
    if kind == "resize":
        f = float(rng.choice([rng.uniform(0.5, 0.8), rng.uniform(1.2, 1.5)]))
        return img.resize((max(8, round(img.width * f)), max(8, round(img.height * f))), Image.Resampling.BICUBIC)
    if kind == "rotate":
        fill = tuple(int(c) for c in np.asarray(img).reshape(-1, 3).mean(0))
        return img.rotate(float(rng.choice([-1, 1]) * rng.uniform(2, 6)), Image.Resampling.BICUBIC, fillcolor=fill)
    if kind == "noise":
        x = np.asarray(img, np.float32) + rng.normal(0, rng.uniform(5, 10), (img.height, img.width, 3))
        return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8), "RGB")
    if kind == "exif":
        return img.copy()
    if kind == "combo":
        return _jpeg(_colour_shift(_crop(img, rng), rng), rng.integers(40, 75))
    raise ValueError(f"unknown copy kind {kind!r}; one of {COPY_KINDS}")


# -- files --------------------------------------------------------------------------------------

def _save(img: Image.Image, path_stem: Path, fmt: str, *, exif_orientation: int | None = None) -> Path:
    """Write ``img`` as ``fmt`` (jpeg, png, png-rgba, gray-jpeg, gray-png); with ``exif_orientation``
    the pixels are stored turned and the tag says how to turn them upright."""
    if fmt.startswith("gray"):
        img = img.convert("L")
    elif fmt == "png-rgba":
        img = img.convert("RGBA")  # opaque alpha: curator composites it away
    path = Path(path_stem)
    ext = path.suffix
    kwargs = {}
    if exif_orientation:
        img = img.transpose(_EXIF_TURNS[exif_orientation])
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    tmp = path.with_name(path.name + ".part")
    if ext == ".jpg":
        img.save(tmp, "JPEG", quality=92, **kwargs)
    else:
        img.save(tmp, "PNG", compress_level=1, **kwargs)  # fast; files a little larger
    os.replace(tmp, path)  # whole or absent: a stopped run leaves no half-written file
    return path


def _format(rng) -> str:
    return str(rng.choice(["jpeg", "png", "png-rgba", "gray-jpeg", "gray-png", "exif-jpeg"],
                          p=[0.58, 0.18, 0.08, 0.04, 0.04, 0.08]))


def _draw(job: tuple) -> None:
    """Render one file (a worker's share of ``generate``): the picture of ``p``, planted with the
    caller's random state when ``kind`` is a copy kind, saved through a temporary name so a stopped
    run never leaves a half-written file (a rerun skips the files that exist)."""
    p, kind, state, fmt, orient, path = job
    path = Path(path)
    if path.exists():
        return
    img = render(p)
    if kind is not None:
        g = np.random.Generator(np.random.PCG64())
        g.bit_generator.state = state
        img = plant(img, kind, g)
    _save(img, path, fmt, exif_orientation=orient)


def _run(jobs, workers: int) -> None:
    """Draw ``jobs`` in order; with ``workers`` > 1 in that many processes, a chunk at a time
    (the pending jobs stay bounded at any n)."""
    if workers <= 1:
        for job in jobs:
            _draw(job)
        return
    import multiprocessing as mp
    import sys
    import types

    if __name__ not in sys.modules:  # loaded by path (datasets/ is no package): let pickle find _draw
        mod = types.ModuleType(__name__)
        mod.__dict__.update(globals())
        sys.modules[__name__] = mod
    with mp.get_context("fork").Pool(workers) as pool:  # forked children see that module
        chunk = []
        for job in jobs:
            chunk.append(job)
            if len(chunk) == 256:
                pool.map(_draw, chunk, chunksize=8)
                chunk = []
        pool.map(_draw, chunk, chunksize=8)


def generate(out, n: int = 2000, seed: int = 0, copies: float = 0.1, lookalikes: float = 0.05,
             recolours: float = 0.05, workers: int = 1) -> list[dict]:
    """Write ``n`` images under ``out`` (class folders) and ``out/manifest.jsonl``; return the manifest.

    ``copies``, ``lookalikes`` and ``recolours`` are shares of ``n``; the rest are originals. Copies,
    look-alikes and recoloured twins are made of colour originals (a grayscale original has no hue).

    Every random draw is made here, in one sequence, whatever ``workers`` is: a planted copy's draws
    are made on a blank stand-in of the same size (they depend on the size only) and the worker that
    draws the real copy replays them from the saved generator state. So the files are the same, byte
    for byte, with 1 or N workers; rendering and encoding (the cost) run in the workers.
    """
    for name, share in (("copies", copies), ("lookalikes", lookalikes), ("recolours", recolours)):
        if not 0 <= share < 1:
            raise ValueError(f"{name}={share}: a share of n in [0, 1)")
    n_copy, n_look, n_rec = round(n * copies), round(n * lookalikes), round(n * recolours)
    n_orig = n - n_copy - n_look - n_rec
    if n_orig < 1 or n_copy + n_look + n_rec > 0 and n_orig < 2:
        raise ValueError(f"n={n} leaves {n_orig} originals; raise n or lower the shares")
    out = Path(out)
    for c in CLASSES:
        (out / c).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, params = [], {}

    def job(i: int, p: dict, size, fmt: str, role: str, of=None, kind=None, state=None) -> tuple:
        orient = None
        if fmt == "exif-jpeg":
            orient, fmt = int(rng.choice([6, 8, 3])), "jpeg"
        ext = ".png" if fmt.endswith("png") or fmt == "png-rgba" else ".jpg"
        path = out / p["cls"] / f"{role[:4]}_{i:06d}{ext}"
        mode = "L" if fmt.startswith("gray") else "RGBA" if fmt == "png-rgba" else "RGB"
        rows.append({"id": i, "file": str(path.relative_to(out)), "class": p["cls"], "role": role, "of": of,
                     "kind": kind, "format": "png" if ext == ".png" else "jpeg", "mode": mode,
                     "width": size[0], "height": size[1], "exif_orientation": orient,
                     "hue": None if mode == "L" else round(p["hue"], 4)})
        return p, (kind if role == "copy" else None), state, fmt, orient, str(path)

    def jobs():
        colour_ids = []
        for i in range(n_orig):
            p = _random_params(rng, CLASSES[i % len(CLASSES)])
            fmt = _format(rng)
            params[i] = p
            yield job(i, p, p["size"], fmt, "original")
            if not fmt.startswith("gray"):
                colour_ids.append(i)
        if not colour_ids:
            colour_ids = list(range(n_orig))

        i = n_orig
        sources = rng.choice(colour_ids, size=n_copy, replace=n_copy > len(colour_ids))
        for k, j in enumerate(sources.tolist()):
            kind = COPY_KINDS[k % len(COPY_KINDS)]
            fmt = "exif-jpeg" if kind == "exif" else str(rng.choice(["jpeg", "png"], p=[0.7, 0.3]))
            state = rng.bit_generator.state
            # the draws the worker will replay; the original is drawn again there (memory flat at any n)
            size = plant(Image.new("RGB", tuple(params[j]["size"])), kind, rng).size
            yield job(i, params[j], size, fmt, "copy", of=j, kind=kind, state=state)
            i += 1
        for role, make, count in (("lookalike", _lookalike, n_look), ("recolour", _recolour, n_rec)):
            for j in rng.choice(colour_ids, size=count, replace=count > len(colour_ids)).tolist():
                q = make(rng, params[j])
                yield job(i, q, q["size"], str(rng.choice(["jpeg", "png"], p=[0.7, 0.3])), role, of=j)
                i += 1

    _run(jobs(), workers)
    with open(out / "manifest.jsonl", "w") as fh:
        for r in rows:
            fh.write(json.dumps(r, sort_keys=True) + "\n")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder to write (class sub-folders and manifest.jsonl)")
    ap.add_argument("--n", type=int, default=2000, help="number of images in all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--copies", type=float, default=0.1, help="share of n that are planted copies")
    ap.add_argument("--lookalikes", type=float, default=0.05, help="share of n that are distinct look-alikes")
    ap.add_argument("--recolours", type=float, default=0.05, help="share of n that are recoloured twins")
    ap.add_argument("--workers", type=int, default=1, help="processes that render and encode (same files)")
    a = ap.parse_args(argv)
    try:
        rows = generate(a.out, n=a.n, seed=a.seed, copies=a.copies, lookalikes=a.lookalikes, recolours=a.recolours,
                        workers=a.workers)
    except ValueError as exc:
        ap.error(str(exc))
    print(f"wrote {len(rows)} images and manifest.jsonl to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
