"""Executors (issue 14): the in-process executor's shard pieces, and the Ray executor giving the
local answer on a real two-node cluster (``ray_address``; `make test` starts it).

Same answer means: scores to float tolerance, duplicate groups and selections exactly.
"""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from curator import executors as ex
from curator import policies
from curator.dedup import find_duplicates
from curator.policies.base import keyed_top, tie_key, top_k
from curator.policies.compose import Weighted
from curator.pool import Pool
from curator.testing import make_pool

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "datasets" / "mnist1989"
SHARDABLE = ("entropy", "margin", "least_confidence", "variation_ratio", "bald")


# --------------------------------------------------------------------------- data


def planted(n: int = 20_000, d: int = 32, seed: int = 0):
    """Clustered unit vectors with exact copies and near copies (cos ~ 0.995-0.9999) planted."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n // 500, d)).astype(np.float32)
    x = centres[rng.integers(len(centres), size=n)] + 0.15 * rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    src = rng.choice(n, 600, replace=False)
    dst = rng.choice(np.setdiff1d(np.arange(n), src), 600, replace=False)
    x[dst[:200]] = x[src[:200]]  # exact copies
    noise = rng.standard_normal((400, d), dtype=np.float32) * rng.uniform(0.002, 0.015, (400, 1)).astype(np.float32)
    near = x[src[200:]] + noise
    x[dst[200:]] = near / np.linalg.norm(near, axis=1, keepdims=True)
    return x


def tied_pool(n: int = 3000, seed: int = 0) -> Pool:
    """A pool whose probabilities repeat a few rows, so scores tie across shards."""
    base = make_pool(n=40, seed=seed)
    rows = np.random.default_rng(seed).integers(40, size=n)
    return Pool(embeddings=base.embeddings[rows], probs=base.probs[rows], mc_probs=base.mc_probs[:, rows],
                labeled_embeddings=base.labeled_embeddings)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """300 bundled MNIST-1989 digits written as PNG files, with their labels."""
    from PIL import Image

    from curator.ingest.idx import iter_images, read_labels

    out = tmp_path_factory.mktemp("png")
    _, block = next(iter_images(SAMPLE / "test-images-idx3-ubyte.gz", batch_size=300))
    labels = read_labels(SAMPLE / "test-labels-idx1-ubyte.gz")[:300]
    uris = []
    for k, img in enumerate(block[:300]):
        path = out / f"{k:04d}.png"
        Image.fromarray(img).save(path)
        uris.append(str(path))
    return uris, block[:300], labels


@pytest.fixture(scope="module")
def model_path(images, tmp_path_factory):
    """A small built-in CNN trained briefly on the first 200 digits (dropout on: MC passes differ)."""
    from curator.models import train_classifier

    _, block, labels = images
    model = train_classifier(block[:200], labels[:200], num_classes=10, steps=20, seed=0, device="cpu")
    return model.save(tmp_path_factory.mktemp("model") / "cnn.pt")


@pytest.fixture
def small_shards(monkeypatch):
    """Shards of 64 positions, so a few hundred samples make several shards (read on the driver)."""
    monkeypatch.setattr(ex, "SHARD_SIZE", 64)
    return 64


# --------------------------------------------------------------------------- local, fast


def test_core_works_without_ray():
    """`import curator`, the local executor and its three steps run with `import ray` failing;
    asking for Ray then says which extra to install, in one line."""
    code = textwrap.dedent("""
        import sys
        sys.modules["ray"] = None  # import ray raises ImportError
        import numpy as np
        import curator
        from curator import executors
        from curator.exceptions import MissingExtraError
        from curator.testing import make_pool
        e = executors.get_executor("local")
        pool = make_pool(n=50)
        pos, _ = e.select("entropy", pool, 5, seed=0)
        x = np.eye(4, dtype=np.float32)[[0, 0, 1, 2]]
        i, j, _, _ = e.self_pairs(x, 0.99)
        assert (i.tolist(), j.tolist()) == ([0], [1]), (i, j)
        try:
            executors.get_executor("ray")
        except MissingExtraError as err:
            print("refused:", err)
        assert not any(m == "ray" or m.startswith("ray.") for m in sys.modules if sys.modules[m] is not None)
        print("ok", len(pos))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ok 5" in out.stdout
    assert "refused: ray is not installed; install it with: pip install 'curator-loop[ray]'" in out.stdout


def test_get_executor_names_and_options():
    from curator.exceptions import ValidationError
    from curator.settings import Settings

    assert isinstance(ex.get_executor(Settings()), ex.LocalExecutor)
    assert isinstance(ex.get_executor("local"), ex.Executor)
    with pytest.raises(ValidationError, match="unknown executor 'spark'; choose one of local, ray"):
        ex.get_executor("spark")
    with pytest.raises(ValidationError, match="local executor takes no options"):
        ex.get_executor("local", concurrency=2)


@pytest.mark.parametrize("budget", [1, 7, 100, 640])
def test_top_k_split_invariant(budget):
    """Per-shard top-k merged == global top-k, whatever the split, with most scores tied."""
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=1000).astype(np.float64)  # ~250 rows per value: ties everywhere
    want = top_k(scores, budget, np.random.default_rng(5))
    key = tie_key(np.random.default_rng(5))
    positions = np.arange(1000)
    for size in (1, 3, 64, 333, 1000):
        cands = [positions[a:b][keyed_top(scores[a:b], positions[a:b], key, budget)]
                 for a, b in ex.shard_bounds(1000, size)]
        merged = np.concatenate(cands)
        got = merged[keyed_top(scores[merged], merged, key, budget)]
        np.testing.assert_array_equal(got, want)
    assert np.all(np.diff(scores[want]) <= 0)  # best first


def test_top_k_ties_are_seeded_not_positional():
    scores = np.zeros(500)
    a = top_k(scores, 50, np.random.default_rng(0))
    b = top_k(scores, 50, np.random.default_rng(1))
    assert len(set(a.tolist())) == 50
    assert not np.array_equal(a, b)  # the seed decides the tie order
    assert not np.array_equal(np.sort(a), np.arange(50))  # not the lowest positions
    np.testing.assert_array_equal(a, top_k(scores, 50, np.random.default_rng(0)))


@pytest.mark.parametrize("name", SHARDABLE)
def test_sharded_select_equals_select(name, small_shards):
    """The shard pieces the Ray executor runs give select_scored's answer exactly, values too."""
    pool = tied_pool()
    policy = policies.get(name)
    assert policy.is_shardable
    for budget in (1, 50, 130):
        want = policy.select_scored(pool, budget, 11)
        p, b, key = ex.prepare_select(policy, pool, budget, 11)
        parts = [ex.shard_candidates(p, pool, lo, hi, b, key) for lo, hi in ex.shard_bounds(len(pool))]
        assert len(parts) == 47
        got = ex.merge_candidates(p, parts, b, key, len(pool))
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_policies_scored_whole_are_not_sharded():
    """A greedy, set-based, rank-normalised or unknown score runs whole (per-shard would differ)."""
    for policy in (policies.get("novelty"), policies.get("random"), policies.get("kcenter"),
                   Weighted({"entropy": 1.0, "bald": 1.0}), policies.get("curator")):
        assert ex.prepare_select(policy, tied_pool(200), 5, 0) is None, policy


def test_duplicates_rerank_makes_search_paths_agree():
    """A search hook returning loose candidates (and noisy similarities) gives the default groups:
    the candidates are re-ranked by exact float64 similarity."""
    from curator import index

    x = planted(3000, seed=2)
    calls = []

    def loose(units, t, *, exact=None, seed=0):
        calls.append(len(units))
        i, j, s, info = index.self_pairs(units, t - 0.02, exact=exact, seed=seed)
        return i, j, s + np.float32(0.5), info  # similarities nonsense: must not be trusted

    want, info = find_duplicates(x, 0.99, return_info=True)
    got, info2 = find_duplicates(x, 0.99, search=loose, return_info=True)
    assert calls and info["near_pairs"] > 300
    assert [g.tolist() for g in got] == [g.tolist() for g in want]
    assert info2["near_pairs"] == info["near_pairs"]
    # and the exact re-rank is what decides: pairs of float64 similarity below the threshold go
    i, j, _, _ = index.self_pairs(x, 0.97)
    sims = index.pair_sims(x, i, j)
    assert ((sims >= 0.97 - index.SIM_EPS) & (sims < 0.99)).any()


def test_pair_sims_exact_float64():
    from curator import index

    x = np.random.default_rng(3).standard_normal((20, 8)).astype(np.float32)
    i, j = np.array([0, 5, 7]), np.array([1, 9, 7])
    want = (x[i].astype(np.float64) * x[j].astype(np.float64)).sum(1)
    np.testing.assert_allclose(index.pair_sims(x, i, j, block=2), want, rtol=0, atol=1e-15)


def test_local_predict_seeds_each_shard(images, model_path, small_shards):
    """Shard k's MC dropout is seeded by derive(seed, round, "score", k): the executor's answer is
    each shard predicted alone with that seed; another round draws other passes."""
    from curator.models import load_classifier
    from curator.seeds import derive

    uris, block, _ = images
    got = ex.LocalExecutor().predict(uris, model_path, mc_samples=4, seed=3, round=2)
    assert got.probs.shape == (300, 10) and got.mc_probs.shape == (4, 300, 10)
    adapter = load_classifier(model_path)
    for k, (a, b) in enumerate(ex.shard_bounds(300)):
        alone = adapter.predict(block[a:b], mc_samples=4, seed=derive(3, round=2, stage="score", shard=k))
        np.testing.assert_array_equal(got.mc_probs[:, a:b], alone.mc_probs)
        np.testing.assert_array_equal(got.embeddings[a:b], alone.embeddings)
    assert not np.allclose(got.mc_probs[0], got.mc_probs[1])  # dropout is on
    other = ex.LocalExecutor().predict(uris, model_path, mc_samples=4, seed=3, round=3, adapter=adapter)
    np.testing.assert_array_equal(other.probs, got.probs)  # deterministic part unchanged
    assert not np.allclose(other.mc_probs, got.mc_probs)


def test_local_predict_bad_input(images):
    from curator.exceptions import ValidationError

    uris, _, _ = images
    with pytest.raises(ValidationError, match="mc_samples must be 0 .off. or at least 2"):
        ex.LocalExecutor().predict(uris, "m.pt", mc_samples=1, seed=0, round=0)
    with pytest.raises(ValidationError, match="model file .*missing.pt does not exist"):
        ex.LocalExecutor().predict(uris, "missing.pt", mc_samples=0, seed=0, round=0)
    with pytest.raises(ValidationError, match="no images to score"):
        ex.LocalExecutor().predict([], "m.pt", mc_samples=0, seed=0, round=0)


# --------------------------------------------------------------------------- Ray cluster


@pytest.fixture(scope="module")
def ray_exec(ray_address):
    import ray

    from curator.integrations.ray import RayExecutor

    # two shards per actor call (the local executor predicts one at a time): batching must not matter
    executor = ex.get_executor("ray", address=ray_address, concurrency=2, num_cpus=1, batch_size=2)
    assert isinstance(executor, RayExecutor)
    yield executor
    ray.shutdown()


@pytest.mark.slow
def test_ray_cluster_has_two_nodes(ray_exec):
    import ray

    ray_exec._connect()
    alive = [n for n in ray.nodes() if n["Alive"]]
    assert len(alive) == 2, alive


@pytest.mark.slow
def test_ray_predict_equals_local(ray_exec, images, model_path, small_shards):
    """Model actors over 5 shards (two actors, one per node; two shards per call): the local
    scores, in order."""
    uris, _, _ = images
    want = ex.LocalExecutor().predict(uris, model_path, mc_samples=4, seed=7, round=1)
    got = ray_exec.predict(uris, model_path, mc_samples=4, seed=7, round=1)
    np.testing.assert_allclose(got.probs, want.probs, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got.embeddings, want.embeddings, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got.mc_probs, want.mc_probs, rtol=0, atol=1e-5)
    # and the selection made from those scores is the local one
    pool = Pool(embeddings=got.embeddings, probs=got.probs, mc_probs=got.mc_probs)
    for name in ("bald", "margin"):
        local = ex.LocalExecutor().select(name, Pool(embeddings=want.embeddings, probs=want.probs,
                                                     mc_probs=want.mc_probs), 20, seed=4)
        np.testing.assert_array_equal(ray_exec.select(name, pool, 20, seed=4)[0], local[0])


@pytest.mark.slow
def test_ray_duplicates_equal_local(ray_exec):
    """20,000 planted rows through the partitioned search, cells searched as tasks on both nodes:
    the same pairs and exactly the same groups."""
    x = planted()
    li, lj, _, linfo = ex.LocalExecutor().self_pairs(x, 0.99, exact=False)
    ri, rj, _, rinfo = ray_exec.self_pairs(x, 0.99, exact=False)
    assert linfo["index"] == rinfo["index"] == "partitioned" and rinfo["tasks"] > 1
    assert linfo["truncated"] == rinfo["truncated"] == 0  # both exact: the same pairs, whatever the cells
    np.testing.assert_array_equal(ri, li)
    np.testing.assert_array_equal(rj, lj)
    want = find_duplicates(x, 0.99, exact=False)
    got = find_duplicates(x, 0.99, exact=False, search=ray_exec.self_pairs)
    assert len(want) >= 500
    assert [g.tolist() for g in got] == [g.tolist() for g in want]


@pytest.mark.slow
def test_ray_select_equals_local(ray_exec, small_shards):
    """Per-shard candidates on the cluster and the driver's merge: exactly the local selection,
    ties included; a set-based policy (run on the driver) too."""
    pool = tied_pool()
    for name, budget in (("entropy", 100), ("bald", 7), ("margin", 300), ("kcenter", 10)):
        want = ex.LocalExecutor().select(name, pool, budget, seed=9)
        got = ray_exec.select(name, pool, budget, seed=9)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.slow
def test_ray_worker_error_is_one_line(ray_exec, images, model_path, tmp_path):
    """A missing image met on a worker comes back as curator's one-line error, not a Ray traceback."""
    from curator.exceptions import ValidationError

    uris, _, _ = images
    missing = str(tmp_path / "gone.png")
    with pytest.raises(ValidationError) as err:
        ray_exec.predict([uris[0], missing], model_path, mc_samples=0, seed=0, round=0)
    assert "gone.png is missing" in str(err.value)
    assert "\n" not in str(err.value)


def test_only_the_ray_integration_imports_ray():
    """Nothing in curator imports ray but curator/integrations/ray (the core names it, lazily)."""
    import ast

    bad = []
    for path in sorted((ROOT / "curator").rglob("*.py")):
        if (ROOT / "curator" / "integrations" / "ray") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            bad += [f"{path.relative_to(ROOT)} imports {n}" for n in names
                    if n.split(".")[0] == "ray" or n.startswith("curator.integrations.ray")]
    assert not bad, bad


def test_settings_executor_fields(monkeypatch, tmp_path):
    """executor and ray_* from the environment and the config file; bad values in one line."""
    from curator.exceptions import ValidationError
    from curator.settings import load_settings

    monkeypatch.setenv("CURATOR_EXECUTOR", "Ray")
    monkeypatch.setenv("CURATOR_RAY_ADDRESS", " 127.0.0.1:6390 ")
    monkeypatch.setenv("CURATOR_RAY_NUM_GPUS", "0.5")
    cfg = tmp_path / "c.toml"
    cfg.write_text("[curator]\nray_concurrency = 4\nray_batch_size = 2\nray_num_cpus = 2.0\n")
    s = load_settings(cfg)
    assert (s.executor, s.ray_address, s.ray_concurrency, s.ray_batch_size, s.ray_num_cpus, s.ray_num_gpus) \
        == ("ray", "127.0.0.1:6390", 4, 2, 2.0, 0.5)
    for env, value, message in (
        ("CURATOR_EXECUTOR", "spark", "executor must be one of local, ray; got 'spark'"),
        ("CURATOR_RAY_CONCURRENCY", "0", "ray_concurrency must be a whole number >= 1; got '0'"),
        ("CURATOR_RAY_NUM_GPUS", "-1", "ray_num_gpus must be a number >= 0"),
        ("CURATOR_RAY_NUM_CPUS", "lots", "ray_num_cpus must be a number > 0; got 'lots'"),
    ):
        monkeypatch.setenv(env, value)
        with pytest.raises(ValidationError, match=message) as err:
            load_settings(cfg)
        assert "\n" not in str(err.value)
        monkeypatch.delenv(env)
    cfg.write_text('[curator]\nray_batch_size = "two"\n')
    with pytest.raises(ValidationError, match="ray_batch_size must be a number"):
        load_settings(cfg)


def test_ray_executor_arguments():
    pytest.importorskip("ray")
    from curator.exceptions import ValidationError
    from curator.integrations.ray import RayExecutor
    from curator.settings import Settings

    e = ex.get_executor(Settings(executor="ray", ray_address="10.0.0.1:6379", ray_concurrency=3, ray_num_gpus=1),
                        batch_size=2)
    assert (e.address, e.batch_size, e.concurrency, e.num_cpus, e.num_gpus) == ("10.0.0.1:6379", 2, 3, 1.0, 1.0)
    for kw, message in ((dict(concurrency=0), "concurrency must be a whole number >= 1"),
                        (dict(batch_size=1.5), "batch_size must be a whole number >= 1"),
                        (dict(num_cpus=0), "num_cpus must be a number > 0"),
                        (dict(num_gpus=-1), "num_gpus must be a number >= 0"),
                        (dict(address=""), "address must be host:port")):
        with pytest.raises(ValidationError, match=message):
            RayExecutor(**kw)


def test_ray_unreachable_cluster_is_one_line():
    """A dead address is refused at once in one line (ray.init alone retries it for minutes)."""
    pytest.importorskip("ray")
    import socket

    from curator.exceptions import IntegrationError
    from curator.integrations.ray import RayExecutor

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(IntegrationError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}") as err:
        RayExecutor(address=f"127.0.0.1:{port}").select("entropy", make_pool(n=50), 3, seed=0)
    assert "\n" not in str(err.value)


def test_cli_refuses_an_unreachable_cluster_before_any_work(tmp_path):
    """``curator select --executor ray --ray-address DEAD``: one error line, and no model trained,
    no round recorded (the cluster is joined before the work starts)."""
    pytest.importorskip("ray")
    import socket

    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.integers(0, 255, (40, 8, 8), dtype=np.uint8))
    env = {**os.environ, "CURATOR_WORKSPACE": str(tmp_path / "ws"), "CURATOR_DB_URL": ""}
    env.pop("CURATOR_DB_URL")

    def curator(*args):
        return subprocess.run([sys.executable, "-m", "curator", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    assert curator("ingest", str(tmp_path / "x.npy"), "--dataset", "d").returncode == 0
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = curator("select", "--dataset", "d", "-n", "2", "--policy", "random", "--executor", "ray",
                   "--ray-address", f"127.0.0.1:{port}")
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"cannot reach the Ray cluster at 127.0.0.1:{port}" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "ws" / "models").exists()  # nothing was trained
    rounds = curator("push", "--round", "1", "--dataset", "d")  # round 1 does not exist
    assert rounds.returncode != 0 and "round 1" in rounds.stderr
