"""Cold-start policies (typical = TypiClust, coverage = ProbCover) and stochastic batch
acquisition (power, powerbald): conformance, what each is meant to pick on planted data,
the purity estimate of the radius against brute force, and clear errors for bad parameters."""

from __future__ import annotations

import numpy as np
import pytest

from curator import Pool, policies
from curator.exceptions import CuratorError, ValidationError
from curator.policies.batch import Power, PowerBALD
from curator.policies.coldstart import Coverage, Typical, coverage_greedy, purity_radius, typicality
from curator.testing import check_policy, make_pool

NEW = ["typical", "coverage", "power", "powerbald"]


def blobs(sizes, d=8, spread=0.15, seed=0):
    """Well separated clusters of the given sizes: (embeddings, blob of each row, centres)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(d)[: len(sizes)] * 3.0 + 1.0  # distinct directions (cosine is what counts)
    y = np.repeat(np.arange(len(sizes)), sizes)
    X = centres[y] + spread * rng.normal(size=(len(y), d))
    return X.astype(np.float32), y, centres


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --------------------------------------------------------------------------- conformance


@pytest.mark.parametrize("name", NEW)
def test_registered_and_conformant(name):
    assert name in policies.available()
    assert policies.origin(name) == "built-in"
    check_policy(name)


@pytest.mark.parametrize("policy", [
    Typical(k=5, max_clusters=7), Coverage(delta=0.3), Coverage(alpha=0.8, clusters=3),
    Power("entropy", beta=2.0), Power("margin", mode="softrank"), Power("least_confidence", mode="softmax", beta=5),
], ids=repr)
def test_variants_conform_with_and_without_labeled(policy):
    check_policy(policy)
    pool = make_pool(n=120)
    check_policy(policy, pool=Pool(embeddings=pool.embeddings, probs=pool.probs, mc_probs=pool.mc_probs))


def test_parameters_are_recorded():
    assert policies.get("typical", k=7).get_params() == {"k": 7, "max_clusters": 500, "min_cluster_size": 5}
    assert policies.get("coverage", delta=0.5).get_params() == {"delta": 0.5, "alpha": 0.95, "clusters": None,
                                                                "max_edges": 50_000_000}
    assert policies.get("powerbald", beta=2).get_params() == {"beta": 2.0}
    assert policies.get("power", policy="entropy", mode="softrank").get_params() == {
        "policy": "entropy", "beta": 1.0, "mode": "softrank"}


@pytest.mark.parametrize("name, params, needle", [
    ("coverage", {"delta": 0}, "delta"),
    ("coverage", {"delta": -0.1}, "delta"),
    ("coverage", {"delta": 2.5}, "delta"),
    ("coverage", {"delta": float("nan")}, "delta"),
    ("coverage", {"alpha": 1.0}, "alpha"),
    ("coverage", {"clusters": 1}, "clusters"),
    ("typical", {"k": 0}, "k must"),
    ("typical", {"max_clusters": 0}, "max_clusters"),
    ("powerbald", {"beta": 0}, "beta"),
    ("powerbald", {"beta": -1.0}, "beta"),
    ("power", {"beta": float("inf")}, "beta"),
    ("power", {"mode": "cubic"}, "mode"),
    ("power", {"policy": "kcenter"}, "no per-sample score"),
    ("typical", {"radius": 1}, "accepts"),
])
def test_bad_parameters_raise_one_clear_error(name, params, needle):
    with pytest.raises(ValidationError, match=needle):
        policies.get(name, **params)


def test_coverage_with_too_few_samples_for_the_estimate_says_so():
    X, _, _ = blobs([3, 3])
    with pytest.raises(ValidationError, match="too few samples"):
        policies.get("coverage").select(Pool(embeddings=X), budget=2, seed=0)
    # an explicit radius needs no estimate
    assert len(policies.get("coverage", delta=0.2).select(Pool(embeddings=X), budget=2, seed=0)) == 2


# --------------------------------------------------------------------------- typical


def test_typicality_is_inverse_mean_knn_distance():
    rng = np.random.default_rng(1)
    X = unit(rng.normal(size=(40, 5))).astype(np.float32)
    D = np.sqrt(np.maximum(2 - 2 * (X.astype(np.float64) @ X.T.astype(np.float64)), 0))
    np.fill_diagonal(D, np.inf)
    want = 1 / (np.sort(D, 1)[:, :6].mean(1) + 1e-5)
    np.testing.assert_allclose(typicality(X, 6), want, rtol=1e-4)
    assert typicality(X[:1], 20).tolist() == [0.0]  # a lone point
    assert typicality(X[:3], 20).shape == (3,)  # k shrinks to the 2 other points


def test_typical_takes_one_dense_central_point_per_cluster_largest_first():
    X, y, centres = blobs([400, 200, 100, 60, 30])
    pos = policies.get("typical").select(Pool(embeddings=X), budget=5, seed=0)
    assert sorted(y[pos].tolist()) == [0, 1, 2, 3, 4]
    assert y[pos[0]] == 0  # the largest cluster first
    # each pick is among the most central members of its blob (typical = dense = central here)
    U = unit(X)  # the policy measures cosine distances
    for p in pos:
        members = np.flatnonzero(y == y[p])
        d = np.linalg.norm(U[members] - U[members].mean(0), axis=1)
        assert np.linalg.norm(U[p] - U[members].mean(0)) <= np.quantile(d, 0.15)


def test_typical_skips_clusters_the_labeled_set_covers():
    X, y, centres = blobs([300, 250, 200, 150])
    L = centres[[0, 1]] + 0.01
    pos = policies.get("typical").select(Pool(embeddings=X, labeled_embeddings=L), budget=2, seed=0)
    assert sorted(y[pos].tolist()) == [2, 3]
    # a larger budget goes back to the covered clusters only after every uncovered one
    pos = policies.get("typical").select(Pool(embeddings=X, labeled_embeddings=L), budget=4, seed=0)
    assert sorted(y[pos[:2]].tolist()) == [2, 3]


def test_typical_leaves_outlier_clusters_for_last():
    X, y, _ = blobs([300, 200, 2])  # a 2-point cluster is below min_cluster_size
    pos = policies.get("typical", max_clusters=3).select(Pool(embeddings=X), budget=3, seed=0)
    assert 2 not in y[pos[:2]].tolist()


def test_typical_depends_on_the_seed_only_through_kmeans_and_ties():
    X, y, _ = blobs([200, 200, 200], spread=0.6)
    a = policies.get("typical").select(Pool(embeddings=X), budget=3, seed=0)
    b = policies.get("typical").select(Pool(embeddings=X), budget=3, seed=0)
    assert np.array_equal(a, b)


# --------------------------------------------------------------------------- coverage


def _brute_r(X, pseudo):
    D = np.sqrt(np.maximum(2 - 2 * (X.astype(np.float64) @ X.T.astype(np.float64)), 0))
    D[pseudo[:, None] == pseudo[None, :]] = np.inf
    return D.min(1)


@pytest.mark.parametrize("alpha", [0.95, 0.8, 0.5, 0.999])
def test_purity_radius_is_the_largest_radius_with_pure_balls_for_alpha_of_points(alpha):
    rng = np.random.default_rng(3)
    X = unit(rng.normal(size=(300, 6))).astype(np.float32)
    pseudo = (X[:, 0] > 0).astype(int) + 2 * (X[:, 1] > 0.3)
    delta = purity_radius(X, pseudo, alpha, sample=10_000)
    D = np.sqrt(np.maximum(2 - 2 * (X.astype(np.float64) @ X.T.astype(np.float64)), 0))

    def purity(r):  # brute force: share of balls B(x, r) holding one pseudo-label
        inside = D <= r
        return np.mean([len(np.unique(pseudo[inside[i]])) == 1 for i in range(len(X))])

    r = _brute_r(X, pseudo)
    assert purity(delta * (1 - 1e-5)) >= alpha
    assert purity(np.min(r[r > delta * (1 + 1e-5)]) * (1 + 1e-6)) < alpha  # the next larger radius breaks it
    assert purity_radius(X, np.zeros(300, int), alpha) == 2.0  # one pseudo-class: all pure


def _balls(X, L, delta):
    # balls as curator.index counts them: cosine >= 1 - delta^2 / 2, less its float tolerance SIM_EPS
    from curator.index import SIM_EPS

    t = 1 - delta * delta / 2 - SIM_EPS
    B = X.astype(np.float64) @ X.T.astype(np.float64) >= t
    unc = np.ones(len(X), bool)
    if len(L):
        unc[(L.astype(np.float64) @ X.T.astype(np.float64) >= t).any(0)] = False
    return B, unc


@pytest.mark.parametrize("with_labeled", [False, True])
def test_coverage_greedy_takes_the_largest_gain_at_every_step(with_labeled):
    rng = np.random.default_rng(5)
    X = unit(rng.normal(size=(150, 4))).astype(np.float32)
    L = unit(rng.normal(size=(6, 4))).astype(np.float32) if with_labeled else np.zeros((0, 4), np.float32)
    delta = 0.7
    pos, gains = coverage_greedy(X, L, delta, 12, np.random.default_rng(0), max_edges=10**7)
    B, unc = _balls(X, L, delta)  # replay the picks by brute force
    for p, g in zip(pos, gains):
        counts = (B & unc[None, :]).sum(1)
        assert g == counts[p] == counts.max()
        unc[B[p]] = False
    assert len(set(pos.tolist())) == 12


def test_coverage_estimates_delta_and_covers_every_blob():
    X, y, centres = blobs([300, 150, 80, 40], spread=0.3)
    pol = policies.get("coverage", clusters=4)
    pos = pol.select(Pool(embeddings=X), budget=4, seed=0)
    assert sorted(y[pos].tolist()) == [0, 1, 2, 3]
    assert 0 < pol.last_delta < 2


def test_coverage_counts_labeled_balls_as_covered():
    X, y, centres = blobs([300, 150, 80], spread=0.2)
    L = centres[[0]]
    pos = policies.get("coverage", delta=0.3).select(Pool(embeddings=X, labeled_embeddings=L), budget=2, seed=0)
    assert sorted(y[pos].tolist()) == [1, 2]


def test_coverage_refuses_a_graph_larger_than_max_edges():
    X, _, _ = blobs([100, 100])
    with pytest.raises(CuratorError, match="max_edges"):
        policies.get("coverage", delta=1.9, max_edges=1000).select(Pool(embeddings=X), budget=2, seed=0)


# --------------------------------------------------------------------------- power / powerbald


def _score_pool(scores):
    s = np.asarray(scores, float)
    return Pool(embeddings=np.c_[s, np.ones_like(s)]), (lambda pool: np.asarray(pool.embeddings[:, 0], float))


@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_power_draws_in_proportion_to_score_to_the_beta(beta):
    scores = [1.0, 2.0, 3.0, 4.0]
    pool, fn = _score_pool(scores)
    pol = Power(fn, beta=beta)
    draws = np.array([pol.select(pool, budget=1, seed=s)[0] for s in range(4000)])
    freq = np.bincount(draws, minlength=4) / len(draws)
    want = np.array(scores) ** beta / np.sum(np.array(scores) ** beta)
    assert np.abs(freq - want).max() < 0.03, (freq, want)


def test_power_takes_zero_scores_only_when_the_budget_needs_them():
    pool, fn = _score_pool([0.0, 0.5, 0.0, 2.0, 1.0])
    for seed in range(20):
        pos = Power(fn).select(pool, budget=3, seed=seed)
        assert set(pos.tolist()) == {1, 3, 4}
    assert len(Power(fn).select(pool, budget=5, seed=0)) == 5


def test_power_with_a_large_beta_is_top_k_and_with_small_beta_spreads():
    pool = make_pool(n=300)
    top = set(policies.get("bald").select(pool, budget=10, seed=0).tolist())
    assert set(policies.get("powerbald", beta=200).select(pool, budget=10, seed=0).tolist()) == top
    picks = [set(policies.get("powerbald").select(pool, budget=10, seed=s).tolist()) for s in range(5)]
    assert all(p != top for p in picks)
    assert len(set.union(*picks)) > 20  # different seeds draw different batches


def test_power_refuses_negative_scores_in_power_mode_and_accepts_them_in_softrank():
    pool, fn = _score_pool([-1.0, 0.5, 2.0])
    with pytest.raises(CuratorError, match="softrank"):
        Power(fn).select(pool, budget=1, seed=0)
    assert len(Power(fn, mode="softrank").select(pool, budget=2, seed=0)) == 2


def test_powerbald_needs_mc_probs_and_names_them():
    pool = make_pool(n=50)
    with pytest.raises(ValidationError, match="mc_probs"):
        PowerBALD().select(Pool(embeddings=pool.embeddings, probs=pool.probs), budget=2, seed=0)


def test_power_is_set_based_so_shards_cannot_replace_the_draw_by_top_k():
    assert not policies.get("powerbald").is_score_based
    assert not policies.get("power").is_score_based


def test_power_batch_is_not_ten_copies_of_one_uncertain_sample():
    # 30 near-identical samples share the highest score; 300 distinct ones score a little lower
    rng = np.random.default_rng(0)
    scores = np.r_[np.full(30, 1.0), rng.uniform(0.5, 0.9, size=300)]
    pool, fn = _score_pool(scores)
    top = Power(fn, beta=500).select(pool, budget=10, seed=0)  # beta -> infinity: top-k
    assert (top < 30).all()  # top-k: the whole batch from the copies
    from_copies = [int((Power(fn).select(pool, budget=10, seed=s) < 30).sum()) for s in range(50)]
    assert np.mean(from_copies) < 2.5  # about 10 x 30 / (30 + 300 x 0.7) = 1.25 expected
