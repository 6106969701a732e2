"""Copy detection by verification: cheap candidates, then a per-pair check that is sharp between a
copy and a look-alike (the near-duplicate pipelines of the field, e.g. SSCD, Pizzi et al. 2022).

An embedding's cosine alone cannot be sharp: on 4,000 MNIST digits the thumbnail puts distinct
look-alikes (two plain "1"s) as close as a rotated copy (benchmarks/dedup_quality). So:

1. **Candidates**: the ``k`` nearest rows of the cold-start thumbnail (``curator.coldstart``) by
   FAISS (``curator.index.search``), queried also with each image rotated by +-``QUERY_ANGLE``
   (the thumbnail is least tolerant of rotation: without it 9 % of 10-degree rotations of digits
   fell outside their original's 10 nearest) and cut to its centre (``QUERY_CROP``: crops of
   textured pictures).
2. **Verification** of each candidate pair (``pair_score``): the two images at a working size
   (native up to ``MAX_SIDE``), aligned on blurred luma by a coarse rotation x scale grid (shift by
   template matching) refined by an affine ECC (``cv2.findTransformECC``) and by a pattern search
   (``_refine``: ECC diverges on smooth images), each kept only inside the copy ranges (rotation,
   scale, aspect, shift); pairs below the pool's coarse floor are not refined.
   The score is the best normalised cross-correlation (channels stacked, each minus its
   own mean: invariant to brightness and contrast, not to a change of hue) of the identity and of
   each image **re-sampled into the other's frame**: a rotated or zoomed copy was itself re-sampled
   once, so warping the original the same way reproduces its blur, while a look-alike stays apart
   (MNIST: copies above 0.985, nearest distinct digits below it; warping the copy back instead
   gave copies 0.97, distinct 0.99).
3. **Colour**: that score does not see a global tint; the mean-chroma distance does, and a small
   recoloured object the local chroma change after alignment (``colour_change``), both with a
   tolerance calibrated on synthetic colour edits of the pool's own images.
4. **Calibration** per pool (``calibrate``): scores of synthetic copies of sampled pool images
   (``synthetic_copy``: one edit in the stated ranges, or a combination, by one of several resamplers)
   against every row's best score among its candidates, a mixture of real copies in the pool and
   nearest distinct neighbours: the distinct side's tail is fitted below the copies and extrapolated.
5. **Which score** (``calibrate_score``): the score at three blurs, each also relative to its rows'
   other candidates (the ratio test: ``row_levels``, ``relative``); the calibration of each gives an
   expected cost, and the cheapest is used.

Pure arrays in, arrays out; no session.
"""

from __future__ import annotations

import io
import time

import numpy as np

from curator.exceptions import ValidationError

METHOD = "verified-ecc"

#: Largest working side: beyond it re-sampling blur no longer tells a copy, and ECC costs ~side^2.
MAX_SIDE = 64
#: Memory for prepared images (``Prepared``: 64 x 64 x 3 float32 plus two alignment levels, ~55 KiB an
#: image): a pool whose prepared images fit is prepared at once; a larger one by chunks into a scratch
#: file, read back per pair through a cache of ``VERIFY_CACHE_BYTES`` (``StoredPrepared``), and its
#: decoded images are read from their files when needed (``load_images`` gives an ``ImageFiles``).
VERIFY_MEMORY_BYTES = 512 << 20
VERIFY_CACHE_BYTES = 128 << 20
#: Images prepared (or embedded, rotated) at once on the chunked path: ~55 MiB of prepared arrays.
PREPARE_CHUNK = 1024
#: What verification holds per sample whatever the path: ~8 candidate pairs (two int64 positions and a
#: float64 score each: 8 candidates + 2 x 3 rotated queries, de-duplicated; 7.9 a sample on the 10k
#: procedural pool), the chroma, the pair masks and the grouping's arrays: ~400 bytes.
VERIFY_BYTES_PER_SAMPLE = 400
#: Largest pool ``curator dedup --verify`` verifies: what fits ``VERIFY_MAX_BYTES`` at
#: ``VERIFY_BYTES_PER_SAMPLE`` beside the cache and the held-pool budget (~3.7M samples). Memory no
#: longer bounds it (the images are streamed); time does: ~5 ms of CPU a candidate pair (three blurs,
#: colour, two refinements), ~8 pairs a sample, plus reading each file three times: ~50 CPU s a thousand
#: samples (100k: ~80 CPU min). Beyond it, cosine on the embedding.
VERIFY_MAX_BYTES = 2 << 30
VERIFY_MAX_SAMPLES = (VERIFY_MAX_BYTES - VERIFY_CACHE_BYTES - VERIFY_MEMORY_BYTES) // VERIFY_BYTES_PER_SAMPLE
#: Largest pool ``curator dedup`` verifies when not asked (``--verify`` goes up to ``VERIFY_MAX_SAMPLES``):
#: a time bound, not a memory one: with three blurs, the colour check and two refinements ~50 CPU s a thousand
#: images (own-data 10k: 501 CPU s for the whole step), so 20,000 take ~15-17 CPU minutes, the longest a default
#: command should run unannounced. Larger pools get cosine unless the user opts in.
VERIFY_AUTO_SAMPLES = 20_000
#: Candidate neighbours per sample (the brief's cost bound: k <= 10).
DEFAULT_K = 8
#: Extra candidate queries rotated by +- this many degrees, ROTATED_K neighbours each.
QUERY_ANGLE = 7.0
ROTATED_K = 3
#: One more query set: each image's centre cut to this share of each side, ROTATED_K neighbours. Why: the
#: thumbnail of a crop is a zoom of its original's, and on textured pictures (stripes, waves) a 5-15 %
#: zoom moves every stripe, so a crop can fall far outside its original's nearest rows (own-data 10k: 11
#: of 125 crop + colour + JPEG copies were no candidate, their thumbnail cosine 0.1-0.5); querying with
#: the cut centre brings 4 of them in for 5 % more pairs (benchmarks/own_data README, run28).
QUERY_CROP = 0.9
#: Alignments a copy may need (beyond them the pair is scored without alignment): the copy
#: ranges of issue 16 (rotation <= 10 deg, zoom 0.9-1.1, crops of 85 % a side) with a margin.
MAX_ANGLE = 15.0
SCALE_RANGE = (0.8, 1.3)
MAX_ASPECT = 1.25
MAX_SHIFT = 0.25  # of the side
#: Blur (pixels at the working size) before scoring: takes noise and JPEG blocks out.
SCORE_SIGMA = 0.6
#: Blurs the calibration chooses among (``calibrate_score``), ``SCORE_SIGMA`` first: JPEG blocks and noise
#: fade under a wider blur, and so do the fine differences of two look-alikes; which matters more depends
#: on the pool (MNIST digits at 28 px: look-alike "1"s differ in pixels, the narrow blur keeps them apart;
#: procedural scenes at 64 px: JPEG blocks on smooth backgrounds, a wider blur lets the copies through).
SCORE_SIGMAS = (SCORE_SIGMA, 1.0, 1.5)
#: The refinement (pattern search, ECC) compares band-passed luma: blurred by ALIGN_SIGMA minus blurred by
#: ALIGN_SURROUND x that (a difference of Gaussians: edges and texture without the shading); the coarse grid
#: keeps the blurred luma (its correlations set the pool's floor, ``synthetic_scores``). Why: on smooth
#: scenes (shapes on gradients) the blurred luma correlates at 0.997-0.999 at every scale of the grid and
#: the search climbed from a wrong scale to a wrong map (own-data crop + colour + JPEG copies: 0.91 found
#: >= 0.983 where the true map gives 1.0; band-passed 0.96, and ~30 % less time before the search stops;
#: benchmarks/own_data README, run35). Band-passing the grid too (0.98) moved its floor and the pool's
#: choice of score (dedup_quality procedural seed 0: JPEG recall 1.0 -> 0.9), so it stays.
ALIGN_SIGMA = 1.0
ALIGN_SURROUND = 3.0
#: Calibration: samples drawn, and the margin on the synthetic colour edits' chroma distance.
CALIBRATION_SAMPLES = 400
CHROMA_MARGIN = 1.5
#: Chroma tolerance of a pool too small to calibrate (a threshold given): calibrated tolerances on the
#: procedural RGB pools were 0.05-0.09; a recolour (hue turned 120-240 deg) is 0.1-0.3.
DEFAULT_CHROMA_TOLERANCE = 0.05


def _cv2():
    import cv2

    cv2.setNumThreads(1)
    return cv2


def working_side(images) -> int:
    h, w = np.asarray(images[0]).shape[:2]
    return int(min(MAX_SIDE, max(h, w)))


def _load_one(uri) -> np.ndarray:
    from curator import images as img

    cv2 = _cv2()
    a = img.decode(uri)
    h, w = a.shape[:2]
    if max(h, w) > MAX_SIDE:
        a = cv2.resize(a, (min(MAX_SIDE, w), min(MAX_SIDE, h)), interpolation=cv2.INTER_AREA)
    return a


class ImageFiles:
    """The images of ``uris`` read from their files when indexed (at most ``MAX_SIDE`` a side, as
    ``load_images`` decodes them): a pool too large to hold decoded. An int gives one image, a slice
    or positions a list."""

    def __init__(self, uris):
        self.uris = list(uris)

    def __len__(self) -> int:
        return len(self.uris)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return [_load_one(u) for u in self.uris[key]]
        if isinstance(key, (int, np.integer)):
            return _load_one(self.uris[int(key)])
        return [_load_one(self.uris[int(k)]) for k in np.asarray(key).ravel()]

    def __iter__(self):
        return (_load_one(u) for u in self.uris)


def load_images(uris):
    """The images of ``uris`` at most ``MAX_SIDE`` a side (uint8, as decoded): a list, with progress,
    when they fit ``VERIFY_MEMORY_BYTES`` decoded; else an ``ImageFiles`` that reads them when needed."""
    from curator._progress import progress

    uris = list(uris)
    if len(uris) * MAX_SIDE * MAX_SIDE * 3 > VERIFY_MEMORY_BYTES:
        return ImageFiles(uris)
    return [_load_one(u) for u in progress(uris, total=len(uris), desc="reading images for verification")]


def _chunks(images, size: int = PREPARE_CHUNK):
    """``images`` as lists of at most ``size`` (a list: slices of it; ``ImageFiles``: read per chunk)."""
    for s in range(0, len(images), size):
        yield s, list(images[s:s + size])


def prepare(images, side: int | None = None) -> np.ndarray:
    """(n, S, S, C) float32 in [0, 1]: each image resized (area) to the working side."""
    cv2 = _cv2()
    if len(images) == 0:
        raise ValidationError("copyverify: no images")
    side = side or working_side(images)
    out = []
    for a in images:
        a = np.asarray(a)
        if a.ndim == 3 and a.shape[2] == 4:
            a = a[..., :3]
        if a.ndim not in (2, 3):
            raise ValidationError(f"copyverify: an image has shape {a.shape}; expected (h, w) or (h, w, c)")
        f = a.astype(np.float32) / (255.0 if a.dtype == np.uint8 else 1.0)
        if f.shape[:2] != (side, side):
            f = cv2.resize(f, (side, side), interpolation=cv2.INTER_AREA)
        out.append(f.reshape(side, side, -1))
    chans = {x.shape[2] for x in out}
    if len(chans) > 1:  # grayscale among colour: promote
        out = [np.repeat(x, 3, axis=2) if x.shape[2] == 1 else x for x in out]
    return np.stack(out)


def _band(cv2, g, sigma: float = ALIGN_SIGMA):
    """``g`` band-passed for the refinement: a difference of Gaussians (ALIGN_SIGMA, ALIGN_SURROUND)."""
    g = np.asarray(g, np.float32)
    return cv2.GaussianBlur(g, (0, 0), sigma) - cv2.GaussianBlur(g, (0, 0), sigma * ALIGN_SURROUND)


class Prepared:
    """The per-image inputs of the check, computed once per image (not per pair)."""

    def __init__(self, images, side: int | None = None):
        cv2 = _cv2()
        self.full = prepare(images, side)
        self.side = self.full.shape[1]
        luma = self.full.mean(axis=3)
        esz = min(self.side, ECC_SIDE)
        self.ecc_level = (esz, np.stack([_band(cv2, cv2.resize(g, (esz, esz), interpolation=cv2.INTER_AREA)
                                               if esz != self.side else g) for g in luma]).astype(np.float32))
        self.grid = np.stack([cv2.GaussianBlur(cv2.resize(g, (GRID_SIDE, GRID_SIDE), interpolation=cv2.INTER_AREA)
                                               if self.side != GRID_SIDE else g, (0, 0), ALIGN_SIGMA)
                              for g in luma]).astype(np.float32)
        mean = self.full.mean(axis=(1, 2))  # (n, C)
        self.chroma = (mean - mean.mean(axis=1, keepdims=True)) if self.full.shape[3] > 1 else np.zeros_like(mean)

    def __len__(self):
        return len(self.full)


def prepared_bytes(n: int, side: int, channels: int = 3) -> int:
    """Bytes of ``Prepared`` for ``n`` images: the full working size, the ECC level and the grid."""
    esz = min(side, ECC_SIDE)
    return int(n) * 4 * (side * side * channels + esz * esz + GRID_SIDE * GRID_SIDE + channels)


def prepare_pool(images, side: int | None = None, *, memory_bytes: int | None = None, progress: bool = True,
                 **kwargs):
    """``Prepared`` of the pool when it fits ``memory_bytes`` (default ``VERIFY_MEMORY_BYTES``) and the
    images are held; else ``StoredPrepared`` (the same values, read from a scratch file per row)."""
    side = side or working_side(images)
    budget = VERIFY_MEMORY_BYTES if memory_bytes is None else memory_bytes
    if not isinstance(images, ImageFiles) and prepared_bytes(len(images), side) <= budget:
        return Prepared(images, side)
    return StoredPrepared(images, side, progress=progress, **kwargs)


class _NeedColour(Exception):
    pass


def _colour(a) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[..., None]
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


class _Rows:
    """Row access to one per-image array of a ``StoredPrepared``: ``rows[i]`` as ``Prepared``'s ``arr[i]``."""

    def __init__(self, owner, name, shape):
        self.owner, self.name = owner, name
        self.shape = (len(owner),) + tuple(shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.owner._row(int(key))[self.name]
        idx = range(*key.indices(len(self))) if isinstance(key, slice) else np.asarray(key).ravel()
        return np.stack([self.owner._row(int(k))[self.name] for k in idx]) if len(idx) else \
            np.zeros((0,) + self.shape[1:], np.float32)


class StoredPrepared:
    """``Prepared`` of a pool too large to hold (at 64 px ~55 KiB an image, 5.4 GiB at 100k): prepared
    by chunks (``Prepared`` of each chunk: every step is per image, so the values are those of the whole
    pool at once) into an unlinked scratch file, one fixed-size record an image, read back per row
    (``os.pread``) through an LRU cache of ``cache_bytes``. Per-image arrays of at most ``SMALL_ROW``
    bytes (the chroma) stay in memory. Exposes ``Prepared``'s attributes: per-image arrays as ``_Rows``."""

    SMALL_ROW = 256

    def __init__(self, images, side: int | None = None, *, chunk: int = PREPARE_CHUNK,
                 cache_bytes: int = VERIFY_CACHE_BYTES, scratch=None, progress: bool = True):
        if len(images) == 0:
            raise ValidationError("copyverify: no images")
        self.n = len(images)
        side = side or working_side(images)
        try:
            self._build(images, side, chunk, scratch, progress, colour=False)
        except _NeedColour:  # a colour image after a grey first chunk: all as colour
            self._build(images, side, chunk, scratch, progress, colour=True)
        self.cache_rows = max(2, int(cache_bytes) // max(1, self.record_bytes))
        self._cache: dict = {}

    def __len__(self) -> int:
        return self.n

    def _build(self, images, side, chunk, scratch, progress, *, colour: bool):
        import tempfile

        from curator._progress import progress as bar

        self._file = tempfile.TemporaryFile(dir=scratch, prefix="curator-verify-")
        self.layout = None
        small, big, offset = {}, {}, 0
        chunks = _chunks(images, chunk)
        for s, imgs in (bar(chunks, total=-(-self.n // chunk), desc="preparing images for verification")
                        if progress else chunks):
            q = Prepared([_colour(a) for a in imgs] if colour else imgs, side)
            m = len(imgs)
            fields = self._fields(q, m)
            if self.layout is None:
                self.channels = q.full.shape[3]
                for name, arr in fields.items():
                    if arr[0].nbytes <= self.SMALL_ROW:
                        small[name] = np.empty((self.n,) + arr.shape[1:], arr.dtype)
                    else:
                        big[name] = (offset, arr.shape[1:], arr.dtype)
                        offset += arr[0].nbytes
                self.layout, self.record_bytes, self._small = big, offset, small
                self._plain = {k: v for k, v in vars(q).items() if not self._per_image(v, m)}
                self._tuples = {k: list(v) for k, v in vars(q).items() if isinstance(v, tuple) and self._per_image(v, m)}
            elif q.full.shape[3] != self.channels:
                if not colour and self.channels == 1:
                    raise _NeedColour()
                q = Prepared([_colour(a) for a in imgs], side)  # a grey chunk in a colour pool
                fields = self._fields(q, m)
            for name, arr in small.items():
                arr[s:s + m] = fields[name]
            rec = np.empty((m, self.record_bytes), np.uint8)
            for name, (off, shape, dtype) in big.items():
                a = np.ascontiguousarray(fields[name], dtype=dtype).reshape(m, -1).view(np.uint8)
                rec[:, off:off + a.shape[1]] = a
            self._file.write(rec.tobytes())
            del q, fields, rec
        self._file.flush()
        for k, v in self._plain.items():
            setattr(self, k, v)
        for name, arr in small.items():
            self._set(name, arr)
        for name, (_, shape, _) in big.items():
            self._set(name, _Rows(self, name, shape))

    @staticmethod
    def _per_image(v, m) -> bool:
        if isinstance(v, np.ndarray):
            return v.ndim >= 1 and len(v) == m
        return isinstance(v, tuple) and any(isinstance(x, np.ndarray) and x.ndim >= 1 and len(x) == m for x in v)

    def _fields(self, q, m) -> dict:
        """Per-image arrays of ``q`` by name: ``attr`` or ``attr.k`` for an array inside a tuple."""
        out = {}
        for k, v in vars(q).items():
            if isinstance(v, np.ndarray) and self._per_image(v, m):
                out[k] = v
            elif isinstance(v, tuple) and self._per_image(v, m):
                for t, x in enumerate(v):
                    if isinstance(x, np.ndarray) and x.ndim >= 1 and len(x) == m:
                        out[f"{k}.{t}"] = x
        return out

    def _set(self, name, value):
        if "." not in name:
            setattr(self, name, value)
            return
        k, t = name.split(".")
        self._tuples[k][int(t)] = value
        setattr(self, k, tuple(self._tuples[k]))

    def _row(self, k: int) -> dict:
        got = self._cache.pop(k, None)
        if got is None:
            import os

            if not 0 <= k < self.n:
                raise IndexError(f"row {k} of {self.n}")
            buf = os.pread(self._file.fileno(), self.record_bytes, k * self.record_bytes)
            raw = np.frombuffer(bytearray(buf), np.uint8)  # writable, as Prepared's rows
            got = {name: raw[off:off + int(np.prod(shape)) * np.dtype(dt).itemsize].view(dt).reshape(shape)
                   for name, (off, shape, dt) in self.layout.items()}
            if len(self._cache) >= self.cache_rows:
                self._cache.pop(next(iter(self._cache)))
        self._cache[k] = got  # most recent last
        return got

    def close(self):
        self._file.close()


def _ncc(a, b, mask=None) -> float:
    """The smaller of the normalised cross-correlation of ``a`` and ``b`` (channels stacked, each minus
    its mean) and that of their residuals after a plane (a linear gradient per channel) is fitted out:
    two distinct images on the same smooth background agree on the background, which dominates the
    plain correlation (procedural RGB: two faint shapes on one grey ramp 0.966, above most copies; 0.06
    without the ramp); a copy agrees on both. Both from the same sums (the plane's projection of a.b is
    (D'a)' G^-1 (D'b)): no residual image is formed; the cost of a pair is mostly here."""
    h, w = a.shape[:2]
    if mask is not None:
        yy, xx = np.nonzero(mask)
        a, b = a[mask], b[mask]
        D = np.stack([np.ones(len(a)), (xx - w / 2) / w, (yy - h / 2) / h], 1)
    else:
        D = _plane_basis(h, w)
        a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    n = len(a)
    if n < 16:
        return -1.0
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    Sa, Sb = D.T @ a64, D.T @ b64  # (3, C): each channel's sum and first moments
    ab, aa, bb = float((a64 * b64).sum()), float((a64 * a64).sum()), float((b64 * b64).sum())
    Gi = np.linalg.inv(D.T @ D)
    out = []
    for pa, pb, pab in ((Sa[0] ** 2 / n, Sb[0] ** 2 / n, Sa[0] * Sb[0] / n),  # the means
                        ((Sa * (Gi @ Sa)).sum(0), (Sb * (Gi @ Sb)).sum(0), (Sa * (Gi @ Sb)).sum(0))):  # planes
        den = np.sqrt(max(aa - pa.sum(), 0.0) * max(bb - pb.sum(), 0.0))
        if den <= 1e-9:  # a flat image (or flat residual): the explicit form decides, as before
            return _ncc_explicit(a, b, D)
        out.append((ab - pab.sum()) / den)
    return float(min(out))


_PLANES: dict = {}


def _plane_basis(h: int, w: int) -> np.ndarray:
    """(h * w, 3): ones and the centred x, y of each pixel, row-major; one per image size."""
    D = _PLANES.get((h, w))
    if D is None:
        yy, xx = np.divmod(np.arange(h * w), w)
        D = _PLANES[(h, w)] = np.stack([np.ones(h * w), (xx - w / 2) / w, (yy - h / 2) / h], 1)
    return D


def _ncc_explicit(a, b, D) -> float:
    G = D.T @ D
    plain = _corr(a, b)
    return min(plain, _corr(a - D @ np.linalg.solve(G, D.T @ a), b - D @ np.linalg.solve(G, D.T @ b)))


def _corr(a, b) -> float:
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 1e-12 else (1.0 if float(np.abs(a - b).max()) < 1e-6 else 0.0)


#: The coarse alignment grid: rotation x scale at GRID_SIDE px, the shift by template matching within
#: +-GRID_MARGIN px (12.5 % of the side); ECC refines between the grid points.
GRID_SIDE = 24
GRID_ANGLES = (-7.0, 0.0, 7.0)
GRID_SCALES = (0.93, 1.03, 1.13)
GRID_MARGIN = 3
#: A pair whose best coarse correlation is below this is scored as it stands (no refinement): every
#: synthetic and planted copy here was above 0.9 at the coarse grid; most candidate pairs are far below.
GRID_FLOOR = 0.7
#: The pool's own floor (``synthetic_scores``): this much below the 1 % quantile of its synthetic copies'
#: coarse correlation, never above GRID_FLOOR_MAX. On MNIST most candidate pairs are similar digits
#: above 0.7, so a floor from the pool's copies is what skips them (the refinement is the cost).
GRID_FLOOR_MARGIN = 0.05
GRID_FLOOR_MAX = 0.9
#: The alignment (pattern search, then ECC) refines at most at this side (its cost grows with the pixels),
#: then scales the shift up. At the full working side (64), not 32: at 32 px the search stopped short of
#: the map that makes a crop its original (own-data 10k, 100 crops: 0.90 of them >= 0.983 at the map found,
#: every one >= 0.9995 at the true map replayed from the generator; at 64 px 0.97; crop + colour + JPEG
#: 0.83 -> 0.91, true map 1.0; benchmarks/own_data/crop_alignment.py), for ~1.4x the scoring time.
ECC_SIDE = 64


def _in_ranges(W, side: int) -> bool:
    A = W[:, :2].astype(np.float64)
    if not np.isfinite(W).all():
        return False
    U, s, Vt = np.linalg.svd(A)
    R = U @ Vt
    angle = abs(np.degrees(np.arctan2(R[1, 0], R[0, 0])))
    return not (angle > MAX_ANGLE or s.min() < SCALE_RANGE[0] or s.max() > SCALE_RANGE[1]
                or s.max() / s.min() > MAX_ASPECT or np.linalg.det(A) <= 0
                or np.abs(W[:, 2] - (np.eye(2) - A) @ np.array([side / 2, side / 2])).max() > MAX_SHIFT * side)


_GRID_MAPS: list = []


def _grid_maps() -> np.ndarray:
    """The coarse grid's maps (rotation x scale about the centre), angle-major as the search tries them."""
    if not _GRID_MAPS:
        cv2, g = _cv2(), GRID_SIDE
        _GRID_MAPS.append(np.array([cv2.getRotationMatrix2D((g / 2, g / 2), ang, sc)
                                    for ang in GRID_ANGLES for sc in GRID_SCALES]))
    return _GRID_MAPS[0]


def grid_best(p: Prepared, i: int, j: int):
    """(best coarse correlation, its map at GRID_SIDE) over the rotation x scale grid, shift by matching:
    each warped centre of a against every shift of b, TM_CCOEFF_NORMED as one matrix product (OpenCV's
    matchTemplate took ~0.5 ms a call at this size, 9 calls a pair: 20 x slower; same maps, scores
    within 1e-4 of its float32)."""
    from numpy.lib.stride_tricks import sliding_window_view

    cv2 = _cv2()
    g, m = GRID_SIDE, GRID_MARGIN
    maps = _grid_maps()
    T = np.stack([cv2.warpAffine(p.grid[i], M, (g, g), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)[m:g - m, m:g - m] for M in maps])
    T = T.reshape(len(maps), -1).astype(np.float64)
    T -= T.mean(axis=1, keepdims=True)
    W = sliding_window_view(p.grid[j], (g - 2 * m, g - 2 * m)).reshape(-1, T.shape[1]).astype(np.float64)
    den = np.sqrt(np.maximum((W * W).sum(1) - W.sum(1) ** 2 / W.shape[1], 0.0)[:, None] * (T * T).sum(1)[None, :])
    r = np.where(den > 1e-12, (W @ T.T) / np.where(den > 1e-12, den, 1.0), 0.0)  # (shifts, maps)
    t, s = divmod(int(np.argmax(r.T)), r.shape[0])  # the first best, in the grid's order
    y, x = divmod(s, 2 * m + 1)
    W0 = maps[t].copy()
    W0[:, 2] += (x - m, y - m)
    return float(r[s, t]), W0


#: The pattern search (``_refine``): first steps (degrees, log of each axis' scale, shear, pixels at ECC_SIDE), and
#: the most correlations it computes; it stops when the angle step falls below ``REFINE_MIN_ANGLE``.
REFINE_STEPS = (2.0, 0.03, 0.03, 0.03, 1.0, 1.0)
REFINE_EVALS = 60
REFINE_MIN_ANGLE = 0.1


def _masked_corr(a, b, W, side: int, cv2=None) -> float:
    """Correlation of ``a`` warped by ``W`` and ``b`` over the pixels the warp covers (-1 below half)."""
    cv2 = cv2 or _cv2()
    w = cv2.warpAffine(a, W, (side, side), flags=cv2.INTER_LINEAR, borderValue=np.nan)
    m = np.isfinite(w)
    n = int(m.sum())
    if n < 0.5 * side * side:
        return -1.0
    x, y = w[m].astype(np.float64), b[m].astype(np.float64)
    sx, sy = x.sum(), y.sum()
    den = np.sqrt(max(x @ x - sx * sx / n, 0.0) * max(y @ y - sy * sy / n, 0.0))
    return float((x @ y - sx * sy / n) / den) if den > 1e-12 else -1.0


def _map(q, side: int) -> np.ndarray:
    """The affine map of (angle in degrees, log x scale, log y scale, shear, x shift, y shift) about the
    centre: rotation times an upper-triangular matrix, every map of positive determinant (a rotation of a
    squashed non-square image is a shear in the working square)."""
    c, s = np.cos(np.radians(q[0])), np.sin(np.radians(q[0]))
    A = np.array([[c, -s], [s, c]]) @ np.array([[np.exp(q[1]), q[3]], [0.0, np.exp(q[2])]])
    centre = np.array([side / 2, side / 2])
    return np.hstack([A, (centre - A @ centre + q[4:6])[:, None]]).astype(np.float32)


def _refine(a, b, W0, side: int) -> np.ndarray:
    """``W0`` refined by a pattern (compass) search over rotation, the two axes' scales, shear and shift,
    maximising the correlation of ``a`` warped onto ``b``: each parameter stepped both ways in turn, a
    better value kept and followed while it improves, all steps halved when none does. Why not ECC alone: on smooth images (shapes on
    gradients) its Gauss-Newton steps diverge or stop (own-data 10k: 14 of 16 rotated copies below 0.97
    had no ECC map in range, while the exact rotation scores 0.999); the search only ever climbs."""
    A = W0[:, :2].astype(np.float64)
    centre = np.array([side / 2, side / 2])
    scale = np.log(np.sqrt(abs(np.linalg.det(A))) or 1.0)
    q = np.array([np.degrees(np.arctan2(A[1, 0], A[0, 0])), scale, scale, 0.0, *(W0[:, 2] - (centre - A @ centre))])
    step = np.array(REFINE_STEPS, np.float64)
    cv2 = _cv2()
    f, evals = _masked_corr(a, b, _map(q, side), side, cv2), 1
    while evals < REFINE_EVALS and step[0] >= REFINE_MIN_ANGLE:
        moved = False
        for k in range(len(q)):
            for sign in (1.0, -1.0):
                r = q.copy()
                r[k] += sign * step[k]
                g = _masked_corr(a, b, _map(r, side), side, cv2)
                evals += 1
                while g > f:  # better: keep going that way
                    q, f, moved = r, g, True
                    r = q.copy()
                    r[k] += sign * step[k]
                    g = _masked_corr(a, b, _map(r, side), side, cv2)
                    evals += 1
                if moved:
                    break
        if not moved:
            step /= 2
    return _map(q, side)


def _align(p: Prepared, i: int, j: int, floor: float = GRID_FLOOR) -> list:
    """Affine maps W (a's pixel -> b's pixel, b(W x) ~ a(x)) worth scoring: the best of a coarse grid
    (rotation x scale, each with the best shift by template matching at ``GRID_SIDE``), and its
    refinements, by ECC (``cv2.findTransformECC``, affine) and by a pattern search (``_refine``), each
    kept when inside the copy ranges."""
    cv2 = _cv2()
    g = GRID_SIDE
    best, W0 = grid_best(p, i, j)
    if best < floor:
        return []
    W0 = W0.astype(np.float32)
    esz, lv = p.ecc_level
    We = W0.copy()
    We[:, 2] *= esz / g
    W0[:, 2] *= p.side / g
    out = [W0]
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 1e-4)
    refined = [_refine(lv[i], lv[j], We, esz)]
    try:
        refined.append(cv2.findTransformECC(lv[i], lv[j], We, cv2.MOTION_AFFINE, crit, None, 1)[1])
    except cv2.error:
        pass
    for W in refined:
        W[:, 2] *= p.side / esz
        if _in_ranges(W, p.side):
            out.append(W)
    return out


def _blur(cv2, x, sigma: float = SCORE_SIGMA):
    b = cv2.GaussianBlur(x, (0, 0), sigma)
    return b.reshape(x.shape)


def _tries(p: Prepared, i: int, j: int, floor: float):
    """(one image, the other, valid mask or None) for the identity and each alignment of ``_align``, each
    image re-sampled into the other's frame (what ``pair_score`` compares)."""
    yield p.full[i], p.full[j], None
    for W in _align(p, i, j, floor):
        yield from _both_ways(p, i, j, W)


def _both_ways(p: Prepared, i: int, j: int, W):
    """Row i re-sampled by the map ``W`` into j's frame, and j by its inverse into i's: (the re-sampled
    image, the other, the pixels it covers), each where it covers at least half the square."""
    cv2 = _cv2()
    S = p.side
    a, b = p.full[i], p.full[j]
    for warped, other in ((cv2.warpAffine(a, W, (S, S), flags=cv2.INTER_LINEAR, borderValue=np.nan), b),
                          (cv2.warpAffine(b, W, (S, S), flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP,
                                          borderValue=np.nan), a)):
        warped = warped.reshape(S, S, -1)
        valid = np.isfinite(warped).all(axis=2)
        valid = cv2.erode(valid.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        if valid.mean() < 0.5:
            continue
        yield np.where(np.isfinite(warped), warped, other).astype(np.float32), other, valid


def pair_score(p: Prepared, i: int, j: int, floor: float = GRID_FLOOR, sigmas=None):
    """Copy score of rows i and j in [-1, 1]: the best NCC of identity, i re-sampled into j's frame and
    j re-sampled into i's (``_tries``), both blurred by ``SCORE_SIGMA``. ``sigmas``: the same at each of
    these blurs (an array, one score a blur; the alignment is shared)."""
    cv2 = _cv2()
    sg = (SCORE_SIGMA,) if sigmas is None else tuple(sigmas)
    best = np.full(len(sg), -1.0)
    for x, y, valid in _tries(p, i, j, floor):
        for k, s in enumerate(sg):
            best[k] = max(best[k], _ncc(_blur(cv2, x, s), _blur(cv2, y, s), valid))
    return float(best[0]) if sigmas is None else best


#: Local colour (``colour_change``): the difference of the two chroma maps is averaged over a region of
#: this blur (pixels at the working size): a recoloured object, not a JPEG edge or a resampled border.
LOCAL_COLOUR_SIGMA = 2.0


def colour_change(p: Prepared, i: int, j: int, floor: float = GRID_FLOOR) -> float:
    """The largest local change of colour between rows i and j after alignment (0 on grayscale): per
    pixel chroma (each channel minus the pixel's mean), the one image's fitted to the other's by one
    gain (a saturation or contrast edit scales chroma everywhere), the difference's length averaged over
    ``LOCAL_COLOUR_SIGMA`` and its maximum; the smallest over the alignments. The mean chroma
    (``chroma_distance``) misses a small object recoloured on a large background (procedural RGB: a
    triangle turned from green to blue on grey stripes scored 0.95 with mean chroma 0.03 apart)."""
    if p.full.shape[3] == 1:
        return 0.0
    cv2 = _cv2()
    best = np.inf
    for x, y, valid in _tries(p, i, j, floor):
        cx = _blur(cv2, x - x.mean(axis=2, keepdims=True), ALIGN_SIGMA)
        cy = _blur(cv2, y - y.mean(axis=2, keepdims=True), ALIGN_SIGMA)
        m = np.ones(cx.shape[:2], bool) if valid is None else valid
        den = float((cy[m] * cy[m]).sum())
        g = float(np.clip((cx[m] * cy[m]).sum() / den, 0.5, 2.0)) if den > 1e-12 else 1.0
        r = np.linalg.norm(cx - g * cy, axis=2).astype(np.float32)
        r[~m] = 0.0
        w = cv2.GaussianBlur(m.astype(np.float32), (0, 0), LOCAL_COLOUR_SIGMA)
        r = cv2.GaussianBlur(r, (0, 0), LOCAL_COLOUR_SIGMA) / np.maximum(w, 1e-6)
        best = min(best, float(r[m & (w > 0.5)].max(initial=0.0)))
    return best


def colour_changes(p: Prepared, i, j, floor: float = GRID_FLOOR) -> np.ndarray:
    """``colour_change`` of each pair (i[k], j[k]); zeros on grayscale."""
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    if p.full.shape[3] == 1:
        return np.zeros(len(i))
    return np.array([colour_change(p, int(a), int(b), floor) for a, b in zip(i, j)], np.float64)


def chroma_distance(p: Prepared, i, j) -> np.ndarray:
    """Distance of the mean chroma (channel means minus their mean) of rows i and j: 0 on grayscale."""
    i, j = np.asarray(i), np.asarray(j)
    return np.linalg.norm(p.chroma[i] - p.chroma[j], axis=-1)


def score_pairs(p: Prepared, i, j, *, progress: bool = True, desc: str = "verifying candidate pairs",
                floor: float = GRID_FLOOR, sigmas=None, workers: int = 1, checkpoint=None) -> np.ndarray:
    """``pair_score`` of each pair (i[k], j[k]), float64, with a progress bar: (pairs,), or (pairs,
    len(sigmas)) with ``sigmas``; ``workers`` > 1 splits the pairs across forked processes
    (``_score_forked``): pairs are independent, the score is one thread. ``checkpoint`` (a
    ``curator.checkpoint.Checkpoint``): each block of ``SCORE_BLOCK`` pairs is kept as it is scored, and
    a run stopped part way scores only the blocks it had not finished."""
    from curator._progress import progress as bar

    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    shape = (len(i),) if sigmas is None else (len(i), len(sigmas))
    if checkpoint is None:
        out, spans = np.empty(shape, np.float64), [(s, min(s + SCORE_BLOCK, len(i)))
                                                   for s in range(0, len(i), SCORE_BLOCK)]
        put, rows = lambda s, got: out.__setitem__(slice(s, s + len(got)), got), None
    else:
        rows = checkpoint.rows("scores", shape, np.float64, SCORE_BLOCK,
                               meta={"floor": float(floor), "sigmas": sigmas, "pairs": _digest(i, j)})
        out, spans, put = rows.out, rows.todo(), rows.put
        if rows.resumed_rows:
            desc = f"{desc} (resumed: {rows.resumed_rows:,} of {len(i):,} already scored)"
    left = sum(e - s for s, e in spans)
    try:
        if workers > 1 and left >= 2 * SCORE_BLOCK:
            done = _score_forked(p, i, j, spans, floor=floor, sigmas=sigmas, workers=workers)
            desc = f"{desc} ({workers} processes)"
        else:
            done = (_score_span(p, i, j, floor, sigmas, span) for span in spans)
        for s, got in (bar(done, total=left, desc=desc, weight=lambda r: len(r[1])) if progress else done):
            put(s, got)
    finally:
        if rows is not None:
            rows.close()
    return out


def _code_digest() -> str:
    """This module's source: scores kept by another version of it (an upgrade, an edit) are not reused."""
    from pathlib import Path

    try:
        return _digest(np.frombuffer(Path(__file__).read_bytes(), np.uint8))
    except OSError:  # no source file (a frozen install): the package version
        from curator import __version__

        return str(__version__)


def _pool_digest(images, hashes=None) -> str:
    """What a checkpoint of ``images`` is valid for: their content hashes where the caller has them (the
    store's), else each file's path, size and modification time (``ImageFiles``), else the pixels."""
    import hashlib
    import os

    h = hashlib.blake2b(digest_size=16)
    if hashes is not None:
        h.update("\n".join(map(str, hashes)).encode())
    elif isinstance(images, ImageFiles):
        for u in images.uris:
            st = os.stat(u)
            h.update(f"{u}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    else:
        for a in images:
            h.update(_digest(np.asarray(a)).encode())
    return h.hexdigest()


def _digest(*arrays) -> str:
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a.reshape(-1)).cast("B"))
    return h.hexdigest()


#: Pairs a worker process scores per task (``_score_forked``), and the unit a checkpoint keeps:
#: contiguous, so pairs sorted by their first row keep reading that row's record once.
SCORE_BLOCK = 512
_FORKED: dict = {}


def _score_span(p, i, j, floor, sigmas, span) -> tuple[int, np.ndarray]:
    s, e = span
    return s, np.array([pair_score(p, int(i[k]), int(j[k]), floor, sigmas) for k in range(s, e)], np.float64)


def _score_block(span) -> tuple[int, np.ndarray]:
    return _score_span(*(_FORKED[k] for k in ("p", "i", "j", "floor", "sigmas")), span)


def _score_forked(p, i, j, spans, *, floor: float, workers: int, sigmas=None):
    """(start, scores) of each span of pairs, scored in ``workers`` forked processes as they finish:
    each inherits ``p`` (held arrays, or the scratch file of a ``StoredPrepared``, read with
    ``os.pread``: no shared offset); the same values as one process."""
    import multiprocessing as mp

    _FORKED.update(p=p, i=i, j=j, floor=floor, sigmas=sigmas)
    try:
        with mp.get_context("fork").Pool(int(workers)) as pool:
            yield from pool.imap_unordered(_score_block, spans)
            pool.close()
            pool.join()  # reaped: their CPU time is counted in os.times()'s children
    finally:
        _FORKED.clear()


# -- candidates ----------------------------------------------------------------------------------

def _rotated(images, angle: float):
    cv2 = _cv2()
    out = []
    for a in images:
        a = np.asarray(a)
        h, w = a.shape[:2]
        edge = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]).reshape(-1, *a.shape[2:])
        fill = np.median(edge, axis=0)
        M = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        r = cv2.warpAffine(a, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=tuple(float(v) for v in np.ravel(fill)) if np.ndim(fill) else float(fill))
        out.append(r.reshape(a.shape))
    return out


class _SpilledRows:
    """(n, d) float32 rows appended once to an unlinked scratch file and read back by slices (``os.pread``):
    not memory-mapped, so neither writing them nor reading a chunk leaves their pages in the process's
    RSS (a memory map's stay there as long as it is mapped: 147 MiB a set of rotated thumbnails at 100k)."""

    def __init__(self, n: int, d: int):
        import tempfile

        self._file = tempfile.TemporaryFile(prefix="curator-verify-")
        self.shape, self.dtype = (int(n), int(d)), np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def append(self, rows) -> None:
        self._file.write(np.ascontiguousarray(rows, np.float32).tobytes())

    def __getitem__(self, key: slice) -> np.ndarray:
        import os

        start, stop, step = key.indices(len(self))
        if step != 1:
            raise IndexError("_SpilledRows reads contiguous slices")
        self._file.flush()
        row = self.shape[1] * 4
        buf = os.pread(self._file.fileno(), max(0, stop - start) * row, start * row)
        return np.frombuffer(bytearray(buf), np.float32).reshape(-1, self.shape[1])

    def __array__(self, dtype=None, copy=None):
        a = self[0:len(self)]
        return a if dtype is None else a.astype(dtype)


#: Rows of a spilled query set searched at once (``candidates``): 16,384 x 384 float32 is 24 MiB.
QUERY_CHUNK = 16_384


def _cropped(images, share: float):
    out = []
    for a in images:
        a = np.asarray(a)
        h, w = a.shape[:2]
        ch, cw = max(1, round(h * share)), max(1, round(w * share))
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        out.append(a[y0:y0 + ch, x0:x0 + cw])
    return out


def _view(images, view):
    """``images`` seen as a query ``view``: an angle in degrees (0: upright), or ("crop", share of each side)."""
    if isinstance(view, tuple):
        return _cropped(images, view[1])
    return _rotated(images, view) if view else images


def _embed(images, views=(0.0,), *, spill: bool | None = None, mapped: bool = True) -> list:
    """Cold-start thumbnails of ``images`` in each of ``views`` (an angle, 0 upright, or a centre crop:
    ``_view``), one pass over the images a chunk at a time: the rotated or cut copies of a whole pool are
    never held, and files are read once.
    ``spill`` (default: for ``ImageFiles``, or beyond a quarter of ``VERIFY_MEMORY_BYTES``): written into
    memory maps of unlinked scratch files (n x 384 float32 is 147 MiB at 100k) and searched from there;
    with ``mapped`` False into ``_SpilledRows`` instead, for sets only read by chunks (the queries)."""
    import tempfile

    from curator import coldstart

    n, d = len(images), coldstart.dim(coldstart.THUMB_SIDE)
    if spill is None:
        spill = isinstance(images, ImageFiles) or n * d * 4 * len(views) > VERIFY_MEMORY_BYTES // 4
    if spill and n and not mapped:
        out = [_SpilledRows(n, d) for _ in views]
    else:
        out = [np.memmap(tempfile.TemporaryFile(prefix="curator-verify-"), np.float32, "w+", shape=(n, d))
               if spill and n else np.empty((n, d), np.float32) for _ in views]
    for s, imgs in _chunks(images):
        for o, view in zip(out, views):
            rows = coldstart.embed_images(_view(imgs, view))
            if isinstance(o, _SpilledRows):
                o.append(rows)
            else:
                o[s:s + len(imgs)] = rows
    return out


def candidates(images, k: int = DEFAULT_K, *, embeddings=None, query_angle: float = QUERY_ANGLE,
               query_crop: float | None = QUERY_CROP):
    """Unique candidate pairs (i < j): each row's ``k`` nearest thumbnail rows, queried upright,
    rotated by +-``query_angle`` and cut to its centre ``query_crop``. ``embeddings``: the pool's thumbnails
    when already computed. The index is built once; every query set is searched ``QUERY_CHUNK`` rows at a
    time."""
    from curator import index

    if query_crop is not None and not 0.0 < float(query_crop) < 1.0:
        raise ValidationError(f"candidates: query_crop={query_crop!r} is the share of each side kept at the "
                              "centre: give a number between 0 and 1 (e.g. 0.9), or None for no crop query")
    E = _embed(images)[0] if embeddings is None else np.asarray(embeddings, np.float32)
    n = len(E)
    k = int(min(k, n - 1))
    if k < 1:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    views = ((-query_angle, query_angle) if query_angle else ()) + ((("crop", query_crop),) if query_crop else ())
    queries = [E] + (_embed(images, views, mapped=False) if views else [])
    search = index.searcher(E)
    index.release(E)
    keys = []
    for q, Q in enumerate(queries):
        kq = (k if q == 0 else min(k, ROTATED_K)) + 1
        # by chunks, the upright set too: a whole memory-mapped set would be copied (float32, n x 384);
        # each chunk's pairs kept as unique int64 keys i * n + j (i < j): 8 bytes a pair, not the 16 of a
        # pair of positions in several copies (2.1M pairs at 100k before they are made unique)
        for s in range(0, n, QUERY_CHUNK):
            nb = search(Q[s:s + QUERY_CHUNK], kq)[1]
            index.release(Q)
            rows = np.arange(s, s + len(nb), dtype=np.int64)[:, None]
            ok = (nb >= 0) & (nb != rows)
            lo, hi = np.minimum(rows, nb)[ok], np.maximum(rows, nb)[ok]
            keys.append(np.unique(lo * n + hi))
    key = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
    return key // n, key % n


# -- calibration ---------------------------------------------------------------------------------

#: Resamplers a synthetic copy is made with, one drawn per copy: real copies come from many programs, and
#: each re-samples with its own kernel (PIL's bilinear resize is antialiased, cv2's is not); copies made by
#: one library alone scored above those of another (MNIST: PIL-made combos 0.985-0.997 against cv2-made
#: synthetic ones above 0.998), so the calibration's copy side missed their lower tail.
RESAMPLERS = ("cv2-linear", "cv2-cubic", "cv2-area", "pil-bilinear", "pil-bicubic")


def _resample(x, ang: float, z: float, how: str) -> np.ndarray:
    """``x`` rotated by ``ang`` degrees and zoomed by ``z`` about its centre, borders filled with the
    median edge colour, by the resampler ``how`` (``RESAMPLERS``)."""
    cv2 = _cv2()
    h, w = x.shape[:2]
    edge = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]]).reshape(-1, *x.shape[2:])
    fill = np.median(edge, axis=0)
    if how.startswith("cv2"):
        flag = {"cv2-linear": cv2.INTER_LINEAR, "cv2-cubic": cv2.INTER_CUBIC, "cv2-area": cv2.INTER_AREA}[how]
        if how == "cv2-area":  # INTER_AREA is a resize kernel: rotate linearly, zoom by resize
            r = _resample(x, ang, 1.0, "cv2-linear") if ang else x
            zw, zh = max(1, round(w * z)), max(1, round(h * z))
            return _paste(cv2.resize(r, (zw, zh), interpolation=flag).reshape(zh, zw, *x.shape[2:]), x, fill)
        M = cv2.getRotationMatrix2D((w / 2, h / 2), ang, z)
        bv = tuple(float(v) for v in np.ravel(fill)) if np.ndim(fill) else float(fill)
        return cv2.warpAffine(x, M, (w, h), flags=flag, borderValue=bv).reshape(x.shape)
    from PIL import Image

    rs = Image.Resampling.BILINEAR if how == "pil-bilinear" else Image.Resampling.BICUBIC
    fc = tuple(int(round(v)) for v in np.ravel(fill)) if x.ndim == 3 else int(round(float(fill)))
    im = Image.fromarray(x)
    if ang:
        im = im.rotate(ang, resample=rs, fillcolor=fc)
    if z != 1.0:
        im = im.resize((max(1, round(w * z)), max(1, round(h * z))), rs)
    return _paste(np.asarray(im).reshape(im.height, im.width, *x.shape[2:]), x, fill)


def _paste(big: np.ndarray, like: np.ndarray, fill) -> np.ndarray:
    """``big`` centred on a canvas of ``like``'s shape filled with ``fill`` (cropped if larger)."""
    h, w = like.shape[:2]
    bh, bw = big.shape[:2]
    out = np.empty_like(like)
    out[...] = np.asarray(fill).round().astype(like.dtype)
    sy, sx = max(0, (bh - h) // 2), max(0, (bw - w) // 2)
    dy, dx = max(0, (h - bh) // 2), max(0, (w - bw) // 2)
    ch, cw = min(h, bh), min(w, bw)
    out[dy:dy + ch, dx:dx + cw] = big[sy:sy + ch, sx:sx + cw]
    return out


def synthetic_copy(a: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """One copy of a uint8 image by an edit drawn from the copy ranges, re-sampled by a resampler drawn
    from ``RESAMPLERS``: rotation <= 10 deg, zoom 0.9-1.1, crop 85-95 % of each side, brightness/contrast
    x 0.8-1.2 (colour: saturation x 0.7-1.3), JPEG 50-90, noise sigma 4-10, or rotation + zoom +
    brightness + JPEG 60-90."""
    cv2 = _cv2()
    a = np.asarray(a)
    h, w = a.shape[:2]
    kind = ["rotate", "zoom", "crop", "colour", "jpeg", "noise", "combo"][int(rng.integers(7))]
    how = RESAMPLERS[int(rng.integers(len(RESAMPLERS)))]

    def jpeg(x, q):
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(x).save(buf, format="JPEG", quality=int(q))
        return np.asarray(Image.open(io.BytesIO(buf.getvalue()))).reshape(x.shape)

    def colour(x, lo, hi, sat):
        f = x.astype(np.float32)
        m = f.mean()
        f = (f - m) * rng.uniform(lo, hi) + m * rng.uniform(lo, hi)
        if f.ndim == 3 and sat:
            g = f.mean(axis=2, keepdims=True)
            f = g + (f - g) * rng.uniform(0.7, 1.3)
        return np.clip(f, 0, 255).round().astype(np.uint8)

    if kind == "rotate":
        return _resample(a, rng.uniform(-10, 10), 1.0, how), kind
    if kind == "zoom":
        return _resample(a, 0.0, rng.uniform(0.9, 1.1), how), kind
    if kind == "crop":
        ch, cw = round(h * rng.uniform(0.85, 0.95)), round(w * rng.uniform(0.85, 0.95))
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        part = np.ascontiguousarray(a[y0:y0 + ch, x0:x0 + cw])
        if how.startswith("pil"):
            from PIL import Image

            rs = Image.Resampling.BILINEAR if how == "pil-bilinear" else Image.Resampling.BICUBIC
            return np.asarray(Image.fromarray(part).resize((w, h), rs)).reshape(a.shape), kind
        flag = {"cv2-linear": cv2.INTER_LINEAR, "cv2-cubic": cv2.INTER_CUBIC, "cv2-area": cv2.INTER_AREA}[how]
        return cv2.resize(part, (w, h), interpolation=flag).reshape(a.shape), kind
    if kind == "colour":
        return colour(a, 0.8, 1.2, True), kind
    if kind == "jpeg":
        return jpeg(a, rng.integers(50, 91)), kind
    if kind == "noise":
        return np.clip(a + rng.normal(0, rng.uniform(4, 10), a.shape), 0, 255).astype(np.uint8), kind
    b = _resample(a, rng.uniform(-5, 5), rng.uniform(0.95, 1.05), how)
    return jpeg(colour(b, 0.9, 1.1, False), rng.integers(60, 91)), kind


def _detail(x) -> float:
    """What the score can see of an image (or of an edit: a copy less its original): the standard
    deviation left after the score's blur (``SCORE_SIGMA``) and a plane per channel (``_ncc``'s
    residual)."""
    cv2 = _cv2()
    S = x.shape[0]
    b = _blur(cv2, np.ascontiguousarray(x, np.float32)).reshape(S * S, -1).astype(np.float64)
    D = _plane_basis(S, S)
    return float((b - D @ np.linalg.lstsq(D, b, rcond=None)[0]).std())


def verifiable(detail, edit, kinds) -> np.ndarray:
    """Which synthetic copies the score can verify: those whose original has more detail (``_detail``)
    than the synthetic noise edits add (their median ``_detail`` of copy less original; of every
    pixel-aligned edit where no noise edit was drawn). Below it even the true map scores an NCC under
    1 / sqrt(2): such a copy counts as missed, but must not place the calibration's tail window (own-data
    30k pool: 3 of 400 copies were noise or JPEG on near-flat pictures at 0.65-0.85, the copies' 1 %
    quantile fell to 0.848 inside the distinct bulk, threshold 0.892, precision 0.849)."""
    detail, edit, kinds = np.asarray(detail, np.float64), np.asarray(edit, np.float64), np.asarray(kinds)
    ref = edit[kinds == "noise"]
    if not len(ref):
        ref = edit[np.isin(kinds, ("noise", "jpeg", "colour"))]
    return detail >= float(np.median(ref)) if len(ref) else np.ones(len(detail), bool)


def synthetic_draw(images, side: int, *, seed: int = 0, samples: int = CALIBRATION_SAMPLES):
    """The calibration's sampled rows (sorted), ``Prepared`` of those rows followed by one synthetic copy
    of each (``synthetic_copy``), and the copies' kinds: the same for the same pool and seed."""
    from curator import seeds

    rng = np.random.default_rng(seeds.derive(seed, stage="ssl-calibrate", shard=7))
    pos = np.sort(rng.choice(len(images), size=min(samples, len(images)), replace=False))
    copies, kinds = zip(*(synthetic_copy(np.asarray(images[r]), rng) for r in pos))
    return pos, Prepared([images[r] for r in pos] + list(copies), side=side), kinds


def copies_verifiable(q: Prepared, kinds) -> tuple[np.ndarray, np.ndarray]:
    """(each original's ``_detail``, ``verifiable``) of ``synthetic_draw``'s originals and copies."""
    m = len(kinds)
    detail = np.array([_detail(q.full[x]) for x in range(m)])
    return detail, verifiable(detail, [_detail(q.full[x + m] - q.full[x]) for x in range(m)], kinds)


def synthetic_scores(images, p: Prepared, *, seed: int = 0, samples: int = CALIBRATION_SAMPLES,
                     progress: bool = True) -> dict:
    """Scores of sampled pool images against one synthetic copy each (``synthetic_copy``): the
    positives of the calibration (``scores`` at ``SCORE_SIGMA``, ``score_table`` at each of
    ``SCORE_SIGMAS``), their chroma distances and coarse-grid correlations (the floor)."""
    pos, q, kinds = synthetic_draw(images, p.side, seed=seed, samples=samples)
    m = len(pos)
    a, b = np.arange(m), np.arange(m) + m
    grid = np.array([grid_best(q, x, y)[0] for x, y in zip(a, b)])
    table = score_pairs(q, a, b, progress=progress, desc="calibrating on synthetic copies", floor=-2.0,
                        sigmas=SCORE_SIGMAS)
    detail, flags = copies_verifiable(q, kinds)
    return {"positions": pos, "kinds": kinds, "grid": grid, "detail": detail, "verifiable": flags,
            "floor": float(min(GRID_FLOOR_MAX, np.quantile(grid, 0.01) - GRID_FLOOR_MARGIN)),
            "score_table": table, "scores": table[:, 0], "sigmas": SCORE_SIGMAS,
            "chroma": chroma_distance(q, a, b), "colour": colour_changes(q, a, b, -2.0)}


#: The calibration's trade: a missed copy against a false pair, in shares of the pool's copy pairs. The
#: issue's error budget (recall >= 0.95, precision >= 0.99) allows five times more of the first.
PRECISION_WEIGHT = 5.0
#: Copy rows per copy pair, to put the expected false rows in pairs: 2 where each original has one copy (the
#: most rows a pair can take), and every false row makes at least one false pair. Why: precision is counted
#: in pairs; the rule counted false rows per copy *row* and so allowed twice the false pairs it meant
#: (own-data 100k pool: expected 211 false rows for 20,220 copy rows, "1 %", measured pair precision 0.978).
ROWS_PER_COPY_PAIR = 2.0
#: The distinct side's tail is fitted on the rows between this quantile of those below the copies and
#: the copies' 1 % quantile (where the pool's own copies start to count), and on at least TAIL_MIN_ROWS
#: rows (at most the upper half): the nearest rows to where it is extrapolated (a tail fitted from the upper
#: quarter was too heavy where the distinct side ends short of 1, e.g. MNIST: threshold 0.998, combo recall 0.56).
TAIL_FROM = 0.95
TAIL_MIN_ROWS = 50


def _z(s) -> np.ndarray:
    """-log(1 - score): spreads out the scores near 1, where copies and close look-alikes sit."""
    return -np.log1p(-np.clip(np.asarray(s, np.float64), -1.0, 1.0 - 1e-9))


def _tail_scale(y: np.ndarray, width: float) -> float:
    """Scale of an exponential fitted to ``y`` in [0, width) (a truncated sample): the maximum-likelihood
    beta solves mean(y) = beta - width / (exp(width / beta) - 1). A flat sample (no decay seen) gives a
    scale of 10 x the width: a heavy tail, so a high threshold."""
    m = float(np.mean(y)) if len(y) else width / 2
    f = lambda b: b - width / np.expm1(min(width / b, 700.0)) - m  # noqa: E731  increasing in b
    lo, hi = width * 1e-4, width * 10.0
    if f(hi) < 0:
        return hi
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


#: Rounds of (tail fit, pool copy share) in ``calibrate``: the fit trims the pool's copies expected below the
#: copies' 1 % quantile (pi x n x 1 %), the share is read above it less the fit's distinct rows there.
PI_ROUNDS = 3


def _fit_tail(below: np.ndarray, u: float, top: float, pi: float, n: int, low: float = 1.0):
    """(scale, distinct rows above ``u`` by the fit, the window) of the exponential tail fitted to the rows
    of ``below`` (sorted z, all under ``top``) from ``u``, less the pool's copies expected at the window's
    top (1 % of pi x n: the synthetic copies' share under ``top``, times ``low``: ``_low_tail``)."""
    window = below[below >= u][: max(0, int((below >= u).sum()) - int(np.ceil(0.01 * low * pi * n)))]
    beta = _tail_scale(window - u, max(top - u, 1e-6))
    in_tail = len(window) / max(-np.expm1(-(top - u) / beta), 1e-12)
    return beta, in_tail, window


def _pool_copy_share(zb: np.ndarray, top: float, distinct_above_top: float, n: int) -> float:
    """Share of pool rows that have a copy in the pool: the rows whose best score is at or above ``top``
    (the synthetic copies' 1 % quantile: 99 % of copies lie there, whatever their kind) less the distinct
    rows the tail fit expects there, over 0.99. Read there and not above the copies' median: a pool's own
    copies can be easier than the synthetic ones (exact re-saves, lossless resizes: own-data 10k pool, 80 %
    of its copy rows above the synthetic median, so the median rule read 0.33 for 0.20 and made false rows
    look cheap to the threshold)."""
    return float(np.clip((float((zb >= top).sum()) - distinct_above_top) / (0.99 * n), 0.0, 1.0))


def _low_tail(zb: np.ndarray, zc: np.ndarray, top: float, median: float, pi: float, n: int, fitted) -> float:
    """How many of the pool's copies lie below the synthetic copies' 1 % quantile, as a share of the
    synthetic prediction (in [0, 1]): the pool's copy rows between that quantile and the synthetic median
    (rows there less the fitted distinct ones) over the synthetic copies' share there (0.49 of pi x n).
    Why: below ``top`` the rows are counted as distinct less the pool copies expected there, and the
    synthetic copies put 1 % of them there; a pool whose copies are easier has fewer, and the rows there
    are look-alikes (own-data 10k, alignment at 64 px: 0.53 of the prediction).
    Capped at 1: a pool with harder copies keeps the synthetic prediction."""
    band = float(((zb >= top) & (zb < median)).sum()) - max(0.0, float(fitted(top) - fitted(median)))
    expected = pi * n * float(np.mean((zc >= top) & (zc < median)))
    return float(np.clip(band / expected, 0.0, 1.0)) if expected > 0 else 1.0


def _heaviness(window: np.ndarray, u: float, top: float, beta: float, in_tail: float) -> float:
    """How much heavier the distinct tail is near the copies than the fitted exponential says (>= 1): the
    window's rows in the upper half of its range over the fit's count there. Why: the fit is extrapolated
    above ``top``, and a pool of alike-but-distinct pictures (smooth shapes on gradients under a wide blur)
    has a bump there that one exponential over the whole window misses (own-data 10k, alignment at 64 px:
    2.9 distinct rows expected above the chosen 0.9495, 47 there, precision 0.981)."""
    mid = (u + top) / 2
    fit = in_tail * (np.exp(-(mid - u) / beta) - np.exp(-(top - u) / beta))
    return max(1.0, float((window >= mid).sum()) / max(float(fit), 1e-9))


def _second_best(n: int, i, j, s, top: float) -> np.ndarray:
    """Each row's second-best score among its candidate pairs: -1 without two, and where its best and second
    partners score >= ``top`` with each other (a triangle of copy-like pairs: an original with two copies).
    Why: a row's second-best partner is rarely its copy, so these scores sample the distinct side where it
    reaches in among the copies, which the window's fit only extrapolates to (own-data 30k: a long tail of
    look-alikes above a steep bulk; the fit expected 12 distinct rows above 0.951, 320 were there, while the
    second-best rows there were 119). Where an original has copies of several kinds (MNIST pools of
    benchmarks/dedup_quality, 89 such rows) a copy's second-best is another copy; the triangle and the caller's
    rule (rows whose best is under the copies' median) take those out: MNIST's calibration is unchanged with
    both, its recall 0.72 with neither, 0.94 with the median rule alone."""
    if not len(i):
        return np.full(n, -1.0)
    rows, oth, v = np.concatenate([i, j]), np.concatenate([j, i]), np.concatenate([s, s])
    o = np.lexsort((-v, rows))
    rows, oth, v = rows[o], oth[o], v[o]
    start = np.searchsorted(rows, np.arange(n))
    count = np.searchsorted(rows, np.arange(n), side="right") - start
    last = len(v) - 1
    b, c = oth[np.minimum(start, last)], oth[np.minimum(start + 1, last)]
    keys = np.minimum(i, j) * np.int64(n) + np.maximum(i, j)
    order = np.argsort(keys)
    q = np.minimum(b, c) * np.int64(n) + np.maximum(b, c)
    at = np.clip(np.searchsorted(keys[order], q), 0, len(keys) - 1)
    bc = np.where(keys[order][at] == q, np.asarray(s)[order][at], -1.0)
    out = np.where(count > 1, v[np.minimum(start + 1, last)], -1.0)
    return np.where(bc >= top, -1.0, out)


def calibrate(synthetic: dict, n: int, pairs, scores) -> dict:
    """The verification threshold and chroma tolerance of this pool, from its own images.

    Copy side: ``synthetic_scores`` (copies of sampled pool images). Distinct side: every pool row's best
    score among its verified candidates (``pairs``, ``scores``) is a **mixture**: rows whose best is a
    real copy already in the pool, rows whose best is their nearest distinct sample. A score cannot say
    which (that is the threshold's job), and counting rows above a fence as copies hid the distinct
    side's upper tail (procedural RGB with 52 % of rows in copy groups: threshold 0.82, precision 0.88).
    So the distinct tail is **fitted where the copies are not and extrapolated**: in z = -log(1 - score),
    rows below the copies' 1 % quantile are almost all distinct; an exponential (the tail of a best-of-k
    score) is fitted to the top of them (from their ``TAIL_FROM`` quantile) and gives the expected count
    of distinct rows N(t) above any t. The pool's share of copy rows pi is read above the copies' 1 %
    quantile, less the fit's distinct rows there (``_pool_copy_share``; the fit and pi are solved in turn,
    starting from the rows above the copies' median / (pool x 0.5)), and at least the share of rows above
    the copies' median (those are copies: a heavy fitted tail must not explain them away). The threshold minimises
    missed synthetic copies + ``PRECISION_WEIGHT`` x N(t) / (pi x pool / ``ROWS_PER_COPY_PAIR``) (false rows
    per copy pair: precision is counted in pairs),
    over the synthetic copies' scores.
    The chroma tolerance: ``CHROMA_MARGIN`` x the largest chroma distance of the synthetic edits (so a
    tint within the copy ranges passes, a recolour does not); the colour tolerance the same on their
    ``colour_change`` (a small object recoloured).
    """
    from curator.dedup import MIN_CALIBRATION_SAMPLES

    c = np.asarray(synthetic["scores"], np.float64)
    i, j = np.asarray(pairs[0], np.int64), np.asarray(pairs[1], np.int64)
    sc = np.asarray(scores, np.float64)
    best = np.full(n, -1.0)
    np.maximum.at(best, i, sc)
    np.maximum.at(best, j, sc)
    if len(c) < MIN_CALIBRATION_SAMPLES or n < MIN_CALIBRATION_SAMPLES:
        raise ValidationError(f"copyverify.calibrate: {min(len(c), n)} samples; the calibration needs at least "
                              f"{MIN_CALIBRATION_SAMPLES}: add images, or pass --threshold")
    if not (np.isfinite(c).all() and np.isfinite(best).all()):
        raise ValidationError("copyverify.calibrate: a pair score is NaN or infinite; check the images")
    zc, zb = np.sort(_z(c)), np.sort(_z(best))
    median = float(np.median(zc))
    # the window's top: the copies' 1 % quantile without those the score could not verify (``verifiable``)
    # and did not (below that quantile of the others); they still count as missed copies
    ver = np.asarray(synthetic.get("verifiable", np.ones(len(c), bool)), bool)
    ver = ver | (_z(c) >= np.quantile(_z(c[ver]), 0.01)) if ver.sum() >= MIN_CALIBRATION_SAMPLES \
        else np.ones(len(c), bool)
    top = float(np.quantile(_z(c[ver]), 0.01))
    below = zb[zb < top]
    # the window: the top TAIL_FROM share of those rows, at least TAIL_MIN_ROWS, at most the upper half (a
    # best-of-k score decays only above its mode: a small pool's window must not reach into the body)
    size = min(max(TAIL_MIN_ROWS, int(np.ceil((1 - TAIL_FROM) * len(below)))), (len(below) + 1) // 2)
    u = float(below[-size]) if size else top
    above_median = float((zb >= median).mean())  # rows there are copies (distinct rows do not reach)
    pi = float(min(1.0, above_median / max(float((zc >= median).mean()), 1e-9)))
    for _ in range(PI_ROUNDS):
        beta, in_tail, window = _fit_tail(below, u, top, pi, n)
        pi = max(above_median, _pool_copy_share(zb, top, in_tail * np.exp(-(top - u) / beta), n))
    beta, in_tail, window = _fit_tail(below, u, top, pi, n)
    low = _low_tail(zb, zc, top, median, pi, n, lambda z: in_tail * np.exp(-(z - u) / beta))
    beta, in_tail, window = _fit_tail(below, u, top, pi, n, low)

    heavy = _heaviness(window, u, top, beta, in_tail)
    in_tail *= heavy

    def copy_share_below(z):  # the synthetic copies' share below z, read between its samples (linear)
        return np.interp(z, zc, np.arange(len(zc)) / len(zc))

    # the distinct tail above the window, also read from a sample that reaches there without the pool's copies:
    # the rows' second-best scores (``_second_best``; rows whose best is under the copies' median), scaled by
    # their ratio to the window's rows where both are counted
    z2 = np.sort(_z(_second_best(n, i, j, sc, float(-np.expm1(-top))))[_z(best) < median])
    in_window2 = float(((z2 >= u) & (z2 < top)).sum())
    rho = len(window) / in_window2 if in_window2 >= TAIL_MIN_ROWS else 0.0

    def distinct_above(z):  # expected distinct rows scoring >= z: fitted above ``top``; below it counted,
        fitted = in_tail * np.exp(-(np.maximum(z, top) - u) / beta)  # less the pool's copies expected there
        fitted = np.maximum(fitted, rho * (len(z2) - np.searchsorted(z2, np.maximum(z, top), side="left")))
        counted = len(below) - np.searchsorted(below, np.minimum(z, top), side="left")
        counted = np.maximum(0.0, counted - low * pi * n * np.maximum(0.0, copy_share_below(top) - copy_share_below(z)))
        return np.where(z < top, counted + fitted, fitted)

    # thresholds: at each synthetic copy, and just above each row (a gap's lower edge)
    cand = np.unique(np.concatenate([zc, np.nextafter(zb[(zb >= zc[0]) & (zb < zc[-1])], np.inf)]))
    missed = copy_share_below(cand)
    false_rows = distinct_above(cand)
    copy_pairs = pi * n / ROWS_PER_COPY_PAIR
    cost = missed + PRECISION_WEIGHT * false_rows / max(copy_pairs, 1.0)
    k = int(np.argmin(cost))
    t = float(-np.expm1(-cand[k]))
    q = (0.0, 0.01, 0.05, 0.5)
    return {
        "threshold": round(t, 6), "method": METHOD,
        "rule": (f"min(missed synthetic copies + {PRECISION_WEIGHT:g} x distinct rows above t / copy pairs), "
                 "distinct tail fitted below the copies in -log(1 - score) and extrapolated"),
        "samples": int(len(c)), "rows": int(n), "pool_copy_share": round(pi, 4),
        "tail": {"from": round(float(-np.expm1(-u)), 6), "to": round(float(-np.expm1(-top)), 6),
                 "rows": int(len(window)), "scale": round(float(beta), 4)},
        "copy_similarity": {f"q{int(p * 100):02d}": float(np.quantile(c, p)) for p in q},
        "neighbour_similarity": {f"q{int(p * 100):02d}": float(np.quantile(best, p)) for p in (0.5, 0.95, 0.99, 1.0)},
        "pool_copies_below_share": round(low, 4), "tail_heaviness": round(heavy, 3), "second_best_ratio": round(rho, 3),
        "unverified_copies_ignored": int((~ver).sum()),
        "expected_missed": float(missed[k]), "expected_false_rows": round(float(false_rows[k]), 3),
        "expected_cost": float(cost[k]),
        "grid_floor": round(synthetic["floor"], 4),
        "chroma_tolerance": float(CHROMA_MARGIN * max(float(synthetic["chroma"].max(initial=0.0)), 1e-3)),
        "colour_tolerance": float(CHROMA_MARGIN * max(float(np.max(synthetic.get("colour", 0.0), initial=0.0)), 1e-3)),
        "copy_kinds": {k: int(sum(1 for x in synthetic["kinds"] if x == k)) for k in sorted(set(synthetic["kinds"]))},
    }


#: The local level (``row_levels``): this quantile of a row's candidate scores, and the weights it is taken
#: out with (``relative``), the calibration choosing one (0: the plain score).
LEVEL_QUANTILE = 0.1
LEVEL_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def row_levels(n: int, pairs, scores) -> np.ndarray:
    """Per row, the ``LEVEL_QUANTILE`` quantile of -log(1 - score) over its candidate pairs (0 without any):
    how alike its nearest *other* samples are. A copy is rare among a row's ~10 candidates, so a low
    quantile reads the distinct neighbours: high for a plain "1" among thousands of "1"s, low for a
    digit of an unusual shape."""
    i, j = np.asarray(pairs[0], np.int64), np.asarray(pairs[1], np.int64)
    out = np.zeros(n)
    if not len(i):
        return out
    z = _z(scores)
    rows, vals = np.concatenate([i, j]), np.concatenate([z, z])
    order = np.lexsort((vals, rows))
    rows, vals = rows[order], vals[order]
    start = np.searchsorted(rows, np.arange(n))
    count = np.searchsorted(rows, np.arange(n), side="right") - start
    pos = LEVEL_QUANTILE * np.maximum(count - 1, 0)  # numpy's linear quantile, per row
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(count - 1, 0))
    last = len(vals) - 1
    v_lo, v_hi = vals[np.minimum(start + lo, last)], vals[np.minimum(start + hi, last)]
    out = v_lo + (pos - lo) * (v_hi - v_lo)
    out[count == 0] = 0.0
    return out


def relative(scores, level, weight: float) -> np.ndarray:
    """``scores`` with ``weight`` x the pair's local level taken out, in -log(1 - score), mapped back:
    1 - exp(-(z - weight x level)). A pair is a copy when it is far more alike than its rows' other
    neighbours (the ratio test of feature matching, Lowe 2004): two "1"s at 0.996 among "1"s at 0.99 are
    not, a re-compressed "9" at 0.993 among "9"s at 0.95 is."""
    return -np.expm1(-(_z(scores) - weight * np.asarray(level, np.float64)))


def scores_tried(synthetic: dict, n: int, pairs, table):
    """Each score ``calibrate_score`` chooses among, in its order: (blur, level weight, the pair scores, the
    synthetic copies' scores), for each blur of ``SCORE_SIGMAS`` (``table``'s columns, ``synthetic
    ['score_table']``'s) and each weight of ``LEVEL_WEIGHTS`` on the local level."""
    i, j = np.asarray(pairs[0], np.int64), np.asarray(pairs[1], np.int64)
    table = np.asarray(table, np.float64).reshape(len(i), -1)
    syn_table = np.asarray(synthetic["score_table"], np.float64)
    sigmas = tuple(synthetic.get("sigmas", SCORE_SIGMAS))[: table.shape[1]]
    for k, sigma in enumerate(sigmas):
        level = row_levels(n, (i, j), table[:, k])
        pair_level, syn_level = (level[i] + level[j]) / 2, level[np.asarray(synthetic["positions"])]
        for w in LEVEL_WEIGHTS:
            yield (sigma, w, relative(table[:, k], pair_level, w) if w else table[:, k],
                   relative(syn_table[:, k], syn_level, w) if w else syn_table[:, k])


def calibrate_score(synthetic: dict, n: int, pairs, table) -> tuple[dict, np.ndarray]:
    """Choose the score as well as its threshold: for each score of ``scores_tried`` (three blurs, each
    with five weights on the local level), ``calibrate`` and its expected cost (missed synthetic copies +
    ``PRECISION_WEIGHT`` x expected false rows per copy pair, both read from this pool); the cheapest wins
    (ties: the plainer score). Returns the calibration (with ``score``: the blur and weight chosen, and
    ``scores_tried``) and the chosen pair scores."""
    best, tried = None, []
    for sigma, w, s, c in scores_tried(synthetic, n, pairs, table):
        cal = calibrate({**synthetic, "scores": c}, n, pairs, s)
        tried.append({"sigma": sigma, "level_weight": w, "threshold": cal["threshold"],
                      "expected_cost": round(cal["expected_cost"], 5)})
        if best is None or cal["expected_cost"] < best[0]["expected_cost"]:
            best = (cal, s, sigma, w)
    cal, s, sigma, w = best
    cal["score"] = {"sigma": float(sigma), "level_weight": float(w), "level_quantile": LEVEL_QUANTILE}
    cal["scores_tried"] = tried
    return cal, s


def chosen_synthetic(synthetic: dict, n: int, pairs, table, score: dict) -> dict:
    """``synthetic`` with its ``scores`` on the score ``calibrate_score`` chose (``score``: blur and level
    weight): what a further calibration on a part of the pool (``grey_thresholds``) must compare with."""
    i, j = np.asarray(pairs[0], np.int64), np.asarray(pairs[1], np.int64)
    table = np.asarray(table, np.float64).reshape(len(i), -1)
    syn_table = np.asarray(synthetic["score_table"], np.float64)
    sigmas = tuple(synthetic.get("sigmas", SCORE_SIGMAS))[: table.shape[1]]
    k, w = sigmas.index(score["sigma"]), score["level_weight"]
    if not w:
        return {**synthetic, "scores": syn_table[:, k]}
    level = row_levels(n, (i, j), table[:, k])
    return {**synthetic, "scores": relative(syn_table[:, k], level[np.asarray(synthetic["positions"])], w)}


def _cpu_s() -> float:
    """CPU seconds of this process and its reaped children (the scoring processes)."""
    import os

    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


#: A row is grey when its mean chroma is below this (a quarter of a grey level in [0, 1]): decoded grey
#: images, promoted to three equal channels, have exactly 0.
GREY_CHROMA = 1e-3


def grey_thresholds(p, i, j, s, synthetic: dict, threshold: float):
    """Per-pair thresholds: ``threshold`` (the pool's), except for pairs of two grey rows, which get the
    threshold calibrated on the grey rows alone (their pairs among the candidates; the copy side is the
    pool's synthetic copies) where it is higher: never looser, as such a pair has less evidence. Why: the chroma check, which keeps colour look-alikes apart, says nothing
    between two grey images, so their distinct tail is heavier than the pool's, and a threshold fitted on
    a mostly colour pool let them through (own-data 10k pool: 5.7 % grey rows, 6 of 15 false pairs). Also
    the pool's share of copies may differ between the two. A pool all grey or all colour, or with fewer
    grey rows than a calibration needs, keeps one threshold. Returns (thresholds, the grey calibration's
    summary or None)."""
    from curator.dedup import MIN_CALIBRATION_SAMPLES

    grey = np.linalg.norm(np.asarray(p.chroma), axis=-1) <= GREY_CHROMA
    both = grey[i] & grey[j]
    out = np.full(len(i), float(threshold))
    rows = np.flatnonzero(grey)
    if grey.all() or len(rows) < MIN_CALIBRATION_SAMPLES or not both.any():
        return out, None
    at = np.full(len(grey), -1, np.int64)
    at[rows] = np.arange(len(rows))
    cal = calibrate(synthetic, len(rows), (at[i[both]], at[j[both]]), s[both])
    out[both] = max(float(threshold), cal["threshold"])
    return out, {"applied": float(out[both][0]),
                 **{k: cal[k] for k in ("threshold", "rows", "pool_copy_share", "expected_false_rows", "expected_missed")}}


# -- the whole pass ------------------------------------------------------------------------------

def find_copies(images, threshold: float | None = None, *, hashes=None, labeled=None, scores=None,
                k: int = DEFAULT_K, embeddings=None, seed: int = 0, progress: bool = True,
                chroma_tolerance: float | None = None, workers: int = 1, record: dict | None = None,
                checkpoint=None):
    """Groups of copies among ``images`` (a sequence of uint8 arrays), representative first, as
    ``curator.dedup.find_duplicates`` returns them, and an info dict (method, threshold, calibration,
    pairs verified, pairs per second). ``threshold`` None: calibrated on the pool (``calibrate``).
    ``record``: a dict filled with what the groups were made from (candidate pairs ``i``/``j``, the raw
    score ``table``, the chosen score ``s``, ``colour``, ``keep``, the rows' ``row_chroma``, the
    ``synthetic`` copies), so a benchmark can re-group offline without scoring again. ``checkpoint``: a
    folder that keeps the candidate pairs and each block of scored pairs as they come, so a stopped run
    started again with the same pool and settings scores only what was left (``curator.checkpoint``); it
    is removed when the groups are made."""
    from curator import coldstart
    from curator.dedup import check_threshold, find_duplicates

    given = threshold is not None
    if given:
        threshold = check_threshold(threshold, caller="find_copies")
    n = len(images)
    if n == 0:
        from curator.exceptions import EmptyPoolError

        raise EmptyPoolError("find_copies: no images; nothing to de-duplicate")
    E = _embed(images)[0] if embeddings is None else embeddings
    ck = None
    if checkpoint is not None:
        from curator.checkpoint import Checkpoint

        ck = Checkpoint(checkpoint, {"method": METHOD, "code": _code_digest(), "n": n, "k": int(k), "seed": int(seed),
                                     "pool": _pool_digest(images, hashes), "embeddings": _digest(E),
                                     "threshold": threshold, "chroma_tolerance": chroma_tolerance})
    i, j = candidates(images, k, embeddings=E) if ck is None else \
        ck.arrays("candidates", lambda: candidates(images, k, embeddings=E))
    p = prepare_pool(images, progress=progress)  # held, or by chunks into a scratch file (StoredPrepared)
    from curator.dedup import MIN_CALIBRATION_SAMPLES

    calibrating = threshold is None or (chroma_tolerance is None and n >= MIN_CALIBRATION_SAMPLES)
    if chroma_tolerance is None and not calibrating:
        chroma_tolerance = DEFAULT_CHROMA_TOLERANCE

    if calibrating and n < MIN_CALIBRATION_SAMPLES:
        raise ValidationError(f"find_copies: {n} images; calibrating a threshold needs at least "
                              f"{MIN_CALIBRATION_SAMPLES} (a pool that small has no distribution to read it from): "
                              "add images, or pass --threshold")
    synthetic = synthetic_scores(images, p, seed=seed, progress=progress) if calibrating else None
    floor = synthetic["floor"] if synthetic else GRID_FLOOR
    choosing = threshold is None  # a given threshold is one of the plain score (SCORE_SIGMA, no level)
    t0, c0 = time.time(), _cpu_s()
    s = score_pairs(p, i, j, progress=progress, floor=floor, sigmas=SCORE_SIGMAS if choosing else None,
                    workers=workers, checkpoint=ck)
    wall, cpu = time.time() - t0, _cpu_s() - c0
    calibration = None
    tol = chroma_tolerance
    colour = np.zeros(len(i))
    if calibrating:
        table = s
        calibration, s = calibrate_score(synthetic, n, (i, j), table) if choosing else \
            (calibrate(synthetic, n, (i, j), table), table)
        # a pair whose colour changed locally (a recoloured object) is no copy at any score: checked
        # from the tail's start up (the rows the threshold is read from), and out of the calibration
        t_col = calibration["colour_tolerance"]
        checked = s >= min(calibration["tail"]["from"], calibration["threshold"] if threshold is None else threshold)
        colour[checked] = colour_changes(p, i[checked], j[checked], floor)
        if choosing and (colour > t_col).any():
            table = np.where((colour > t_col)[:, None], -1.0, table)
            calibration, s = calibrate_score(synthetic, n, (i, j), table)
            more = (s >= calibration["threshold"]) & ~checked
            colour[more] = colour_changes(p, i[more], j[more], floor)
        calibration["colour_excluded_pairs"] = int((colour > t_col).sum())
        calibration["seed"] = int(seed)
        threshold = calibration["threshold"] if threshold is None else threshold
        tol = calibration["chroma_tolerance"] if tol is None else tol
    pair_t = np.full(len(i), float(threshold))
    if calibrating and not given:
        pair_t, calibration["grey"] = grey_thresholds(
            p, i, j, s, chosen_synthetic(synthetic, n, (i, j), table, calibration["score"]), threshold)
    colour_ok = chroma_distance(p, i, j) <= tol
    if calibration is not None:
        colour_ok &= colour <= calibration["colour_tolerance"]
    keep = (s >= pair_t) & colour_ok
    if record is not None:
        record.update(i=i, j=j, table=table if calibrating else s, s=s, colour=colour, keep=keep, pair_t=pair_t,
                      row_chroma=np.asarray(p.chroma), synthetic=synthetic)
    # every candidate pair's verdict as a margin over its threshold (-inf: another colour), so a
    # look-alike that passes against one copy but not the original does not chain into the group
    margin = np.where(colour_ok & ~np.isnan(s), s - pair_t, -np.inf)
    groups, info = find_duplicates(E, threshold, hashes=hashes, labeled=labeled, scores=scores, seed=seed,
                                   return_info=True, pairs=(i[keep], j[keep]), compared=(i, j, margin))
    if ck is not None:
        ck.clear()
    info.update(method=METHOD, calibration=calibration, chroma_tolerance=float(tol), candidate_pairs=int(len(i)),
                verified_pairs=int(keep.sum()), verify_wall_s=round(wall, 3), verify_cpu_s=round(cpu, 3),
                pairs_per_cpu_s=round(len(i) / cpu, 1) if cpu > 0 else None, k=int(k), grid_floor=round(floor, 4))
    return groups, info
