"""Cold-start policies: what to label first when there is no useful model yet.

At tiny budgets, picking by model uncertainty fails (the model knows nothing);
picking *representative* samples of the embedding wins (Hacohen et al. 2022,
Yehuda et al. 2022). Both policies here need only ``embeddings`` (best: a
self-supervised embedding of the pool); ``labeled_embeddings``, when given,
mark the parts of the data that are already covered.

* ``typical`` (TypiClust): k-means into (labeled + budget) clusters; the
  largest cluster with no labeled or selected member gives its most *typical*
  point (the densest: smallest mean distance to its K nearest neighbours).
* ``coverage`` (ProbCover): greedy maximum coverage of balls of radius
  ``delta``; ``delta`` is estimated from the data as the largest radius whose
  balls stay pure (>= ``alpha``) w.r.t. k-means pseudo-labels.

Distances are Euclidean between L2-normalised embeddings (as both papers do
with SimCLR features): ``d = sqrt(2 - 2 cos)``, so ``delta`` lies in (0, 2].
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from curator.exceptions import CuratorError, ValidationError
from curator.policies.base import Policy

__all__ = ["Typical", "Coverage", "kmeans_labels", "typicality", "purity_radius", "coverage_greedy"]


def _positive_int(value, name, caller, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValidationError(f"{caller}: {name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _seed_from(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


#: k-means++ seeding costs k x (2 + log k) x n x d: it runs on at most this many sampled rows
#: (the Lloyd iterations then use up to 256 per centroid).
_SEEDING_MAX_N = 20_000


def kmeans_labels(X: np.ndarray, k: int, seed: int, *, iterations: int = 20) -> np.ndarray:
    """Cluster of each row of ``X`` (float32, (n, d)) by k-means with ``k`` centroids.

    k-means++ seeding (numpy) on a seeded sample of at most 256 points per
    centroid, FAISS Lloyd iterations on that sample, then every row assigned
    to its nearest centroid, so the cost stays linear in n. Seeding matters:
    on 30 planted 5-blob sets (sizes 400..30) FAISS's random initialisation
    split a large blob and merged two small ones in 23, plain k-means++ in 8,
    greedy k-means++ (scikit-learn's default, what TypiClust used) in none.
    Deterministic for a seed.
    """
    import faiss

    X = np.ascontiguousarray(X, dtype=np.float32)
    n, d = X.shape
    k = max(1, min(int(k), n))
    if k == 1:
        return np.zeros(n, np.int64)
    rng = np.random.default_rng(seed)
    sample = X if n <= 256 * k else X[np.sort(rng.choice(n, 256 * k, replace=False))]
    km = faiss.Kmeans(d, k, niter=iterations, seed=int(seed), min_points_per_centroid=1,
                      max_points_per_centroid=256, verbose=False)
    seeding = sample if len(sample) <= _SEEDING_MAX_N else sample[np.sort(rng.choice(len(sample), _SEEDING_MAX_N,
                                                                                     replace=False))]
    km.train(sample, init_centroids=_kmeanspp(seeding, k, rng))
    _, assign = km.index.search(X, 1)
    return assign[:, 0].astype(np.int64)


def _kmeanspp(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; scikit-learn's variant): each new
    centre is the best of 2 + log k candidates drawn in proportion to squared distance."""
    X64 = X.astype(np.float64)
    sq = np.einsum("ij,ij->i", X64, X64)
    trials = 2 + int(math.log(k))

    def dist(i):
        return np.maximum(sq[None, :] - 2 * X64[i] @ X64.T + sq[i][:, None], 0.0)

    first = int(rng.integers(len(X)))
    centres = [first]
    mind = dist(np.array([first]))[0]
    for _ in range(1, k):
        total = mind.sum()
        if total <= 0:
            cand = rng.integers(len(X), size=trials)
        else:
            cand = np.searchsorted(np.cumsum(mind), rng.random(trials) * total).clip(0, len(X) - 1)
        new = np.minimum(mind[None, :], dist(cand))
        best = int(np.argmin(new.sum(1)))
        centres.append(int(cand[best]))
        mind = new[best]
    return np.ascontiguousarray(X[centres], dtype=np.float32)


def typicality(X: np.ndarray, k: int = 20) -> np.ndarray:
    """Typicality of each row of unit vectors ``X``: 1 / mean distance to its ``k`` nearest other rows.

    ``k`` shrinks to the number of other rows (a lone point has typicality 0).
    Neighbours from ``curator.semisupervised.knn_graph`` (exact up to 10,000 rows).
    """
    from curator.semisupervised import knn_graph

    sims, _ = knn_graph(X, k)
    if sims.shape[1] == 0:
        return np.zeros(len(X))
    d = np.sqrt(np.maximum(2.0 - 2.0 * sims.astype(np.float64), 0.0))
    d = np.where(np.isfinite(d), d, 2.0)
    return 1.0 / (d.mean(1) + 1e-5)


class Typical(Policy):
    """TypiClust (Hacohen et al. 2022): the most typical point of each large uncovered cluster.

    The pool and the labeled embeddings are clustered together into
    ``min(labeled + budget, max_clusters)`` k-means clusters. Repeatedly, the
    cluster with the fewest labeled-or-selected members (ties: the largest)
    gives its most typical unselected point; typicality is 1 / mean distance to
    the ``k`` nearest neighbours inside the cluster (K = 20 in the paper, fewer
    in small clusters), recomputed as points leave. Clusters smaller than
    ``min_cluster_size`` (outliers) are used last. Score of a pick: its typicality.
    """

    name, requires = "typical", ("embeddings",)

    def __init__(self, k: int = 20, max_clusters: int = 500, min_cluster_size: int = 5):
        self.k = _positive_int(k, "k", "policy 'typical'")
        self.max_clusters = _positive_int(max_clusters, "max_clusters", "policy 'typical'")
        self.min_cluster_size = _positive_int(min_cluster_size, "min_cluster_size", "policy 'typical'")

    def _select(self, pool, budget, rng):
        X = np.asarray(pool.unit_embeddings, np.float32)
        L = np.asarray(pool.unit_labeled, np.float32)
        n, m = len(X), len(L)
        allx = np.vstack([X, L]) if m else X
        k = min(m + budget, self.max_clusters, len(allx))
        labels = kmeans_labels(allx, k, _seed_from(rng))
        size = np.bincount(labels, minlength=k)
        covered = np.bincount(labels[n:], minlength=k) if m else np.zeros(k, np.int64)
        members = [np.flatnonzero(labels == c) for c in range(k)]
        free = [mem[mem < n] for mem in members]  # unselected pool members of each cluster
        tiebreak = rng.permutation(k)
        small = size < self.min_cluster_size
        n_free = np.array([len(f) for f in free])
        chosen, scores = [], []
        for _ in range(budget):
            # outliers last, then fewest labeled/selected, then largest, then seeded order
            order = np.lexsort((tiebreak, -size, covered, small))
            best = int(order[np.argmax(n_free[order] > 0)])
            # density over the cluster's remaining members, labeled ones included (they are data too)
            rest = np.concatenate([free[best], members[best][members[best] >= n]])
            typ = typicality(allx[rest], self.k)[: len(free[best])]
            j = int(np.argmax(typ))
            chosen.append(int(free[best][j]))
            scores.append(float(typ[j]))
            free[best] = np.delete(free[best], j)
            n_free[best] -= 1
            covered[best] += 1
        return np.array(chosen, np.int64), np.array(scores)


def purity_radius(X: np.ndarray, pseudo: np.ndarray, alpha: float = 0.95, *, sample: int = 5000,
                  seed: int = 0) -> float:
    """The largest radius whose balls are pure for a share ``alpha`` of points (ProbCover's delta).

    A ball B(x, r) is pure when every point in it has x's pseudo-label, i.e.
    when r < r_x, the distance from x to its nearest point of another
    pseudo-label. So purity(r) = share of x with r_x > r, and the largest r
    with purity >= alpha is the (1 - alpha) quantile of r_x: returned is the
    largest r_x with at most (1 - alpha) n values <= it (the supremum is the
    next r_x, exclusive), computed from r_x directly, no grid of radii. r_x is measured for a seeded sample of
    ``sample`` points (each against all points of other labels), which fixes
    the quantile to about +-1 % of rank. ``X``: unit rows; distances Euclidean.
    """
    from curator.index import search

    n = len(X)
    rng = np.random.default_rng(seed)
    q = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    r = np.full(len(q), np.inf)
    for c in np.unique(pseudo):
        other = np.flatnonzero(pseudo != c)
        mine = np.flatnonzero(pseudo[q] == c)
        if len(other) == 0 or len(mine) == 0:
            continue
        sims, _ = search(X[other], X[q[mine]], 1)
        r[mine] = np.sqrt(np.maximum(2.0 - 2.0 * sims[:, 0].astype(np.float64), 0.0))
    if not np.isfinite(r).any():  # one pseudo-class: every ball is pure
        return 2.0
    rs = np.sort(r)
    allowed = math.floor((1.0 - alpha) * len(rs) + 1e-9)  # impure balls allowed
    impure = np.searchsorted(rs, rs, side="right")  # impure balls at radius rs[i] (ties included)
    ok = impure <= allowed
    if not ok.any():  # even the smallest r_x breaks purity: any radius below it is pure
        return float(rs[0]) / 2
    return float(rs[ok].max())


def coverage_greedy(X: np.ndarray, L: np.ndarray, delta: float, budget: int, rng: np.random.Generator,
                    *, max_edges: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy max coverage of the delta-balls of unit rows ``X``, balls of ``L`` already covered.

    Each pick is the point whose ball covers the most uncovered points (ties:
    seeded random); when everything is covered the rest is drawn at random
    (as ProbCover does). Returns (positions, newly covered count per pick).
    """
    from curator.index import range_search, self_pairs

    n = len(X)
    t = 1.0 - delta * delta / 2.0  # cos threshold of distance delta
    i, j, _, _ = self_pairs(X, t)
    if 2 * len(i) + n > max_edges:
        raise CuratorError(
            f"policy 'coverage': radius {delta:.4g} makes a graph of {2 * len(i) + n:,} edges "
            f"(limit max_edges={max_edges:,}); pass a smaller delta or a larger max_edges, "
            "or wrap it in Subsample"
        )
    src = np.concatenate([i, j, np.arange(n)])
    dst = np.concatenate([j, i, np.arange(n)])
    order = np.argsort(src, kind="stable")
    dst = dst[order]
    start = np.searchsorted(src[order], np.arange(n + 1))
    uncovered = np.ones(n, bool)
    if len(L):
        _, hit, _, _ = range_search(X, L, t)
        uncovered[hit] = False
    # degree[x] = uncovered points in the ball of x (the ball is symmetric: y in B(x) <=> x in B(y))
    degree = np.add.reduceat(uncovered[dst].astype(np.int64), start[:-1]) if n else np.zeros(0, np.int64)
    degree[start[:-1] == start[1:]] = 0
    jitter = rng.random(n) * 0.5  # seeded tie-break, below one point of gain
    taken = np.zeros(n, bool)
    chosen, gains = [], []
    for _ in range(budget):
        key = np.where(taken, -1.0, degree + jitter)
        x = int(np.argmax(key))
        if degree[x] <= 0:  # all covered: the rest at random
            rest = np.flatnonzero(~taken)
            extra = rng.choice(rest, size=budget - len(chosen), replace=False)
            chosen.extend(int(e) for e in extra)
            gains.extend([0.0] * len(extra))
            break
        chosen.append(x)
        gains.append(float(degree[x]))
        taken[x] = True
        newly = dst[start[x]:start[x + 1]]
        newly = newly[uncovered[newly]]
        uncovered[newly] = False
        # every point whose ball held a newly covered point loses one
        hit = np.concatenate([dst[start[y]:start[y + 1]] for y in newly]) if len(newly) else np.zeros(0, np.int64)
        degree -= np.bincount(hit, minlength=n)
    return np.array(chosen, np.int64), np.array(gains)


class Coverage(Policy):
    """ProbCover (Yehuda et al. 2022): greedy max coverage by balls of radius ``delta``.

    ``delta=None`` estimates it from the data (``purity_radius``): the
    largest radius whose balls are pure w.r.t. k-means pseudo-labels
    (``clusters`` clusters: the number of classes of ``pool.probs`` when
    present, else ``DEFAULT_CLUSTERS``) for a share ``alpha`` of points.
    Labeled samples' balls count as covered. Score of a pick: the number of
    points it newly covers. The estimated radius is kept in ``last_delta``.
    """

    name, requires = "coverage", ("embeddings",)

    #: Pseudo-classes for the purity estimate when the pool has no probs (the paper uses
    #: the number of classes; 10 is MNIST's and CIFAR-10's).
    DEFAULT_CLUSTERS = 10

    def __init__(self, delta: float | None = None, alpha: float = 0.95, clusters: int | None = None,
                 max_edges: int = 50_000_000):
        caller = "policy 'coverage'"
        if delta is not None:
            if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not math.isfinite(delta) \
                    or not 0 < delta <= 2:
                raise ValidationError(f"{caller}: delta (ball radius between unit vectors) must be in (0, 2]; "
                                      f"got {delta!r} (or None to estimate it from the data)")
            delta = float(delta)
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha < 1:
            raise ValidationError(f"{caller}: alpha (required ball purity) must be in (0, 1); got {alpha!r}")
        self.delta = delta
        self.alpha = float(alpha)
        self.clusters = None if clusters is None else _positive_int(clusters, "clusters", caller, minimum=2)
        self.max_edges = _positive_int(max_edges, "max_edges", caller)
        self.last_delta: float | None = None

    def radius(self, pool, rng: np.random.Generator) -> float:
        """The ball radius for ``pool``: ``delta``, or the purity estimate."""
        if self.delta is not None:
            return self.delta
        X = np.asarray(pool.unit_embeddings, np.float32)
        k = self.clusters or (pool.probs.shape[1] if pool.probs is not None else self.DEFAULT_CLUSTERS)
        if len(X) < 2 * k:
            raise ValidationError(
                f"policy 'coverage': too few samples ({len(X)}) to estimate the radius from {k} pseudo-classes; "
                f"pass delta= explicitly or use a pool of at least {2 * k} samples"
            )
        pseudo = kmeans_labels(X, k, _seed_from(rng))
        return max(purity_radius(X, pseudo, self.alpha, seed=_seed_from(rng)), 1e-6)

    def _select(self, pool, budget, rng):
        delta = self.radius(pool, rng)
        self.last_delta = delta
        X = np.asarray(pool.unit_embeddings, np.float32)
        L = np.asarray(pool.unit_labeled, np.float32)
        return coverage_greedy(X, L, delta, budget, rng, max_edges=self.max_edges)
