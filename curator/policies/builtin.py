"""Built-in policies. Uncertainty scores use the predictive distribution: the
MC-dropout mean when the pool has ``mc_probs``, else ``probs`` (Gal et al. 2017)."""

from __future__ import annotations

import numpy as np

from curator import scores as S
from curator.novelty import GreedyNovelty
from curator.policies.base import Policy

__all__ = [
    "Random", "Entropy", "Margin", "LeastConfidence", "VariationRatio", "BALD",
    "Novelty", "KCenter", "Badge", "Uncertainty",
]


class Random(Policy):
    """Uniform sampling without replacement: the baseline every policy must beat."""

    name = "random"

    def _select(self, pool, budget, rng):
        return rng.choice(len(pool), size=budget, replace=False).astype(np.int64), None


class Entropy(Policy):
    name, requires = "entropy", ("probs",)
    row_local = True  # per-row formula: shards may be scored apart (Policy.row_local)

    def score(self, pool):
        return S.entropy(pool.mean_probs)


class Margin(Policy):
    name, requires = "margin", ("probs",)
    row_local = True  # per-row formula: shards may be scored apart (Policy.row_local)

    def score(self, pool):
        return S.margin(pool.mean_probs)


class LeastConfidence(Policy):
    name, requires = "least_confidence", ("probs",)
    row_local = True  # per-row formula: shards may be scored apart (Policy.row_local)

    def score(self, pool):
        return S.least_confidence(pool.mean_probs)


class VariationRatio(Policy):
    name, requires = "variation_ratio", ("probs",)
    row_local = True  # per-row formula: shards may be scored apart (Policy.row_local)

    def score(self, pool):
        return S.variation_ratio(pool.mean_probs)


class BALD(Policy):
    name, requires = "bald", ("mc_probs",)
    row_local = True  # per-row formula: shards may be scored apart (Policy.row_local)

    def score(self, pool):
        return S.bald(pool.mc_probs)


class Uncertainty(Policy):
    """BALD when the pool has MC-dropout passes, margin otherwise (used by ``curator``)."""

    name, requires = "uncertainty", ("probs",)
    row_local = True  # per-row formula: shards may be scored apart (Policy.row_local)

    def score(self, pool):
        if pool.mc_probs is not None:
            return S.bald(pool.mc_probs)
        return S.margin(pool.probs)


class Novelty(Policy):
    """Greedy: the sample farthest (mean cosine distance to its ``k`` nearest)
    from labeled ∪ already-selected samples, one at a time."""

    name, requires = "novelty", ("embeddings",)

    def __init__(self, k: int = 5):
        self.k = k

    def score(self, pool):
        return GreedyNovelty(pool.unit_embeddings, pool.unit_labeled, self.k).scores.astype(np.float64)

    def _select(self, pool, budget, rng):
        g = GreedyNovelty(pool.unit_embeddings, pool.unit_labeled, self.k)
        jitter = rng.random(len(pool)) * 1e-9  # seeded tie-break
        chosen, gains = [], []
        taken = np.zeros(len(pool), bool)
        for _ in range(budget):
            s = np.where(taken, -np.inf, g.scores + jitter)
            i = int(np.argmax(s))
            chosen.append(i)
            gains.append(float(g.scores[i]))
            taken[i] = True
            g.add(i)
        return np.array(chosen, np.int64), np.array(gains)


def _sq_dist_to(X: np.ndarray, x: np.ndarray, X_sq: np.ndarray) -> np.ndarray:
    return np.maximum(X_sq - 2.0 * (X @ x) + float(x @ x), 0.0)


class KCenter(Policy):
    """Greedy k-center coreset (Sener & Savarese 2018) in embedding space.

    Each pick is the pool sample farthest from its nearest center, the centers
    being the labeled samples and the picks so far; without labeled samples
    the first center is drawn by the seeded generator.
    """

    name, requires = "kcenter", ("embeddings",)

    def _select(self, pool, budget, rng):
        X = np.asarray(pool.embeddings, dtype=np.float32)
        X_sq = np.einsum("ij,ij->i", X, X)
        L = pool.labeled_embeddings
        if L is not None and len(L):
            from curator.index import search

            # nearest labeled center by squared L2: ||x||^2 - 2 max(<x, l> - ||l||^2 / 2)
            L = np.asarray(L, np.float32)
            aug_L = np.hstack([L, -0.5 * np.einsum("ij,ij->i", L, L)[:, None]]).astype(np.float32)
            aug_X = np.hstack([X, np.ones((len(X), 1), np.float32)])
            sims, _ = search(aug_L, aug_X, 1)
            mind = np.maximum(X_sq - 2.0 * sims[:, 0], 0.0)
            chosen, gains = [], []
        else:
            first = int(rng.integers(len(X)))
            mind = _sq_dist_to(X, X[first], X_sq)
            chosen, gains = [first], [np.nan]
        while len(chosen) < budget:
            d = mind.copy()
            d[chosen] = -1.0
            i = int(np.argmax(d))
            chosen.append(i)
            gains.append(float(np.sqrt(max(mind[i], 0.0))))
            mind = np.minimum(mind, _sq_dist_to(X, X[i], X_sq))
        return np.array(chosen, np.int64), np.array(gains)


class Badge(Policy):
    """BADGE (Ash et al. 2020): k-means++ seeding over gradient embeddings.

    The gradient embedding of a sample is (p - onehot(argmax p)) ⊗ e; its
    inner products factor as <a_i, a_j> <e_i, e_j>, so the (n, classes x d)
    matrix is never built.
    """

    name, requires = "badge", ("embeddings", "probs")

    def _select(self, pool, budget, rng):
        E = np.asarray(pool.embeddings, dtype=np.float64)
        P = np.asarray(pool.mean_probs, dtype=np.float64)
        A = P.copy()
        A[np.arange(len(P)), P.argmax(1)] -= 1.0
        e_sq = np.einsum("ij,ij->i", E, E)
        a_sq = np.einsum("ij,ij->i", A, A)
        g_sq = e_sq * a_sq

        def dist(i):
            return np.maximum(g_sq + g_sq[i] - 2.0 * (A @ A[i]) * (E @ E[i]), 0.0)

        first = int(np.argmax(g_sq + rng.random(len(g_sq)) * 1e-12))  # largest gradient first
        chosen, gains = [first], [float(np.sqrt(g_sq[first]))]
        mind = dist(first)
        taken = np.zeros(len(E), bool)
        taken[first] = True
        while len(chosen) < budget:
            w = np.where(taken, 0.0, mind)
            total = w.sum()
            if total <= 0:  # all remaining points coincide with centers
                i = int(rng.choice(np.flatnonzero(~taken)))
            else:
                i = int(rng.choice(len(w), p=w / total))
            chosen.append(i)
            gains.append(float(np.sqrt(mind[i])))
            taken[i] = True
            mind = np.minimum(mind, dist(i))
        return np.array(chosen, np.int64), np.array(gains)
