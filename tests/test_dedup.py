"""Duplicate engine: exact hashes, near copies without chaining, representatives, real MNIST copies, CLI."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import MNIST, ROOT, require
from curator import find_duplicates
from curator.dedup import DEFAULT_THRESHOLD, drop_mask, near_labeled
from curator.exceptions import EmptyPoolError, ValidationError

_spec = importlib.util.spec_from_file_location("planted", ROOT / "benchmarks" / "dedup_scale" / "planted.py")
planted = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(planted)


def angles(*deg):
    a = np.deg2rad(np.asarray(deg, dtype=float))
    return np.c_[np.cos(a), np.sin(a)]


COS20 = float(np.cos(np.deg2rad(20)))


def as_lists(groups):
    return [g.tolist() for g in groups]


# ---------------------------------------------------------------- grouping rules

def test_chain_is_not_merged_into_one_group():
    """A~B~C~D~E with A unlike C: union-find would give one group of five."""
    x = angles(0, 15, 30, 45, 60)
    groups = find_duplicates(x, COS20)
    # stars around a centre: 1 holds 0 and 2 (each 15 degrees away), 3 and 4 form the second group;
    # chaining would put all five in one group, and 0 with 30 or 45 though they are 30+ degrees apart
    assert as_lists(groups) == [[0, 1, 2], [3, 4]]
    for g in groups:  # every member is a copy of one centre: no member is two hops from another
        sims = x[g] @ x[g].T
        assert (sims >= COS20 - 1e-6).sum(axis=1).max() == len(g)


def test_exact_duplicates_by_hash_and_by_identical_rows():
    x = angles(0, 90, 180, 270)
    x = np.r_[x, x[[1]], x[[1]]]  # rows 4, 5 copy row 1
    assert as_lists(find_duplicates(x, 0.999)) == [[1, 4, 5]]
    hashes = ["a", "b", "c", "c", "e", "f"]  # rows 2, 3 share a hash though their vectors differ
    groups = find_duplicates(x, 0.999, hashes=hashes)
    # equal hashes group 2 and 3 though their vectors differ; identical vectors still group 1, 4, 5
    assert as_lists(groups) == [[1, 4, 5], [2, 3]]


def test_representative_rule_labeled_then_score_then_position():
    x = angles(0, 1, 2, 50)
    assert as_lists(find_duplicates(x, COS20)) == [[0, 1, 2]]
    assert as_lists(find_duplicates(x, COS20, scores=[0.1, 0.9, 0.5, 0.0])) == [[1, 2, 0]]
    assert as_lists(find_duplicates(x, COS20, scores=[0.1, 0.9, 0.5, 0.0], labeled=[2])) == [[2, 1, 0]]


def test_pool_samples_near_a_labeled_sample_are_dropped():
    x = angles(0, 10, 19, 28, 100)  # 28 is within 20 of 10 but not of 0
    labeled = np.array([True, False, False, False, False])
    groups, info = find_duplicates(x, COS20, labeled=labeled, return_info=True)
    assert groups[0][0] == 0 and set(groups[0].tolist()) == {0, 1, 2}
    assert info["dropped_near_labeled"] == 2
    drop = drop_mask(groups, len(x), labeled)
    # 28 is a copy of 10 (a pool sample) but not of the labeled 0: no chaining, so it stays
    assert drop.tolist() == [False, True, True, False, False]
    near = near_labeled(x[1:], x[:1], COS20)
    assert near.tolist() == [True, True, False, False]


def test_centre_grouping_beats_union_find_on_a_clustered_pool():
    """Dense data chains under union-find; centre groups stay small stars."""
    rng = np.random.default_rng(0)
    n = 3000
    a = rng.uniform(0, 2 * np.pi, n)
    x = np.c_[np.cos(a), np.sin(a), rng.normal(0, 0.002, n)]  # a dense ring: every point has near neighbours
    t = float(np.cos(np.deg2rad(1.0)))
    groups = find_duplicates(x, t)
    biggest = max(len(g) for g in groups)
    # union-find over the same edges
    from curator import index
    i, j, _, _ = index.self_pairs(index.normalize(x), t)
    parent = np.arange(n)
    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a
    for p, q in zip(i.tolist(), j.tolist()):
        parent[find(p)] = find(q)
    uf_biggest = np.bincount([find(a) for a in range(n)]).max()
    assert uf_biggest > 3 * biggest
    xn = index.normalize(x)
    for g in groups:  # each group is a star around one member
        sims = xn[g] @ xn[g].T
        assert (sims >= t - 1e-5).all(axis=1).any()


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("threshold", [0, -0.5, 1.01, True, "high", float("nan")])
def test_threshold_outside_unit_interval_is_refused(threshold):
    with pytest.raises(ValidationError, match="threshold"):
        find_duplicates(angles(0, 1), threshold)


def test_nan_zero_and_empty_embeddings_are_refused():
    x = angles(0, 1, 2)
    bad = x.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValidationError, match=r"embeddings contains NaN.*\[1\]"):
        find_duplicates(bad)
    zero = x.copy()
    zero[2] = 0
    with pytest.raises(ValidationError, match=r"all-zero rows \[2\]"):
        find_duplicates(zero)
    with pytest.raises(EmptyPoolError, match="no rows"):
        find_duplicates(np.zeros((0, 4)))
    with pytest.raises(ValidationError, match="2-D"):
        find_duplicates(np.ones(5))


# ---------------------------------------------------------------- real MNIST images with planted copies

REQUIRED_KINDS = ("jpeg90", "brightness", "contrast", "shift1", "combo")


@pytest.mark.slow
def test_planted_copies_of_real_mnist_digits_are_found():
    """Default threshold on cold-start embeddings of MNIST test digits (not the tuning digits)."""
    from curator import coldstart

    images = planted.read_idx_images(require(MNIST / "t10k-images-idx3-ubyte.gz"), 600, 5000)
    kinds = [*REQUIRED_KINDS, "rotate"]
    rows, origin, kind = planted.plant(images, 480, kinds, np.random.default_rng(11))
    rows.append(rows[0].copy())  # one exact copy too
    origin = np.r_[origin, 0]
    kind = np.append(kind, "exact")
    E = coldstart.embed_images(rows)
    groups = find_duplicates(E, hashes=[r.tobytes() for r in rows])
    scores = planted.pair_scores(groups, origin)
    n = len(images)
    group_of = np.full(len(rows), -1)
    for g, members in enumerate(groups):
        group_of[members] = g
    found = (group_of[n:] >= 0) & (group_of[n:] == group_of[origin[n:]])
    for k in REQUIRED_KINDS:
        assert found[kind[n:] == k].mean() >= 0.95, k
    assert found[kind[n:] == "exact"].all()
    assert found[kind[n:] == "rotate"].mean() >= 0.3  # small rotations: the documented weak spot
    assert scores["precision"] >= 0.9  # distinct near-identical digits (mostly 1s) cost the rest
    assert scores["recall"] >= 0.85


def test_cold_start_embedding_is_invariant_to_brightness_and_contrast():
    from curator import coldstart

    rng = np.random.default_rng(3)
    img = (rng.random((28, 28)) * 200).astype(np.uint8)
    a, b = coldstart.embed_images([img, np.clip(img * 0.8 + 30, 0, 255).astype(np.uint8)])
    assert a.shape == (coldstart.dim(),)
    assert float(a @ b) > 0.995
    blank = coldstart.embed_images([np.zeros((10, 10), np.uint8), np.full((10, 10), 200, np.uint8)])
    assert np.isclose(np.linalg.norm(blank, axis=1), 1).all() and float(blank[0] @ blank[1]) == 1.0
    colour = coldstart.embed_images(np.stack([np.dstack([img] * 3)] * 2))
    assert np.allclose(colour[0], a, atol=1e-2)


# ---------------------------------------------------------------- the policy filter

def test_drop_duplicates_never_selects_two_members_of_one_group():
    from curator import Pool
    from curator.policies.base import ScorePolicy
    from curator.policies.filters import DropDuplicates

    rng = np.random.default_rng(4)
    base = rng.standard_normal((60, 16))
    x = np.r_[base, base[:20] + 1e-4 * rng.standard_normal((20, 16)), base[:5]]  # copies of 0..19
    labeled = base[[30]] + 1e-4  # a copy of row 30 is already labeled
    favour_copies = lambda pool: np.r_[np.zeros(60), np.ones(20), np.full(5, 2.0)] + np.arange(85) * 1e-3
    favour_copies.__name__ = "favour_copies"
    policy = DropDuplicates(ScorePolicy(favour_copies, requires=("embeddings",)), threshold=0.999)
    pool = Pool(embeddings=x, labeled_embeddings=labeled)
    chosen = policy.select(pool, budget=40, seed=0)
    assert len(set(chosen.tolist())) == 40
    assert 30 not in chosen
    groups = find_duplicates(x, 0.999)
    for g in groups:
        assert len(set(g.tolist()) & set(chosen.tolist())) <= 1
    assert {80, 81, 82, 83, 84} <= set(chosen.tolist())  # the highest-scored copy of each group wins
    assert policy.get_params()["threshold"] == 0.999
    from curator.exceptions import BudgetError
    with pytest.raises(BudgetError, match="DropDuplicates"):
        policy.select(pool, budget=60, seed=0)


# ---------------------------------------------------------------- CLI on an ingested image folder

def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "curator", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env={**__import__("os").environ, "CURATOR_PROGRESS": "0"})


@pytest.mark.slow
def test_cli_dedup_on_ingested_folder(tmp_path):
    from PIL import Image

    images = planted.read_idx_images(require(MNIST / "t10k-images-idx3-ubyte.gz"), 40, 100)
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"d{i:03d}.png")
    copies = {"c_jpeg.png": (3, "jpeg90"), "c_shift.png": (7, "shift1"), "c_bright.png": (7, "brightness")}
    for name, (src, kind) in copies.items():
        Image.fromarray(planted.make_copy(images[src], kind, rng)).save(folder / name)
    (folder / "exact.png").write_bytes((folder / "d010.png").read_bytes())
    r = run_cli("ingest", str(folder), "--dataset", "digits", "--no-class-folders", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # default: candidates verified on the images, threshold calibrated on the pool and recorded
    # a stale checkpoint of other work in the run's folder (curator.checkpoint): not trusted, and the
    # folder is removed once the groups are made (a stopped run would find its scored pairs there)
    stale = tmp_path / ".curator" / "checkpoints" / "dedup-digits"
    stale.mkdir(parents=True)
    (stale / "key.json").write_text('{"pool": "another"}')
    (stale / "scores.bin").write_bytes(b"junk")
    r = run_cli("dedup", "--dataset", "digits", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not stale.exists()
    verified = json.loads(r.stdout)
    assert verified["method"] == "verified-ecc" and verified["threshold_source"] == "calibrated"
    assert verified["threshold"] == verified["calibration"]["threshold"] < 1.0
    names = [sorted(p.rsplit("/", 1)[-1] for p in g) for g in verified["groups"]]
    assert ["c_jpeg.png", "d003.png"] in names
    assert ["c_bright.png", "c_shift.png", "d007.png"] in names
    assert ["d010.png", "exact.png"] in names
    # --workers: the same groups and threshold (a pool this small is scored in one process: fewer pairs
    # than two blocks; the forked path itself: test_dedup_verify.py)
    two = run_cli("dedup", "--dataset", "digits", "--workers", "2", "--json", cwd=tmp_path)
    assert two.returncode == 0, two.stderr
    assert {k: json.loads(two.stdout)[k] for k in ("groups", "threshold")} == {k: verified[k] for k in ("groups", "threshold")}
    assert run_cli("dedup", "--dataset", "digits", "--workers", "0", cwd=tmp_path).returncode != 0

    r = run_cli("dedup", "--dataset", "digits", "--no-verify", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["embedding"] == "coldstart-thumb16" and out["threshold"] == DEFAULT_THRESHOLD
    assert out["method"] == "cosine"
    names = [sorted(p.rsplit("/", 1)[-1] for p in g) for g in out["groups"]]
    assert ["c_jpeg.png", "d003.png"] in names
    assert ["c_bright.png", "c_shift.png", "d007.png"] in names
    assert ["d010.png", "exact.png"] in names
    for ids in out["sample_ids"]:
        assert ids[0] == min(ids)  # nothing labeled, no scores: the lowest sample id represents

    # the same through stored embeddings of a "model" (curator.embeddings), read with --model NAME
    from curator import coldstart, embeddings
    from curator.settings import Settings

    class Thumbs:
        name, version = "thumbs", "1"

        def embed(self, images):
            return coldstart.embed_images(images)

    embeddings.compute_embeddings(Settings(workspace=tmp_path / ".curator"), "digits", Thumbs())
    r = run_cli("dedup", "--dataset", "digits", "--model", "thumbs", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    stored = json.loads(r.stdout)
    assert stored["embedding"] == "model thumbs" and stored["groups"] == out["groups"]

    both = run_cli("dedup", "--dataset", "digits", "--model", "thumbs", "--verify", cwd=tmp_path)
    assert both.returncode != 0 and both.stderr.count("\n") == 1 and "--verify" in both.stderr
    bad = run_cli("dedup", "--dataset", "digits", "--threshold", "1.5", cwd=tmp_path)
    assert bad.returncode != 0 and "threshold" in bad.stderr and "(0, 1]" in bad.stderr
    missing = run_cli("dedup", "--dataset", "digits", "--model", "cnn", cwd=tmp_path)
    assert missing.returncode != 0 and "curator embed --dataset digits --model cnn" in missing.stderr
    nodata = run_cli("dedup", "--dataset", "nope", cwd=tmp_path)
    assert nodata.returncode != 0 and "curator ingest" in nodata.stderr


def test_stored_prepared_reads_back_what_prepared_holds(tmp_path, monkeypatch):
    """A pool prepared by chunks into a scratch file (``StoredPrepared``, for pools too large to hold)
    gives every row, score and chroma distance ``Prepared`` of the whole pool gives: grey digits first
    (the first chunks grey, then colour: all rebuilt as colour), an RGBA image, a cache of 2 rows."""
    from curator import copyverify
    from test_dedup_verify import _digits, _procedural

    X, _ = _digits(7)
    rng = np.random.default_rng(1)
    colour = [rng.integers(0, 255, (40, 52, 3), dtype=np.uint8) for _ in range(4)]
    rgba = rng.integers(0, 255, (30, 30, 4), dtype=np.uint8)
    images = list(X) + colour + [rgba, X[0]]
    whole = copyverify.Prepared(images)
    stored = copyverify.StoredPrepared(images, chunk=3, cache_bytes=1, progress=False, scratch=tmp_path)
    assert len(stored) == len(whole) and stored.side == whole.side and stored.cache_rows == 2
    np.testing.assert_array_equal(stored.chroma, whole.chroma)
    for k in range(len(images)):
        np.testing.assert_array_equal(stored.full[k], whole.full[k])
        np.testing.assert_array_equal(stored.grid[k], whole.grid[k])
        np.testing.assert_array_equal(stored.ecc_level[1][k], whole.ecc_level[1][k])
    assert stored.ecc_level[0] == whole.ecc_level[0]
    i, j = np.array([0, 0, 7, 3, 11, 12]), np.array([12, 7, 8, 10, 2, 5])
    np.testing.assert_array_equal(copyverify.score_pairs(stored, i, j, progress=False),
                                  copyverify.score_pairs(whole, i, j, progress=False))
    grey = copyverify.StoredPrepared(list(X), chunk=3, progress=False)  # a grey pool stays one channel
    assert grey.full[0].shape == whole.full[0].shape[:2] + (1,)
    # beyond the memory budget, load_images reads the files only when asked, the same pixels
    rows, held = _procedural(tmp_path / "p", n=6)
    uris = [str(tmp_path / "p" / r["file"]) for r in rows]
    monkeypatch.setattr(copyverify, "VERIFY_MEMORY_BYTES", 0)
    lazy = copyverify.load_images(uris)
    assert isinstance(lazy, copyverify.ImageFiles) and len(lazy) == 6
    direct = [copyverify._load_one(u) for u in uris]
    assert all(np.array_equal(a, b) for a, b in zip(lazy[1:4], direct[1:4])) and np.array_equal(lazy[5], direct[5])
    assert isinstance(copyverify.prepare_pool(lazy, progress=False), copyverify.StoredPrepared)
    # thumbnails (upright and rotated) spilled to scratch memory maps: the same rows as held
    spilled, held_e = (copyverify._embed(lazy, (0.0, 7.0), spill=v) for v in (True, False))
    assert isinstance(spilled[1], np.memmap) and all(np.array_equal(a, b) for a, b in zip(spilled, held_e))


def test_candidates_from_spilled_queries_read_by_chunks_are_the_held_ones(monkeypatch):
    """Rotated query thumbnails spilled to a scratch file (``_SpilledRows``: not mapped, so the pool's
    queries never sit in RSS) and searched a few rows at a time give the candidate pairs the held queries
    give; the rows read back are the ones written."""
    from curator import copyverify
    from test_dedup_verify import _digits

    X, _ = _digits(60)
    images = list(X) + [np.rot90(X[3]).copy(), X[5][2:, :].copy()]
    held = copyverify.candidates(images, 4)
    rows = copyverify._embed(images, (7.0,), spill=True, mapped=False)[0]
    assert isinstance(rows, copyverify._SpilledRows) and not isinstance(rows, np.ndarray)
    np.testing.assert_array_equal(np.asarray(rows), copyverify._embed(images, (7.0,), spill=False)[0])
    np.testing.assert_array_equal(rows[5:9], np.asarray(rows)[5:9])
    monkeypatch.setattr(copyverify, "VERIFY_MEMORY_BYTES", 0)  # spill every set
    monkeypatch.setattr(copyverify, "QUERY_CHUNK", 7)  # 62 rows: 9 chunks, the last short
    chunked = copyverify.candidates(images, 4)
    assert len(held[0]) > len(images)
    np.testing.assert_array_equal(chunked[0], held[0])
    np.testing.assert_array_equal(chunked[1], held[1])


def _mapped_rss_kib(path) -> int:
    """Resident KiB of the mappings of ``path`` in this process (/proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5:  # a mapping's first line: range perms offset dev inode [path]
            inside = line.rstrip().endswith(str(path))
        elif inside and head and head[0] == "Rss:":
            total += int(head[1])
    return total


def test_candidates_on_a_memory_mapped_set_are_the_held_ones_and_its_file_pages_are_let_go(tmp_path):
    """Pairs come as unique int64 keys per chunk (8 bytes a pair, not 16 in several copies): the same
    sorted (i < j) pairs from a memory-mapped embedding set as from the held one, each row's nearest
    neighbours among them; after the search the map's file pages are no longer resident in the process
    (they counted in its RSS: 147 MiB at 100k), and the set reads back unchanged."""
    from curator import coldstart, copyverify, index
    from test_dedup_verify import _digits

    X, _ = _digits(300)
    images = list(X) + [np.rot90(X[3]).copy(), X[5][2:, :].copy(), X[7].copy()]
    E = coldstart.embed_images(images)
    path = tmp_path / "cold.npy"
    np.save(path, E)
    mapped = np.load(path, mmap_mode="r")
    held = copyverify.candidates(images, 4, embeddings=E)
    i, j = copyverify.candidates(images, 4, embeddings=mapped)
    np.testing.assert_array_equal(i, held[0])
    np.testing.assert_array_equal(j, held[1])
    assert i.dtype == j.dtype == np.int64 and (i < j).all()
    key = i * len(E) + j
    assert (np.diff(key) > 0).all()  # sorted by (i, j), no pair twice
    nb = index.search(E, E, 3, exact=True)[1]
    nearest = [next(b for b in row if b != a) for a, row in enumerate(nb.tolist())]  # ties: a copy may be first
    assert {(min(a, b), max(a, b)) for a, b in enumerate(nearest)} <= set(zip(i.tolist(), j.tolist()))
    assert (7, len(images) - 1) in set(zip(i.tolist(), j.tolist()))  # the exact copy of row 7
    float(np.asarray(mapped).sum())  # every page read in again
    assert _mapped_rss_kib(path) > 0
    index.release(np.asarray(mapped)[10:])  # a plain view of the map: its memmap base is found
    assert _mapped_rss_kib(path) == 0
    np.testing.assert_array_equal(mapped, E)
    index.release(E)  # not mapped: nothing to do
    cow = np.load(path, mmap_mode="c")
    cow[0] = 7.0
    index.release(cow)  # copy-on-write: changed pages exist only here, so they are kept
    assert (cow[0] == 7.0).all()


def test_given_pairs_group_a_memory_mapped_set_without_copying_it(tmp_path):
    """With pairs given (``find_copies``), the rows only tell exact copies apart: a memory-mapped set is
    checked by chunks and not copied (147 MiB at 100k), its pages let go; the groups are those of the
    held set, exact copies included, and a NaN row in the map is still refused by row."""
    from curator.dedup import find_duplicates

    rng = np.random.default_rng(3)
    E = rng.normal(size=(500, 16)).astype(np.float32)
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    E[400] = E[10]  # an exact copy, found by comparing rows (no hashes)
    path = tmp_path / "e.npy"
    np.save(path, E)
    mapped = np.load(path, mmap_mode="r")
    pairs = (np.array([1, 2, 30]), np.array([2, 3, 31]))
    margin = np.array([0.1, 0.2, 0.05])
    held = find_duplicates(E, 0.9, pairs=pairs, compared=(*pairs, margin))
    got = find_duplicates(mapped, 0.9, pairs=pairs, compared=(*pairs, margin))
    assert [g.tolist() for g in got] == [g.tolist() for g in held] == [[1, 2, 3], [10, 400], [30, 31]]
    assert _mapped_rss_kib(path) == 0
    bad = E.copy()
    bad[7, 3] = np.nan
    np.save(path, bad)
    with pytest.raises(ValidationError, match=r"NaN.*rows \[7\]"):
        find_duplicates(np.load(path, mmap_mode="r"), 0.9, pairs=pairs)


def _stripes(freq: float, phase: float = 0.0, angle: float = 30.0, side: int = 96) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side] / side
    a = np.radians(angle)
    t = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (x * np.cos(a) + y * np.sin(a)) + phase)
    return np.repeat((40 + 180 * t)[..., None], 3, axis=2).astype(np.uint8)


def test_a_crop_of_a_textured_picture_is_a_candidate_through_the_centre_query():
    """A centre crop of fine stripes moves every stripe: its thumbnail is far from its original's (cosine
    ~0), and each has a nearer look-alike (the same stripes a little shifted), so neither upright query
    finds the other; the query cut to the centre (``QUERY_CROP``) is the copy's own thumbnail."""
    from curator import coldstart, copyverify

    share = copyverify.QUERY_CROP
    rng = np.random.default_rng(0)
    original = _stripes(11.0)
    copy = copyverify._cropped([original], share)[0]
    assert copy.shape[:2] == (round(96 * share), round(96 * share))
    lookalikes = [copyverify._cropped([_stripes(11.0, 0.15)], share)[0], _stripes(11.0, -0.15)]
    pool = [original, copy, *lookalikes] + [_stripes(rng.uniform(2, 9), rng.uniform(0, 6), rng.uniform(0, 180))
                                            for _ in range(30)]
    E = coldstart.embed_images(pool)
    assert E[0] @ E[1] < 0.5 < E[0] @ E[3] and E[1] @ E[2] > 0.5
    found = {q: set(zip(*(v.tolist() for v in copyverify.candidates(pool, 1, query_crop=q)))) for q in (None, share)}
    assert (0, 1) not in found[None]
    assert (0, 1) in found[share] and found[None] <= found[share]
    assert set(zip(*(v.tolist() for v in copyverify.candidates(pool, 1)))) == found[share]  # on by default


@pytest.mark.parametrize("share", [0.0, 1.0, 1.5, -0.2])
def test_a_crop_query_share_outside_zero_one_is_refused_by_name(share):
    from curator import copyverify

    pool = [_stripes(f) for f in (3.0, 4.0, 5.0)]
    with pytest.raises(ValidationError, match="query_crop"):
        copyverify.candidates(pool, 1, query_crop=share)
