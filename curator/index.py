"""The one FAISS index chooser, used by novelty and by de-duplication.

Vectors are L2-normalised float32, so inner product is cosine similarity.
Two tiers, chosen by size:

* up to ``EXACT_SEARCH_MAX_N`` base vectors: exact search (``IndexFlatIP``),
  for k nearest neighbours and for range search alike;
* above it: k nearest neighbours through an inverted file (``IndexIVFFlat``),
  and range search (the duplicate self-join) through *partitioned search*:
  spherical k-means cells, each base vector stored in its nearest cell, each
  query probing every cell that may hold a vector within the radius (see
  ``probe_cells``), and an exact search inside each probed cell (dense
  inner-product blocks; FAISS k-means and FAISS assignment around them).

Partitioned range search is exact for every query whose qualifying cells fit
in ``MAX_PROBES``; the few that do not are counted in ``info["truncated"]``,
so a caller knows how far from exact a run may be. The recall of both
approximate paths against exact search is measured in ``tests/test_index.py``
and, at scale, in ``benchmarks/dedup_scale``.
"""

from __future__ import annotations

import math

import numpy as np

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
    index = build_index(base, exact=exact)
    return index.search(as_float32(queries), k)


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


#: Most similarities held at once by one block of the in-cell search (64 MiB of float32).
_BLOCK_ELEMENTS = 1 << 24


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
        r, c = np.nonzero(block >= t)
        rows.append(r + start)
        cols.append(c)
        sims.append(block[r, c])
    return np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64), np.concatenate(sims)


def probe_cells(
    sims: np.ndarray, cells: np.ndarray, gram: np.ndarray, threshold: float
) -> np.ndarray:
    """Which of each query's nearest cells may hold a vector within ``threshold``.

    For unit vectors a, b with cos(a, b) >= t, and b stored in cell c2 while
    a is nearest to c1: <a,m1> - <a,m2> <= |a - b| |m1 - m2| <= sqrt(2 - 2t)
    |m1 - m2|. So probing every cell whose similarity gap to the nearest one
    is within that bound finds every pair: the search is exact unless a
    query's last candidate still qualifies (it is then truncated).
    ``sims``, ``cells``: (n, P) similarities to and ids of the P nearest
    cells; ``gram``: centroid inner products. Returns an (n, P) bool mask.
    """
    radius = math.sqrt(max(0.0, 2.0 - 2.0 * threshold))
    first = cells[:, :1]
    dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * gram[first, cells]))
    need = (sims[:, :1] - sims) <= radius * dist + SIM_EPS
    need &= cells >= 0
    need[:, 0] = True
    return need


def _partitioned_range(base, queries, t, *, self_join: bool, seed: int):
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
    out_q, out_b, out_s = [], [], []
    for c in range(n_cells):
        b_idx = b_order[b_bounds[c]:b_bounds[c + 1]]
        q_idx = q_rows[q_bounds[c]:q_bounds[c + 1]]
        if len(b_idx) == 0 or len(q_idx) == 0:
            continue
        r, b, s = _block_range(base[b_idx], queries[q_idx], t)
        out_q.append(q_idx[r])
        out_b.append(b_idx[b])
        out_s.append(s)
    info = {
        "index": "partitioned",
        "cells": n_cells,
        "max_probes": probes,
        "mean_probes": float(len(q_rows) / max(1, len(queries))),
        "truncated": truncated,
    }
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
    base, queries = as_float32(base), as_float32(queries)
    t = float(threshold) - SIM_EPS
    if len(base) == 0 or len(queries) == 0:
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty(0, np.float32), {"index": "flat", "truncated": 0}
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
    x = as_float32(x)
    t = float(threshold) - SIM_EPS
    n = len(x)
    if n < 2:
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty(0, np.float32), {"index": "flat", "truncated": 0}
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


def pair_sims(x, i, j, *, block: int = 1 << 20) -> np.ndarray:
    """Exact float64 inner products of rows ``i`` and ``j`` of ``x`` (memory-mapped ``x`` too): the
    re-ranking that makes every search path (flat, partitioned, compressed, distributed) agree."""
    out = np.empty(len(i), np.float64)
    for s in range(0, len(i), block):
        a = np.asarray(x[i[s:s + block]], dtype=np.float64)
        b = np.asarray(x[j[s:s + block]], dtype=np.float64)
        out[s:s + block] = np.einsum("ij,ij->i", a, b)
    return out
