"""The one FAISS index chooser, used by novelty and by de-duplication.

Vectors are L2-normalised float32, so inner product is cosine similarity.
Three tiers, chosen by size:

* up to ``EXACT_SEARCH_MAX_N`` base vectors: exact search (``IndexFlatIP``),
  for k nearest neighbours and for range search alike;
* above it: k nearest neighbours through an inverted file (``IndexIVFFlat``),
  and range search (the duplicate self-join) through *partitioned search*:
  spherical k-means cells, each base vector stored in its nearest cell, each
  query probing every cell that may hold a vector within the radius (see
  ``probe_cells``), and an exact search inside each probed cell (dense
  inner-product blocks; FAISS k-means and FAISS assignment around them).

* above ``STREAM_MIN_N``: the *streamed* tier, for bases that must not be
  copied into memory (a memory-mapped ``.npy`` of 10M x 128): the same
  partitioned range search, but ``x`` is read by chunks (assignment) and by
  cells (the search), rows are normalised as they are read, only (row, cell)
  probe lists and candidate pairs are held, and every candidate pair is
  re-ranked with exact float64 inner products (``pair_sims``) before the
  threshold is applied; kNN over such a base uses a compressed index
  (IVF-PQ, codes only in memory) whose candidates are re-ranked exactly from
  ``x``; queries beyond it are searched by chunks.

Partitioned range search is exact for every query whose qualifying cells fit
in ``MAX_PROBES``; the few that do not are counted in ``info["truncated"]``,
so a caller knows how far from exact a run may be. The recall of both
approximate paths against exact search is measured in ``tests/test_index.py``
and, at scale, in ``benchmarks/dedup_scale``.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

log = logging.getLogger(__name__)

#: Largest base searched exactly. A flat self-join costs n^2 d: on the 2-core
#: benchmark VM, idle, 0.20 s at 10,000 x 128 (partitioned 0.06 s), 0.62 s at
#: 20,000 (0.13 s), 2.4 s at 40,000 (0.21 s); under heavy load 3.2 s, 10.6 s
#: and 45 s. Up to 10,000 the exact search stays well under a second even on a
#: loaded machine, so exactness (no probe limit, nothing can be missed) is kept
#: there although the partitioned search is faster.
#: Measured by ``benchmarks/dedup_scale/bench.py --crossover`` (crossover.jsonl).
EXACT_SEARCH_MAX_N = 10_000

#: Partitioned range search: cells = CELLS_PER_SQRT_N * sqrt(n). Balances the
#: cost of assigning n vectors to the cells (n * cells * d) against searching
#: inside cells (about n * probes * n / cells * d), which are equal at
#: cells = sqrt(probes * n); with the 1.1 probes per vector measured at 1M
#: (``benchmarks/dedup_scale``, threshold 0.99) that is about 1.0 * sqrt(n).
#: Set from this cost model, not tuned further.
CELLS_PER_SQRT_N = 1.0

#: Most cells one query probes. At 8, 727 of 1,000,000 queries (0.07 %) were
#: truncated on the clustered 1M benchmark pool at threshold 0.99 and no
#: planted pair was missed (``benchmarks/dedup_scale``, results.jsonl).
MAX_PROBES = 8

#: k-means training: sample size per cell and iterations. A rough clustering
#: is enough (cells only need to be compact; the search inside them is exact,
#: and the probe bound holds for any centroids): k-means took 1.4 s of a 25 s
#: 200,000-row self-join when profiled. 40 is FAISS's minimum without warning.
TRAIN_POINTS_PER_CELL = 40
KMEANS_ITERATIONS = 8

#: Inverted-file kNN above EXACT_SEARCH_MAX_N: nlist = IVF_LISTS_PER_SQRT_N *
#: sqrt(n), IVF_NPROBE lists probed. recall@10 >= 0.95 on clustered data in
#: ``tests/test_index.py`` (structureless noise gets far less: use exact there).
IVF_LISTS_PER_SQRT_N = 2.0
IVF_NPROBE = 16

#: Tolerance on similarities: float32 inner products of identical unit vectors
#: may come out a little under 1, and a threshold of exactly 1 must match them.
SIM_EPS = 1e-5


#: Largest base (or query set) handled in memory; above it the streamed tier
#: reads ``x`` by chunks of ``STREAM_CHUNK`` rows and never holds a copy of it.
#: The in-memory tier holds a float32 copy of x, the normalised copy dedup
#: makes and int64 (n, 8) probe tables: 1.83 GiB peak for a 1M round
#: (``benchmarks/dedup_scale``), growing about linearly, so 8 GiB is reached
#: near 4M. The streamed tier's 1M self-join, measured against the in-memory
#: one on the same pool (``benchmarks/scale_out``, results.jsonl,
#: "tier_compare"): 50.4 vs 44.4 CPU s, the same 116,152 pairs. It is not
#: faster, so the in-memory tier (results identical to the past) is kept up
#: to 2M, where it still needs under 4 GiB.
STREAM_MIN_N = 2_000_000

#: Most rows read at once by the streamed tier; a chunk is also at most ``STREAM_CHUNK_BYTES`` of
#: float32 (``chunk_rows``): 2^18 rows are 128 MiB at d = 128 but 384 MiB at the cold-start's
#: d = 384, a whole 100k pool copied and normalised at once (benchmarks/own_data).
STREAM_CHUNK = 1 << 18
STREAM_CHUNK_BYTES = 128 << 20


def chunk_rows(d: int) -> int:
    """Rows of one streamed chunk of width ``d``: at most ``STREAM_CHUNK`` rows and
    ``STREAM_CHUNK_BYTES`` of float32, so the memory a chunk takes does not grow with ``d``."""
    return int(max(1, min(STREAM_CHUNK, STREAM_CHUNK_BYTES // (4 * max(1, int(d))))))

#: Streamed kNN (compressed index): at most PQ_M sub-quantizers of 8 bits (at
#: least 4 dimensions each: 32 bytes a row at d = 128, 16x less than float32),
#: and how many candidates per wanted neighbour are re-ranked exactly from ``x``.
PQ_M = 32
PQ_RERANK = 8


def _faiss():
    import faiss

    return faiss


def as_float32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def normalize(x: np.ndarray, *, copy: bool = True) -> np.ndarray:
    """Rows scaled to unit length (float32); zero rows are left as they are."""
    x = np.array(x, dtype=np.float32, copy=True) if copy else as_float32(x)
    norms = np.linalg.norm(x, axis=1)
    norms[norms == 0] = 1.0
    x /= norms[:, None]
    return x


def is_exact(n: int, exact: bool | None = None) -> bool:
    """Whether a base of ``n`` vectors is searched exactly (``exact`` forces it)."""
    return n <= EXACT_SEARCH_MAX_N if exact is None else bool(exact)


def build_index(base: np.ndarray, *, exact: bool | None = None, seed: int = 0):
    """An index over ``base`` (n, d) for inner-product kNN: flat when small, IVF above."""
    faiss = _faiss()
    base = as_float32(base)
    n, d = base.shape
    if is_exact(n, exact):
        index = faiss.IndexFlatIP(d)
        index.add(base)
        return index
    nlist = max(1, min(n // 8, int(IVF_LISTS_PER_SQRT_N * math.sqrt(n))))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.cp.niter = KMEANS_ITERATIONS
    train = _sample(n, nlist * TRAIN_POINTS_PER_CELL, seed)
    index.train(base[train])
    index.add(base)
    index.nprobe = min(IVF_NPROBE, nlist)
    return index


def search(
    base: np.ndarray, queries: np.ndarray, k: int, *, exact: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner-product neighbours of ``queries`` in ``base``: (similarities, positions).

    Positions are -1 (similarity -inf) where an approximate index found fewer
    than ``k`` neighbours.
    """
    k = min(k, len(base))
    if is_streamed(len(base)) and not exact:
        return _compressed_search(base, queries, k)
    if is_streamed(len(queries)) and is_exact(len(base), exact):
        return _flat_knn_chunks(as_float32(base), queries, k)
    index = build_index(base, exact=exact)
    if is_streamed(len(queries)):
        step = chunk_rows(queries.shape[1])
        parts = [index.search(_read(queries, slice(s, s + step)), k) for s in range(0, len(queries), step)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    return index.search(as_float32(queries), k)


def searcher(base: np.ndarray, *, exact: bool | None = None):
    """``search`` against one ``base`` for several query sets or chunks of one: a function ``(queries, k)
    -> (similarities, positions)`` giving what ``search(base, queries, k)`` gives, the index built once.
    Why: queries read a chunk at a time (``curator.copyverify``'s rotated thumbnails, spilled to a file)
    would otherwise rebuild, and an IVF re-train, the index per chunk."""
    if is_streamed(len(base)) and not exact:
        built = _compressed_index(base)
        return lambda queries, k: _compressed_query(built, base, queries, min(int(k), len(base)))
    index = build_index(base, exact=exact)

    def run(queries, k: int):
        return index.search(as_float32(queries), min(int(k), len(base)))

    return run


def _flat_knn_chunks(base, queries, k: int):
    """Exact kNN of a streamed query set (read by chunks, normalised as read) in a small base:
    one matrix product per block of queries into a reused buffer, then the ``k`` largest of each
    row, in order (equal similarities: the lower position first). FAISS's flat search took
    2.5 CPU s a chunk of 262,144 queries against 1,000 rows where this takes 1.8 (the novelty
    pass of the 10M round)."""
    n = len(queries)
    sims_out = np.empty((n, k), np.float32)
    pos_out = np.empty((n, k), np.int64)
    buf = np.empty((min(_ASSIGN_BLOCK, n), len(base)), np.float32)
    step = chunk_rows(queries.shape[1])
    for s in range(0, n, step):
        chunk = _read(queries, slice(s, s + step))
        for b in range(0, len(chunk), _ASSIGN_BLOCK):
            blk = chunk[b:b + _ASSIGN_BLOCK]
            sim = np.matmul(blk, base.T, out=buf[:len(blk)])
            if k == 1:
                top = sim.argmax(axis=1)[:, None]
            else:
                top = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < sim.shape[1] else \
                    np.broadcast_to(np.arange(sim.shape[1]), sim.shape).copy()
                top.sort(axis=1)  # ties: the lower position first, after the stable sort below
                top = np.take_along_axis(top, np.argsort(-np.take_along_axis(sim, top, 1), axis=1,
                                                         kind="stable"), 1)
            rows = slice(s + b, s + b + len(blk))
            sims_out[rows] = np.take_along_axis(sim, top, 1)
            pos_out[rows] = top
    return sims_out, pos_out


# --------------------------------------------------------------------------- range search


def _sample(n: int, size: int, seed: int) -> np.ndarray:
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def _flat_range(base: np.ndarray, queries: np.ndarray, t: float):
    """FAISS exact range search: (query rows, base rows, similarities)."""
    faiss = _faiss()
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    lims, sims, ids = index.range_search(queries, t)
    rows = np.repeat(np.arange(len(queries), dtype=np.int64), np.diff(lims).astype(np.int64))
    return rows, ids.astype(np.int64), sims


#: Most similarities held at once by one block of the in-cell search (16 MiB of float32). Under
#: glibc's largest dynamic mmap threshold (32 MiB), so the block's memory is reused from the heap;
#: 64 MiB blocks were mapped and unmapped each time, and the page faults took a third of the CPU
#: time of 8,000 x 3,000 blocks (2.4 of 6.3 CPU s, measured under load 10).
_BLOCK_ELEMENTS = 1 << 22


def _above(block: np.ndarray, t: float):
    """(rows, columns) of the entries of a 2-D ``block`` >= ``t``, in row-major order, like
    ``np.nonzero(block >= t)`` at a seventh of its cost: numpy's 2-D ``nonzero`` spent as long
    per entry as the inner product that made it (113 against 15 ms for 8,192 x 3,130 entries)."""
    flat = np.flatnonzero(block >= t)
    return np.divmod(flat, block.shape[1])


def _block_range(base: np.ndarray, queries: np.ndarray, t: float):
    """Exact range search by dense inner-product blocks (BLAS).

    Inside a cell both sides are small (about sqrt(n) rows), where one matrix
    product and a comparison cost half the CPU of FAISS ``range_search``
    (measured on 900 x 450 x 128 blocks: 8 vs 18 ms CPU).
    """
    step = max(1, _BLOCK_ELEMENTS // max(1, len(base)))
    rows, cols, sims = [], [], []
    for start in range(0, len(queries), step):
        block = queries[start:start + step] @ base.T
        r, c = _above(block, t)
        rows.append(r + start)
        cols.append(c)
        sims.append(block[r, c])
    return np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64), np.concatenate(sims)


def probe_cells(
    sims: np.ndarray, cells: np.ndarray, gram: np.ndarray, threshold: float
) -> np.ndarray:
    """Which of each query's nearest cells may hold a vector within ``threshold``.

    For unit vectors a, b with cos(a, b) >= t, and b stored in its nearest cell
    c, for *every* other cell k: <a,m_k> - <a,m_c> = <a - b, m_k - m_c> +
    (<b,m_k> - <b,m_c>) <= |a - b| |m_k - m_c| <= sqrt(2 - 2t) |m_k - m_c|,
    because b is no nearer to m_k than to m_c. Each k gives a necessary
    condition for probing c, so c is probed only if it passes all of them for
    the P cells known (the nearest one, k = 0, was the only one checked before:
    this is tighter and still exact). The search is exact unless a query's
    last candidate still qualifies (it is then truncated).
    ``sims``, ``cells``: (n, P) similarities to and ids of the P nearest
    cells, nearest first; ``gram``: centroid inner products. Returns an (n, P) bool mask.
    """
    radius = math.sqrt(max(0.0, 2.0 - 2.0 * threshold))
    n, p = cells.shape
    valid = cells >= 0
    safe = np.where(valid, cells, 0)
    need = np.empty((n, p), bool)
    step = 1 << 15
    for s in range(0, n, step):
        c = safe[s:s + step]
        sm = sims[s:s + step].astype(np.float32)
        dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * gram[c[:, :, None], c[:, None, :]]))  # [row, k, c]
        with np.errstate(invalid="ignore"):  # -inf - -inf between two padded (-1) cells
            gap = sm[:, :, None] - sm[:, None, :]  # <a,m_k> - <a,m_c>
            need[s:s + step] = (gap <= radius * dist + SIM_EPS).all(axis=1)
    need &= valid
    need[:, 0] = True
    return need


#: Kinds of entry in the streamed self-join's probe list (``self_join_probes``).
OWN, FULL, REVERSE = 0, 1, 2


def self_join_probes(need: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """What each row searches in a self-join: (n, P) int8, -1 nothing, ``OWN`` its own cell
    (searched once, as a triangle), ``FULL`` every row of a cell, ``REVERSE`` only a cell's
    *open* rows (``_nearest_cells``: those whose list of P cells may miss a cell they need).

    For a pair (a, b) with cos >= t, a in cell c_a < c_b of b, ``probe_cells`` holds for a
    probing c_b *and* for b probing c_a (a necessary condition on every true pair, seen
    from either row), so one side suffices: a row probes the listed cells above its own in
    full and those below only against their open rows. If a is not open it lists c_b and
    finds the pair; if a is open, b finds it through its reverse probe of c_a whenever b
    lists c_a. So a pair is missed only when neither row lists the other's cell, exactly
    as when both sides searched everything (and then both rows are open and counted), at
    about half the dense products across borders.
    """
    kind = np.full(need.shape, -1, np.int8)
    up = cells > cells[:, :1]
    kind[need & up] = FULL
    kind[need & ~up] = REVERSE
    kind[:, 0] = OWN
    return kind


def cell_plan(base, queries, t, *, self_join: bool, seed: int):
    """The partition of the partitioned range search: spherical k-means cells, each base vector in
    its nearest cell, each query probing every cell that may hold a vector within ``t``
    (``probe_cells``). Returns ([(base rows, query rows)] per non-empty cell, info); the cells
    are independent, so an executor may search them anywhere (``curator.integrations.ray``)."""
    faiss = _faiss()
    n, d = base.shape
    n_cells = max(1, min(n // 4, int(round(CELLS_PER_SQRT_N * math.sqrt(n)))))
    km = faiss.Kmeans(d, n_cells, niter=KMEANS_ITERATIONS, spherical=True, seed=seed,
                      max_points_per_centroid=256, verbose=False)
    km.train(base[_sample(n, n_cells * TRAIN_POINTS_PER_CELL, seed)])
    centroids = km.centroids
    gram = centroids @ centroids.T
    quant = faiss.IndexFlatIP(d)
    quant.add(centroids)
    probes = min(MAX_PROBES, n_cells)
    if self_join:
        q_sims, q_cells = quant.search(base, probes)
        home = q_cells[:, 0].copy()
    else:
        home = quant.search(base, 1)[1][:, 0]
        q_sims, q_cells = quant.search(queries, probes)
    need = probe_cells(q_sims, q_cells, gram, t)
    truncated = int(need[:, -1].sum()) if probes < n_cells else 0
    q_rows, q_cols = np.nonzero(need)
    probed = q_cells[q_rows, q_cols]
    del q_sims, q_cells, need, q_cols
    order = np.argsort(probed, kind="stable")
    q_rows, probed = q_rows[order], probed[order]
    q_bounds = np.searchsorted(probed, np.arange(n_cells + 1))
    b_order = np.argsort(home, kind="stable")
    b_bounds = np.searchsorted(home[b_order], np.arange(n_cells + 1))
    cells = []
    for c in range(n_cells):
        b_idx = b_order[b_bounds[c]:b_bounds[c + 1]]
        q_idx = q_rows[q_bounds[c]:q_bounds[c + 1]]
        if len(b_idx) and len(q_idx):
            cells.append((b_idx.astype(np.int64), q_idx.astype(np.int64)))
    info = {
        "index": "partitioned",
        "cells": n_cells,
        "max_probes": probes,
        "mean_probes": float(len(q_rows) / max(1, len(queries))),
        "truncated": truncated,
    }
    return cells, info


def _partitioned_range(base, queries, t, *, self_join: bool, seed: int):
    cells, info = cell_plan(base, queries, t, self_join=self_join, seed=seed)
    out_q, out_b, out_s = [], [], []
    for b_idx, q_idx in cells:
        r, b, s = _block_range(base[b_idx], queries[q_idx], t)
        out_q.append(q_idx[r])
        out_b.append(b_idx[b])
        out_s.append(s)
    if not out_q:
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty(0, np.float32), info
    return np.concatenate(out_q), np.concatenate(out_b), np.concatenate(out_s), info


def range_search(
    base: np.ndarray,
    queries: np.ndarray,
    threshold: float,
    *,
    exact: bool | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Every (query, base) pair with inner product >= ``threshold``.

    Returns (query positions, base positions, similarities, info); ``info``
    names the index used and, for partitioned search, how many queries were
    truncated (0 means the result equals exact search).
    """
    t = float(threshold) - SIM_EPS
    if len(base) == 0 or len(queries) == 0:
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty(0, np.float32), {"index": "flat", "truncated": 0}
    if is_streamed(len(base)) and not exact:
        return _streamed_range(base, queries, t, seed=seed)
    if is_streamed(len(queries)):
        return _chunked_queries_range(base, queries, t, exact=exact, seed=seed)
    return _in_memory_range(as_float32(base), as_float32(queries), t, exact=exact, seed=seed)


def _in_memory_range(base, queries, t, *, exact, seed):
    if is_exact(len(base), exact):
        q, b, s = _flat_range(base, queries, t)
        return q, b, s, {"index": "flat", "truncated": 0}
    return _partitioned_range(base, queries, t, self_join=False, seed=seed)


def self_pairs(
    x: np.ndarray, threshold: float, *, exact: bool | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Pairs i < j of rows of ``x`` with inner product >= ``threshold`` (the self-join).

    Returns (i, j, similarity, info) with each pair once, sorted by (i, j).
    """
    t = float(threshold) - SIM_EPS
    n = len(x)
    if n < 2:
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty(0, np.float32), {"index": "flat", "truncated": 0}
    if is_streamed(n) and not exact:
        return _streamed_range(x, None, t, seed=seed)
    x = as_float32(x)
    if is_exact(n, exact):
        q, b, s = _flat_range(x, x, t)
        info = {"index": "flat", "truncated": 0}
    else:
        q, b, s, info = _partitioned_range(x, x, t, self_join=True, seed=seed)
    keep = q != b
    q, b, s = q[keep], b[keep], s[keep]
    lo, hi = np.minimum(q, b), np.maximum(q, b)
    key, first = np.unique(lo * n + hi, return_index=True)
    return key // n, key % n, s[first], info


# --------------------------------------------------------------------------- streamed tier


def is_streamed(n: int) -> bool:
    """Whether ``n`` rows are read by chunks (the streamed tier) instead of copied into memory."""
    return n > STREAM_MIN_N


class RowsView:
    """Rows ``rows`` of ``x``, read only when indexed: a subset of a memory-mapped
    base without a copy of it (dedup searches one row per exact group)."""

    def __init__(self, x, rows):
        self.x = x
        self.rows = np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), x.shape[1])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        return self.x[self.rows[key]]


def release(x) -> None:
    """Drop the resident pages of a memory-mapped ``x`` (``np.load(..., mmap_mode="r")``, an embedding
    set's file) once it has been read: they are file pages the kernel would drop anyway, but while
    mapped they count in the process's RSS (147 MiB of 384-d vectors at 100k, on top of the index's
    own copy). A later read faults them back in from the file. Anything else: nothing done; nor for a
    copy-on-write map (``mode="c"``), whose changed pages exist only in memory."""
    import mmap

    while x is not None and not isinstance(x, np.memmap):  # a plain view of one (np.asarray) is its base's
        x = getattr(x, "base", None)
    m = getattr(x, "_mmap", None)
    if m is None or x.mode == "c" or not hasattr(m, "madvise"):
        return
    try:
        m.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):  # a closed map, or a kernel without it: the pages just stay
        pass


def take_rows(x, rows):
    """``x[rows]``: a copy up to ``STREAM_MIN_N`` rows (as before), a ``RowsView`` above it."""
    return RowsView(x, rows) if is_streamed(len(rows)) else x[rows]


def _read(x, key) -> np.ndarray:
    """Rows ``key`` (slice or positions) of ``x`` as unit float32 rows: a copy of those rows only."""
    rows = np.asarray(x[key])
    # positions give a fresh float32 copy already, normalised in place; a slice is a view of ``x``
    src = x.x if isinstance(x, RowsView) else x
    fresh = isinstance(key, np.ndarray) and rows.dtype == np.float32 and rows.flags.writeable \
        and rows.flags.c_contiguous and not np.may_share_memory(rows, src)
    return normalize(rows, copy=not fresh)


def _chunked_queries_range(base, queries, t, *, exact, seed):
    """A small base against a streamed query set: the in-memory search, one chunk of queries at a time."""
    base = as_float32(base)
    out_q, out_b, out_s, info = [], [], [], {}
    truncated = 0
    step = chunk_rows(queries.shape[1])
    for s in range(0, len(queries), step):
        q, b, sim, info = _in_memory_range(base, _read(queries, slice(s, s + step)), t,
                                           exact=exact, seed=seed)
        out_q.append(q + s)
        out_b.append(b)
        out_s.append(sim)
        truncated += info.get("truncated", 0)
    return (np.concatenate(out_q), np.concatenate(out_b), np.concatenate(out_s),
            {**info, "truncated": truncated, "query_chunks": len(out_q)})


#: Rows of one block of ``_nearest_cells``: its (rows x cells) similarities are computed by one
#: matrix product into a buffer reused for every block (8,192 x 3,130 float32 at 10M: 98 MiB).
#: On this VM a product of 4,096-16,384 rows against 3,130 centroids ran at 44-48 GFLOP per CPU
#: second, against 23 for FAISS's k = 8 flat search over the same rows (heap selection and its own
#: 4,096 x 1,024 blocks), which was most of the assignment's time at 10M.
_ASSIGN_BLOCK = 8192

#: Slack of the candidate filter in ``_nearest_cells`` over the ``probe_cells`` bound (whose own
#: tolerance is ``SIM_EPS``), so that float32 rounding never drops a cell the bound would keep.
_CANDIDATE_SLACK = 1e-4

#: Rows partially sorted at once in ``_nearest_cells`` (those with more candidates than probes):
#: ``argpartition`` returns int64 positions of every cell, 2,048 x 3,130 x 8 bytes = 49 MiB.
_PARTIAL_ROWS = 2048

#: Rows with more candidates than probes have them sorted (a sort of the candidates, cheap where
#: they are few: 41 a row of 3,130 cells at 10M) unless they exceed this fraction of the cells,
#: where a partial sort of the whole rows is cheaper (cells much coarser than the data's clusters:
#: a 400,000-row slice of the 10M pool, 632 cells, took 10.2 CPU s to assign sorting, 7.5 with FAISS).
_SORT_FRACTION = 0.125


def _nearest_cells(rows, centroids, gram, reach, threshold, probes, out=None):
    """The cells a unit row may need: (sims, cells, opened), sims and cells (n, probes), the
    nearest first (then nearest first where a row has more candidates than ``probes``, in cell
    order otherwise), padded with (-inf, -1); ``opened`` (n,) bool: rows whose list may miss a
    needed cell.

    A row needs cell c (``probe_cells``, k = the nearest cell c0) only if
    <a,m_c0> - <a,m_c> <= sqrt(2 - 2t) |m_c0 - m_c|, so only cells within
    sqrt(2 - 2t) * reach[c0] of the nearest (``reach``: a centroid's largest distance to another)
    are candidates; the list is the ``probes`` nearest of them, which are the first ``probes`` of
    a full k-nearest search wherever that list mattered (``probe_cells`` keeps the same cells:
    a cell it drops beyond the candidates fails the nearest-cell condition). A row is open when a
    candidate beyond its list passes that condition with its own |m_c0 - m_c| (not ``reach``):
    every cell a complete row needs is listed, which is what ``self_join_probes`` relies on.
    That is tighter than the first version's test (every unlisted cell taken as ``reach`` away:
    a third more open rows on the 10M pool) and still exact. Found by one matrix product, a
    comparison and a sort of the candidates of the rows with more than ``probes`` (a partial sort
    of those rows where the candidates are more than an eighth of the cells), not a
    k-nearest search (FAISS's heap selection ran at half the product's rate; a full sort of the
    candidates cost more than it saved where cells are much coarser than the data's clusters).
    """
    n = len(rows)
    n_cells = len(centroids)
    radius = math.sqrt(max(0.0, 2.0 - 2.0 * threshold))
    sims_out = np.full((n, probes), -np.inf, np.float32)
    cells_out = np.full((n, probes), -1, np.int32)
    opened = np.zeros(n, bool)
    for s in range(0, n, _ASSIGN_BLOCK):
        blk = rows[s:s + _ASSIGN_BLOCK]
        b = len(blk)
        sim = np.matmul(blk, centroids.T, out=None if out is None else out[:b])
        near = sim.argmax(axis=1)
        best = sim[np.arange(b), near]
        if probes == 1:
            sims_out[s:s + b, 0], cells_out[s:s + b, 0] = best, near
            continue
        floor = (best - (radius * reach[near] + _CANDIDATE_SLACK)).astype(np.float32)
        flat = np.flatnonzero(sim >= floor[:, None])  # row-major: rows ascending
        r, c = np.divmod(flat, n_cells)
        del flat
        count = np.bincount(r, minlength=b)
        few = count[r] <= probes  # rows whose candidates all fit: listed as found, nearest swapped first
        rf, cf = r[few], c[few]
        rank = np.arange(len(rf)) - np.searchsorted(rf, np.arange(b))[rf]
        at = np.flatnonzero(cf == near[rf])  # the nearest cell of each row, at rank k: swap with rank 0
        k = rank[at]
        rank[at - k] = k
        rank[at] = 0
        sims_out[s + rf, rank] = sim[rf, cf]
        cells_out[s + rf, rank] = cf
        rest = ~few
        rm_all, cm_all = r[rest], c[rest]
        many_all = np.flatnonzero(count > probes)  # the rest: their nearest ``probes`` listed
        if len(rm_all) < _SORT_FRACTION * len(many_all) * n_cells:  # few candidates: sort them
            v = sim[rm_all, cm_all]
            order = np.argsort(rm_all * 4.0 + (1.0 - v.astype(np.float64)), kind="stable")
            rm, cm, v = rm_all[order], cm_all[order], v[order]
            rank = np.arange(len(rm)) - np.searchsorted(rm, np.arange(b))[rm]
            keep = rank < probes
            sims_out[s + rm[keep], rank[keep]] = v[keep]
            cells_out[s + rm[keep], rank[keep]] = cm[keep]
            rm, cm, v = rm[~keep], cm[~keep], v[~keep]
            dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * gram[near[rm], cm]))
            opened[s + rm[best[rm] - v <= radius * dist + SIM_EPS + _CANDIDATE_SLACK]] = True
            many_all = many_all[:0]
        for m0 in range(0, len(many_all), _PARTIAL_ROWS):  # else a partial sort of their rows, by parts
            many = many_all[m0:m0 + _PARTIAL_ROWS]
            sub = sim[many]
            top = np.argpartition(-sub, probes - 1, axis=1)[:, :probes]
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(sub, top, 1), axis=1,
                                                     kind="stable"), 1)
            sims_out[s + many] = np.take_along_axis(sub, top, 1)
            cells_out[s + many] = top
            listed = np.zeros(sub.shape, bool)
            np.put_along_axis(listed, top, True, 1)
            # candidates of those rows left off their list: open if one passes the nearest-cell bound
            lo, hi = np.searchsorted(rm_all, [many[0], many[-1] + 1])
            rm, cm = rm_all[lo:hi], cm_all[lo:hi]
            where = np.searchsorted(many, rm)
            off = ~listed[where, cm]
            rm, cm, where = rm[off], cm[off], where[off]
            dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * gram[near[rm], cm]))
            passes = best[rm] - sub[where, cm] <= radius * dist + SIM_EPS + _CANDIDATE_SLACK
            opened[s + rm[passes]] = True
    return sims_out, cells_out, opened


def _assign(centroids, x, probes, gram, t, n_cells, *, keep_probes: bool, self_join: bool = False):
    """One pass over ``x`` by chunks: nearest cell of every row, row norms, and (for queries)
    the (row, cell, kind) probe list by the ``probe_cells`` bound (kinds: ``self_join_probes``
    in a self-join, else all ``FULL``), which rows are open (``_nearest_cells``) and how many
    (the streamed tier's ``truncated``: the rows whose list may miss a cell they need)."""
    n = len(x)
    home = np.empty(n, np.int32)
    norms = np.empty(n, np.float64)
    opened = np.zeros(n, bool)
    reach = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * gram.min(axis=1)))
    buf = np.empty((min(_ASSIGN_BLOCK, n), n_cells), np.float32)
    rows, cells, kinds, truncated = [], [], [], 0
    step = chunk_rows(x.shape[1])
    for s in range(0, n, step):
        raw = np.asarray(x[s:s + step], dtype=np.float32)
        norms[s:s + len(raw)] = _norms64(raw)
        chunk = normalize(raw)
        del raw
        sims, near, open_chunk = _nearest_cells(chunk, centroids, gram, reach, t,
                                                probes if keep_probes else 1, out=buf)
        home[s:s + len(chunk)] = near[:, 0]
        if keep_probes:
            need = np.zeros(near.shape, bool)
            need[:, 0] = True
            more = np.flatnonzero(near[:, 1] >= 0)  # rows with a second cell within reach
            need[more] = probe_cells(sims[more], near[more], gram, t)
            if probes < n_cells:  # rows whose list may miss a cell they need
                truncated += int(open_chunk.sum())
                opened[s:s + len(chunk)] = open_chunk
            kind = self_join_probes(need, near) if self_join else np.where(need, FULL, -1).astype(np.int8)
            r, c = np.nonzero(kind > OWN)  # a self-join searches each cell's own rows apart
            rows.append((r + s).astype(np.int64))
            cells.append(near[r, c].astype(np.int32))
            kinds.append(kind[r, c])
    if not keep_probes:
        return home, norms, None, None, None, opened, 0
    return home, norms, np.concatenate(rows), np.concatenate(cells), np.concatenate(kinds), opened, truncated


def _norms64(raw: np.ndarray, block: int = 1 << 14) -> np.ndarray:
    """float64 row norms of float32 ``raw``, by blocks that stay in cache (a float64 copy of a
    whole 128 MiB chunk cost more than the normalising itself)."""
    out = np.empty(len(raw), np.float64)
    for s in range(0, len(raw), block):
        r = raw[s:s + block].astype(np.float64)
        out[s:s + block] = np.sqrt(np.einsum("ij,ij->i", r, r))
    return out


def _streamed_range(base, queries, t, *, seed):
    """Partitioned range search reading ``base`` (and ``queries``; None: self-join) by chunks,
    candidates re-ranked exactly: (query rows, base rows, similarities, info).

    Self-join pairs come back once each as (i < j), sorted, like ``self_pairs``. Pages of a
    memory-mapped ``x`` stay mapped between passes: they are the page cache's (file-backed,
    shared, reclaimable), and dropping them made every later pass fault them back in (half the
    CPU time went to the kernel in the 10M run that did so, ``benchmarks/scale_out``).
    """
    faiss = _faiss()
    clock, cpu = [time.perf_counter()], [time.process_time()]
    self_join = queries is None
    n, d = len(base), base.shape[1]
    n_cells = max(1, min(n // 4, int(round(CELLS_PER_SQRT_N * math.sqrt(n)))))
    km = faiss.Kmeans(d, n_cells, niter=KMEANS_ITERATIONS, spherical=True, seed=seed,
                      max_points_per_centroid=256, verbose=False)
    km.train(_read(base, _sample(n, n_cells * TRAIN_POINTS_PER_CELL, seed)))
    centroids = km.centroids
    gram = centroids @ centroids.T
    probes = min(MAX_PROBES, n_cells)
    clock.append(time.perf_counter())
    cpu.append(time.process_time())
    home, b_norms, q_rows, probed, kinds, opened, truncated = _assign(
        centroids, base, probes, gram, t, n_cells, keep_probes=self_join, self_join=self_join)
    if self_join:
        queries, q_norms = base, b_norms
    else:
        _, q_norms, q_rows, probed, kinds, _, truncated = _assign(centroids, queries, probes, gram, t, n_cells,
                                                                  keep_probes=True)
    n_q = len(queries)
    # probes a row: its own cell (self-join: searched apart, as a triangle) plus its list
    mean_probes = float(len(q_rows) / max(1, n_q)) + (1.0 if self_join else 0.0)
    mean_reverse = float((kinds == REVERSE).sum() / max(1, n_q))
    clock.append(time.perf_counter())
    cpu.append(time.process_time())
    log.info("streamed range search: %d rows, %d cells, k-means %.1f s, assignment %.1f s, %.3f probes "
             "a row (%.3f reverse), %d truncated, %d open", n, n_cells, clock[1] - clock[0],
             clock[2] - clock[1], mean_probes, mean_reverse, truncated, int(opened.sum()))
    slot = probed.astype(np.int64) * 3 + kinds  # (cell, kind): FULL and REVERSE apart
    del probed, kinds
    order = np.argsort(slot, kind="stable")
    q_rows, slot = q_rows[order], slot[order]
    del order
    q_bounds = np.searchsorted(slot, np.arange(3 * n_cells + 1))
    del slot
    b_order = np.argsort(home, kind="stable")
    b_bounds = np.searchsorted(home[b_order], np.arange(n_cells + 1))
    del home
    keys = []
    for c in range(n_cells):
        b_idx = b_order[b_bounds[c]:b_bounds[c + 1]]
        if len(b_idx) == 0:
            continue
        cell = _read(base, b_idx)
        if self_join:
            r, b = _block_self(cell, t)
            keys.append(b_idx[r] * n + b_idx[b])  # b_idx is sorted, so r < b means row i < row j
        for kind in (FULL, REVERSE):
            q_idx = q_rows[q_bounds[3 * c + kind]:q_bounds[3 * c + kind + 1]]
            if len(q_idx) == 0:
                continue
            if kind == REVERSE:  # only the cell's open rows
                sub = np.flatnonzero(opened[b_idx])
                if len(sub) == 0:
                    continue
                r, b, _ = _block_range(cell[sub], _read(queries, q_idx), t)
                b = sub[b]
            else:
                r, b, _ = _block_range(cell, _read(queries, q_idx), t)
            qi, bi = q_idx[r], b_idx[b]
            if self_join:
                keys.append(np.minimum(qi, bi) * n + np.maximum(qi, bi))
            else:
                keys.append(qi * n + bi)
        if (c + 1) % max(1, n_cells // 10) == 0:
            log.info("streamed range search: %d of %d cells searched, %.1f s", c + 1, n_cells,
                     time.perf_counter() - clock[2])
    del q_rows, b_order
    clock.append(time.perf_counter())
    cpu.append(time.process_time())
    keys = np.unique(np.concatenate(keys)) if keys else np.empty(0, np.int64)
    qi, bi = keys // n, keys % n
    del keys
    # exact float64 re-ranking of every candidate: the in-cell float32 blocks only propose pairs
    sims = _pair_cosines(queries, qi, q_norms, base, bi, b_norms)
    keep = sims >= t
    clock.append(time.perf_counter())
    cpu.append(time.process_time())
    info = {
        "index": "streamed",
        "seconds": dict(zip(("kmeans", "assign", "cells", "rerank"), np.round(np.diff(clock), 2).tolist())),
        # CPU seconds of the whole process (both BLAS threads) by phase: comparable under load
        "cpu_seconds": dict(zip(("kmeans", "assign", "cells", "rerank"), np.round(np.diff(cpu), 2).tolist())),
        "cells": n_cells,
        "max_probes": probes,
        "mean_probes": mean_probes,
        "mean_reverse_probes": mean_reverse,
        "truncated": truncated,
        "open": int(opened.sum()),
        "candidates": int(len(qi)),
        "reranked_out": int((~keep).sum()),
    }
    return qi[keep], bi[keep], sims[keep].astype(np.float32), info


#: Rows of one block of ``_block_self``: small enough that the skipped lower triangle is most
#: of the saving, large enough for BLAS to run near its peak (512 x 128 x cell rows).
_SELF_BLOCK = 512


def _block_self(x: np.ndarray, t: float):
    """Pairs r < c of rows of ``x`` with inner product >= ``t``: the self-join inside one cell,
    by row blocks against the rows from the block on (about half of ``_block_range(x, x)``)."""
    rows, cols = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for start in range(0, len(x), _SELF_BLOCK):
        block = x[start:start + _SELF_BLOCK] @ x[start:].T
        r, c = _above(block, t)
        keep = c > r
        rows.append(r[keep] + start)
        cols.append(c[keep] + start)
    return np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64)


#: Bytes of one side's float64 rows in a block of pairs (``pair_sims``, ``_pair_cosines``): 2^20
#: pairs at d = 384 were 3 GiB a side.
PAIR_BLOCK_BYTES = 32 << 20


def _pair_block(x, block: int) -> int:
    return int(max(1, min(block, PAIR_BLOCK_BYTES // (8 * max(1, int(x.shape[1]))))))


def _pair_cosines(a, i, a_norms, b, j, b_norms, *, block: int = 1 << 16) -> np.ndarray:
    """Exact float64 cosines of rows ``a[i]`` and ``b[j]``, read in blocks of pairs."""
    out = np.empty(len(i), np.float64)
    block = _pair_block(a, block)
    for s in range(0, len(i), block):
        u = np.asarray(a[i[s:s + block]], dtype=np.float64)
        v = np.asarray(b[j[s:s + block]], dtype=np.float64)
        out[s:s + block] = np.einsum("ij,ij->i", u, v)
    den = a_norms[i] * b_norms[j]
    return out / np.where(den > 0, den, 1.0)


def _compressed_index(base):
    """(IVF-PQ index over the streamed ``base``, its rows' norms): IVF (HNSW coarse quantizer) with PQ
    codes, the only copy of the base held in memory (PQ_M bytes a row). Rows are normalised as read."""
    faiss = _faiss()
    n, d = len(base), base.shape[1]
    nlist = max(1, min(n // 39, int(IVF_LISTS_PER_SQRT_N * math.sqrt(n))))
    m = max(1, min(PQ_M, d // 4))  # sub-vectors of at least 4 dimensions
    while d % m:
        m -= 1
    quantizer = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
    index = faiss.IndexIVFPQ(quantizer, d, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = 0
    index.cp.niter = KMEANS_ITERATIONS
    index.clustering_index = faiss.IndexFlatIP(d)  # k-means on a flat index; HNSW only for assignment
    index.pq.cp.niter = KMEANS_ITERATIONS
    index.train(_read(base, _sample(n, max(nlist * TRAIN_POINTS_PER_CELL, 256 * 39), 0)))
    norms = np.empty(n, np.float64)
    step = chunk_rows(d)
    for s in range(0, n, step):
        raw = np.asarray(base[s:s + step], dtype=np.float32)
        norms[s:s + len(raw)] = np.linalg.norm(raw.astype(np.float64), axis=1)
        index.add(normalize(raw))
    index.nprobe = min(IVF_NPROBE, nlist)
    return index, norms


def _compressed_query(built, base, queries, k: int):
    """The ``k`` nearest rows of ``base`` for each query through ``built`` (``_compressed_index``): the
    ``PQ_RERANK * k`` candidates of each query re-ranked with exact inner products read from ``base``."""
    index, norms = built
    n = len(base)
    step = chunk_rows(base.shape[1])
    kk = min(n, k * PQ_RERANK)
    sims_out = np.full((len(queries), k), -np.inf, np.float32)
    pos_out = np.full((len(queries), k), -1, np.int64)
    for s in range(0, len(queries), step):
        raw = normalize(np.asarray(queries[s:s + step]), copy=True)
        q_norms = np.linalg.norm(raw.astype(np.float64), axis=1)
        _, cand = index.search(raw, kk)
        rows = np.repeat(np.arange(len(raw), dtype=np.int64), kk)
        flat = cand.ravel()
        ok = flat >= 0
        exact = np.full(flat.shape, -np.inf)
        exact[ok] = _pair_cosines(raw, rows[ok], q_norms, base, flat[ok], norms)
        exact = exact.reshape(len(raw), kk)
        best = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        sims_out[s:s + len(raw)] = np.take_along_axis(exact, best, 1)
        pos_out[s:s + len(raw)] = np.where(np.isfinite(sims_out[s:s + len(raw)]),
                                           np.take_along_axis(cand, best, 1), -1)
    return sims_out, pos_out


def _compressed_search(base, queries, k: int):
    """kNN over a streamed base: ``_compressed_index`` then ``_compressed_query``."""
    return _compressed_query(_compressed_index(base), base, queries, k)


def pair_sims(x, i, j, *, block: int = 1 << 20) -> np.ndarray:
    """Exact float64 inner products of rows ``i`` and ``j`` of ``x`` (memory-mapped ``x`` too): the
    re-ranking that makes every search path (flat, partitioned, compressed, distributed) agree."""
    out = np.empty(len(i), np.float64)
    block = _pair_block(x, block)
    for s in range(0, len(i), block):
        a = np.asarray(x[i[s:s + block]], dtype=np.float64)
        b = np.asarray(x[j[s:s + block]], dtype=np.float64)
        out[s:s + block] = np.einsum("ij,ij->i", a, b)
    return out
