"""The FAISS index chooser: exact below a size, approximate above, recall measured against exact."""

from __future__ import annotations

import numpy as np
import pytest

from curator import index


def clustered(n, d=64, clusters=None, seed=0, copies=0.1, copy_noise=0.1):
    """Unit vectors in Gaussian clusters, the last ``copies`` fraction near copies of others."""
    rng = np.random.default_rng(seed)
    k = clusters or max(5, n // 500)
    centres = rng.standard_normal((k, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    label = rng.integers(0, k, n)
    spread = rng.uniform(0.4, 0.8, k).astype(np.float32)
    x = centres[label] + rng.standard_normal((n, d)).astype(np.float32) * (spread[label, None] / np.sqrt(d))
    x = index.normalize(x)
    m = int(n * copies)
    src = rng.choice(n - m, m)
    x[n - m:] = x[src] + rng.standard_normal((m, d)).astype(np.float32) * (copy_noise / np.sqrt(d))
    return index.normalize(x)


def pairs_set(i, j):
    return set(zip(i.tolist(), j.tolist()))


def test_flat_range_search_matches_brute_force():
    x = clustered(500, seed=1)
    i, j, s, info = index.self_pairs(x, 0.9)
    sims = x @ x.T
    bi, bj = np.nonzero(np.triu(sims >= 0.9 - index.SIM_EPS, 1))
    assert info["index"] == "flat"
    assert pairs_set(i, j) == pairs_set(bi, bj)
    assert np.allclose(s, sims[i, j], atol=1e-5)
    assert (i < j).all()


def test_threshold_one_matches_identical_vectors():
    x = clustered(200, seed=2)
    x[150] = x[3]
    i, j, _, _ = index.self_pairs(x, 1.0)
    assert (3, 150) in pairs_set(i, j)


@pytest.mark.parametrize("threshold", [0.95, 0.99])
def test_partitioned_self_join_recall_vs_exact(threshold):
    x = clustered(8000, seed=3)
    ei, ej, _, _ = index.self_pairs(x, threshold, exact=True)
    ai, aj, _, info = index.self_pairs(x, threshold, exact=False)
    exact, approx = pairs_set(ei, ej), pairs_set(ai, aj)
    assert info["index"] == "partitioned" and info["cells"] > 10
    assert approx <= exact  # no false pairs: the search inside cells is exact
    assert len(exact) > 500
    assert len(exact & approx) / len(exact) >= 0.999


def test_partitioned_range_search_queries_against_base():
    base = clustered(6000, seed=4)
    queries = base[:300] + 0.01 * np.random.default_rng(5).standard_normal((300, base.shape[1])).astype(np.float32)
    queries = index.normalize(queries)
    eq, eb, _, _ = index.range_search(base, queries, 0.97, exact=True)
    aq, ab, _, info = index.range_search(base, queries, 0.97, exact=False)
    exact = pairs_set(eq, eb)
    assert info["index"] == "partitioned"
    assert len(exact) >= 300
    assert len(exact & pairs_set(aq, ab)) / len(exact) >= 0.999


def test_probe_bound_finds_pairs_across_cell_borders():
    """Vectors straddling the border of two cells: the bound must probe both."""
    rng = np.random.default_rng(6)
    centroids = index.normalize(np.eye(2, 16, dtype=np.float32) + 0.0)
    gram = centroids @ centroids.T
    a = index.normalize(np.r_[1.0, 0.98, rng.normal(0, 0.01, 14)][None].astype(np.float32))
    sims = (a @ centroids.T)
    cells = np.argsort(-sims, axis=1)
    sims = np.take_along_axis(sims, cells, 1)
    need = index.probe_cells(sims, cells, gram, 0.95)
    assert need.all()  # the second cell is close enough to hold a copy of a
    far = index.normalize(np.r_[1.0, 0.1, np.zeros(14)][None].astype(np.float32))
    s2 = far @ centroids.T
    c2 = np.argsort(-s2, axis=1)
    need2 = index.probe_cells(np.take_along_axis(s2, c2, 1), c2, gram, 0.99)
    assert need2.tolist() == [[True, False]]


def test_ivf_knn_recall_vs_exact():
    base = clustered(30_000, d=32, seed=7, copies=0.0)
    queries = clustered(500, d=32, seed=7, copies=0.0)  # same clusters, other draws
    _, exact = index.search(base, queries, 10, exact=True)
    approx_index = index.build_index(base, exact=False)
    assert "IVF" in type(approx_index).__name__
    _, approx = approx_index.search(queries, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx.tolist(), exact.tolist())])
    assert recall >= 0.95


def test_search_default_tier_is_exact_for_small_bases():
    base = clustered(1000, seed=8)
    sims, pos = index.search(base, base[:5], 3)
    assert pos[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert np.allclose(sims[:, 0], 1.0, atol=1e-5)
    assert index.is_exact(index.EXACT_SEARCH_MAX_N) and not index.is_exact(index.EXACT_SEARCH_MAX_N + 1)
