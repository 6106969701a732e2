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


# --------------------------------------------------------------------------- streamed tier


@pytest.fixture
def streamed(monkeypatch):
    """The streamed tier forced on small sets (its size constant lowered), small chunks so that
    every pass really runs over several chunks."""
    monkeypatch.setattr(index, "STREAM_MIN_N", 1000)
    monkeypatch.setattr(index, "STREAM_CHUNK", 3000)


def _planted(n=20_000, d=64, seed=11):
    """Clustered rows, the last 10 % near copies (cosine about 0.995) of earlier ones, and the truth."""
    rng = np.random.default_rng(seed)
    x = clustered(n, d=d, seed=seed, copies=0.0)
    m = n // 10
    src = rng.choice(n - m, m, replace=False)
    x[n - m:] = index.normalize(x[src] + rng.standard_normal((m, d)).astype(np.float32) * (0.1 / np.sqrt(d)))
    truth = set(zip(src.tolist(), range(n - m, n)))
    return x, truth


def _memmap(tmp_path, x, scale=None):
    path = tmp_path / "x.npy"
    np.save(path, x if scale is None else x * scale[:, None])
    return np.load(path, mmap_mode="r")


def test_streamed_self_join_on_memmap_equals_exact(streamed, tmp_path):
    x, truth = _planted()
    scale = np.random.default_rng(0).uniform(0.5, 3.0, len(x)).astype(np.float32)
    mm = _memmap(tmp_path, x, scale)  # not normalised: the streamed tier normalises as it reads
    i, j, s, info = index.self_pairs(mm, 0.99)
    assert info["index"] == "streamed" and info["cells"] > 10 and info["truncated"] == 0
    ei, ej, es, _ = index.self_pairs(x, 0.99, exact=True)
    found, exact = pairs_set(i, j), pairs_set(ei, ej)
    assert (i < j).all() and np.all(np.diff(i * len(x) + j) > 0)  # once each, sorted like self_pairs
    planted_above = {p for p in truth if p in exact}
    assert len(planted_above) >= 0.95 * len(truth)  # the planted copies are there to be found
    assert len(found & planted_above) / len(planted_above) >= 0.999  # recall of planted pairs
    assert found <= exact  # precision 1.0 after the float64 re-ranking
    assert len(found & exact) / len(exact) >= 0.999
    # similarities are exact cosines of the original (unscaled) rows
    common = [k for k, p in enumerate(zip(i.tolist(), j.tolist())) if p in exact]
    want = dict(zip(zip(ei.tolist(), ej.tolist()), es.tolist()))
    assert np.allclose(s[common], [want[(i[k], j[k])] for k in common], atol=1e-5)
    assert np.allclose(s, index.pair_sims(x.astype(np.float64), i, j), atol=1e-6)


def test_streamed_range_search_and_rows_view(streamed, tmp_path):
    x, _ = _planted(n=12_000, seed=12)
    mm = _memmap(tmp_path, x)
    rows = np.arange(0, len(x), 2)
    view = index.take_rows(mm, rows)
    assert isinstance(view, index.RowsView) and view.shape == (len(rows), x.shape[1])
    queries = x[rows[:400]] + 0.003 * np.random.default_rng(1).standard_normal((400, x.shape[1])).astype(np.float32)
    queries = index.normalize(queries)
    q, b, _, info = index.range_search(view, queries, 0.97)
    eq, eb, _, _ = index.range_search(x[rows], queries, 0.97, exact=True)
    assert info["index"] == "streamed"
    assert pairs_set(q, b) == pairs_set(eq, eb)
    # a small base against a streamed query set: the in-memory search by chunks, identical output
    q2, b2, _, info2 = index.range_search(x[:800], mm, 0.99)
    q3, b3, _, _ = index.range_search(x[:800], x, 0.99, exact=True)
    assert info2["query_chunks"] == 4
    assert pairs_set(q2, b2) == pairs_set(q3, b3)


def test_streamed_knn_compressed_index_reranked(streamed, tmp_path):
    base = clustered(8000, d=32, seed=13, copies=0.0)
    queries = clustered(300, d=32, seed=13, copies=0.0)
    sims, pos = index.search(_memmap(tmp_path, base), queries, 5)
    esims, epos = index.search(base, queries, 5, exact=True)
    recall = np.mean([len(set(a) & set(e)) / 5 for a, e in zip(pos.tolist(), epos.tolist())])
    assert recall >= 0.9
    # re-ranked: returned similarities are exact inner products of the returned rows
    assert np.allclose(sims, np.einsum("qd,qkd->qk", queries, base[pos]), atol=1e-5)
    top = pos[:, 0] == epos[:, 0]  # the true nearest found: its exact similarity, not a PQ estimate
    assert top.mean() >= 0.9 and np.allclose(sims[top, 0], esims[top, 0], atol=1e-5)


def test_searcher_on_a_streamed_base_builds_the_compressed_index_once(streamed, tmp_path, monkeypatch):
    """``searcher`` over a streamed base trains the IVF-PQ index once for every query set (it was trained per
    call: four times for the verified dedup's four query sets), and answers what ``search`` answers."""
    base = _memmap(tmp_path, clustered(6000, d=32, seed=14, copies=0.0))
    sets = [clustered(200, d=32, seed=s, copies=0.0) for s in (15, 16)]
    built = []
    real = index._compressed_index
    monkeypatch.setattr(index, "_compressed_index", lambda b: built.append(1) or real(b))
    run = index.searcher(base)
    got = [run(q, 4) for q in sets]
    assert len(built) == 1
    for q, (sims, pos) in zip(sets, got):
        want_sims, want_pos = index.search(base, q, 4)
        assert pos.shape == (200, 4)
        assert np.mean(pos == want_pos) >= 0.99 and np.allclose(sims[pos == want_pos], want_sims[pos == want_pos])
        assert np.allclose(sims, np.einsum("qd,qkd->qk", index.normalize(q), np.asarray(base)[pos]), atol=1e-5)
    assert len(built) == 3  # search() itself builds one per call


def test_streamed_dedup_and_novelty_use_the_tier(streamed, tmp_path, monkeypatch):
    from curator.dedup import find_duplicates
    from curator.novelty import novelty

    x, _ = _planted(n=8000, seed=14)
    x[7000] = x[10]  # an exact copy
    mm = _memmap(tmp_path, x)
    groups, info = find_duplicates(mm, 0.99, return_info=True)
    assert info["index"] == "streamed"
    monkeypatch.setattr(index, "STREAM_MIN_N", 10**9)  # the same call in memory, exact
    want = find_duplicates(x, 0.99, exact=True)
    assert [g.tolist() for g in groups] == [g.tolist() for g in want]
    monkeypatch.setattr(index, "STREAM_MIN_N", 1000)
    ref = x[:50]
    streamed_nov = novelty(mm, ref, k=2)
    monkeypatch.setattr(index, "STREAM_MIN_N", 10**9)
    assert np.allclose(streamed_nov, novelty(x, ref, k=2), atol=1e-5)


def test_small_sets_keep_the_in_memory_tiers():
    assert not index.is_streamed(index.STREAM_MIN_N) and index.is_streamed(index.STREAM_MIN_N + 1)
    x = clustered(300, seed=15)
    assert isinstance(index.take_rows(x, np.arange(10)), np.ndarray)


def test_probe_bound_every_cell_is_tighter_and_still_exact():
    """``probe_cells`` checks a probed cell against every known nearer cell, not only the
    nearest: it must never skip a cell that holds a partner (brute force), and must skip
    cells the nearest-cell-only bound would probe."""
    faiss = pytest.importorskip("faiss")
    x = clustered(4000, d=32, seed=21, copies=0.3, copy_noise=0.15)
    t = 0.97
    km = faiss.Kmeans(32, 60, niter=8, spherical=True, seed=0, verbose=False)
    km.train(x)
    cent = km.centroids
    gram = cent @ cent.T
    sims = x @ cent.T
    cells = np.argsort(-sims, axis=1)[:, :8]
    sims = np.take_along_axis(sims, cells, 1)
    home = cells[:, 0]
    need = index.probe_cells(sims, cells, gram, t)
    radius = np.sqrt(2 - 2 * t)
    old = (sims[:, :1] - sims) <= radius * np.sqrt(np.maximum(0, 2 - 2 * gram[cells[:, :1], cells])) + index.SIM_EPS
    assert not (need & ~old).any()  # never probes more than the nearest-cell bound
    assert need.sum() < old.sum()  # and probes fewer
    close = (x @ x.T) >= t
    truly = np.zeros_like(need)  # a's k-th cell holds some b within t of a
    for k in range(8):
        truly[:, k] = (close & (home[None, :] == cells[:, k:k + 1])).any(axis=1)
    assert truly[:, 1:].sum() > 50  # pairs across cell borders exist
    assert not (truly & ~need).any()


def test_self_join_probes_one_side_of_each_border(streamed, tmp_path):
    """The streamed self-join searches each cross-cell pair from the row in the smaller cell
    (the other way only against open rows), each cell's own rows once as a triangle: it still
    equals exact search, on a pool where rows are truncated and open."""
    x, _ = _planted(n=8000, seed=22)
    ei, ej, _, _ = index.self_pairs(x, 0.99, exact=True)
    exact = pairs_set(ei, ej)
    i, j, _, info = index.self_pairs(_memmap(tmp_path, x), 0.99)
    assert info["index"] == "streamed" and info["mean_reverse_probes"] > 0
    assert 0 < info["truncated"] == info["open"] < len(x)
    assert pairs_set(i, j) == exact and len(exact) > 500
    need = np.array([[True, True, True, False], [True, True, False, True], [True, False, True, True]])
    cells = np.array([[5, 2, 9, 1], [5, 7, 1, 3], [3, 4, 1, 8]])
    O, F, R = index.OWN, index.FULL, index.REVERSE
    assert index.self_join_probes(need, cells).tolist() == [[O, R, F, -1], [O, F, -1, R], [O, -1, R, F]]


@pytest.mark.parametrize("sort_fraction", [0.0, 1.0])  # partial sorts of rows, sorts of candidates
def test_nearest_cells_lists_what_the_bound_needs_and_opens_only_incomplete_rows(monkeypatch, sort_fraction):
    """The streamed assignment (one product, candidates within reach of the nearest cell, no
    k-nearest search) lists the same nearest cells as a full sort wherever the bound looks, keeps
    the same probed cells, and a row it does not open lists every cell the bound would ask for
    over all cells; it opens fewer rows than taking every unlisted cell as ``reach`` away."""
    faiss = pytest.importorskip("faiss")
    monkeypatch.setattr(index, "_ASSIGN_BLOCK", 700)  # several blocks, several partial sorts in each
    monkeypatch.setattr(index, "_PARTIAL_ROWS", 50)
    monkeypatch.setattr(index, "_SORT_FRACTION", sort_fraction)
    x = clustered(3000, d=32, seed=23)
    km = faiss.Kmeans(32, 30, niter=8, spherical=True, seed=0, verbose=False)
    km.train(x)
    cent = km.centroids
    gram = cent @ cent.T
    reach = np.sqrt(np.maximum(0, 2 - 2 * gram.min(axis=1)))
    t = 0.99 - index.SIM_EPS
    sims = x @ cent.T
    order = np.argsort(-sims, axis=1)
    sorted_sims = np.take_along_axis(sims, order, 1)
    full = index.probe_cells(sorted_sims, order, gram, t)  # every cell listed
    assert full[:, 8:].any(axis=1).sum() > 30  # some rows need cells beyond the first 8
    s8, c8, opened = index._nearest_cells(x, cent, gram, reach, t, 8)
    listed = c8 >= 0
    assert (c8[:, 0] == order[:, 0]).all() and listed[:, 1].any() and not listed.all()
    m = listed.sum(axis=1)  # the m nearest cells of the full ranking, the nearest first
    assert [set(c[:k]) for c, k in zip(c8, m)] == [set(o[:k]) for o, k in zip(order, m)]
    assert np.allclose(s8[listed], np.take_along_axis(sims, np.where(listed, c8, 0), 1)[listed], atol=1e-6)
    assert (m == 8).any() and (m < 8).any()
    kept = index.probe_cells(s8, c8, gram, t)
    kept_top8 = index.probe_cells(sorted_sims[:, :8], order[:, :8], gram, t)
    assert [set(c[k]) for c, k in zip(c8, kept)] == [set(c[k]) for c, k in zip(order[:, :8], kept_top8)]
    needed = [set(o[f]) for o, f in zip(order, full)]
    for row in np.flatnonzero(~opened):
        assert needed[row] <= set(c8[row][listed[row]])
    assert any(not needed[row] <= set(order[row, :8]) for row in np.flatnonzero(opened))
    loose = (sorted_sims[:, 0] - sorted_sims[:, 7]) <= np.sqrt(2 - 2 * t) * reach[order[:, 0]] + index.SIM_EPS
    assert 0 < opened.sum() < loose.sum() and not (opened & ~loose).any()


@pytest.mark.parametrize("k", [1, 3])
def test_streamed_queries_knn_in_a_small_base_equals_faiss_exact(streamed, tmp_path, monkeypatch, k):
    """A streamed query set against a small base (novelty's labeled rows) is searched by matrix
    products and a top-k per row, not FAISS: the same neighbours and similarities, queries
    normalised as read (the memmap holds them scaled), blocks and chunks of odd sizes."""
    monkeypatch.setattr(index, "_ASSIGN_BLOCK", 700)
    base = clustered(400, d=32, seed=31, copies=0.0)
    queries = clustered(7000, d=32, seed=32, copies=0.0)
    scale = np.random.default_rng(3).uniform(0.5, 3.0, len(queries)).astype(np.float32)
    sims, pos = index.search(base, _memmap(tmp_path, queries, scale), k)
    monkeypatch.setattr(index, "STREAM_MIN_N", 10**9)
    esims, epos = index.search(base, queries, k, exact=True)
    assert sims.shape == (len(queries), k) and pos.dtype == np.int64
    assert (pos == epos).all()
    assert np.allclose(sims, esims, atol=1e-5)
    assert (np.diff(sims, axis=1) <= 0).all()
