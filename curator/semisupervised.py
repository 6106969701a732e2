"""Label propagation over the embedding's kNN graph: class probabilities for every pool sample.

A few labels say little on their own; the unlabeled pool says where the
classes' boundaries run (low-density regions between dense clusters). Label
propagation (Zhou et al. 2004, "Learning with local and global consistency")
spreads each label along the kNN graph of the embedding:

    W   kNN affinities, w_ij = max(cos_ij, 0) ** gamma (Iscen et al. 2019), symmetrised W + W^T
    S   D^-1/2 W D^-1/2
    F   solves (I - alpha S) F = Y,  Y[i, c] = 1 / (labels of class c) for labeled i

(class-normalised Y, so a class with more labels does not flood the graph),
solved by conjugate gradient for at most ``iterations`` steps (the matrix is
symmetric positive definite for alpha < 1; CG reaches in a few dozen steps what
the plain iteration F <- alpha S F + Y needs hundreds for at alpha = 0.99).
Rows of F, normalised, are the class probabilities; the confidence of a
sample is 1 - H(p) / log C (Iscen et al.'s weight): 0 for a sample no label
reaches, 1 for a sure one.

Neighbours come from the one FAISS chooser (``curator.index.search``: exact
up to its size limit, an inverted file above). numpy only: the sparse
products are ``bincount`` scatters over the (n, k) neighbour table.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from curator._validation import check_embeddings
from curator.exceptions import ValidationError

__all__ = ["Propagation", "knn_graph", "propagate", "propagate_pool", "extend"]


@dataclass(frozen=True)
class Propagation:
    """Result of ``propagate``: one row per sample of the graph."""

    probs: np.ndarray  #: (n, classes) class probabilities (uniform where no label reaches)
    predictions: np.ndarray  #: (n,) argmax class
    confidence: np.ndarray  #: (n,) 1 - entropy / log(classes), in [0, 1]
    reached: np.ndarray  #: (n,) bool: some label reaches the sample through the graph
    iterations: int  #: conjugate-gradient steps taken


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


#: Up to this many rows the kNN table is one dense product (exact, as the index is up to 10,000).
_DENSE_MAX_N = 2048


def knn_graph(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, positions), each (n, k'): every row's k' = min(k, n - 1) nearest *other* rows.

    ``X`` holds unit rows (inner product = cosine). A row's own entry is dropped
    (for exact copies, any one of the ties); where a search found fewer
    neighbours the position is -1 and the similarity -inf.
    """
    from curator.index import search

    n = len(X)
    k = min(int(k), n - 1)
    if k < 1:
        return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
    if n <= _DENSE_MAX_N:  # small: one BLAS product beats an index (and FAISS threads under load)
        G = X @ X.T
        nbr = np.argsort(-G, axis=1, kind="stable")[:, : k + 1]
        sims = np.take_along_axis(G, nbr, axis=1)
    else:
        sims, nbr = search(X, X, k + 1)
    own = nbr == np.arange(n)[:, None]
    own[~own.any(1), -1] = True  # self not returned: drop the farthest instead
    keep = ~own
    return sims[keep].reshape(n, k), nbr[keep].reshape(n, k).astype(np.int64)


class _Graph:
    """S = D^-1/2 (W + W^T) D^-1/2 as an operator on (n, C) blocks, from a (n, k) kNN table."""

    def __init__(self, nbr: np.ndarray, w: np.ndarray):
        self.n = len(nbr)
        valid = nbr >= 0
        self.rows = np.repeat(np.arange(self.n), nbr.shape[1])[valid.ravel()]
        self.cols = nbr[valid]
        self.w = w[valid].astype(np.float64)
        deg = np.bincount(self.rows, self.w, minlength=self.n) + np.bincount(self.cols, self.w, minlength=self.n)
        self.inv_sqrt_deg = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-300)), 0.0)

    def _w(self, V: np.ndarray) -> np.ndarray:
        out = np.empty_like(V)
        for c in range(V.shape[1]):
            v = V[:, c]
            out[:, c] = (np.bincount(self.rows, self.w * v[self.cols], minlength=self.n)
                         + np.bincount(self.cols, self.w * v[self.rows], minlength=self.n))
        return out

    def s(self, V: np.ndarray) -> np.ndarray:
        d = self.inv_sqrt_deg[:, None]
        return d * self._w(d * V)


def _solve(graph: _Graph, Y: np.ndarray, alpha: float, iterations: int, tol: float = 1e-6):
    """Conjugate gradient on (I - alpha S) F = Y, each column independently (all at once)."""
    F = Y.copy()
    R = Y - (F - alpha * graph.s(F))
    P = R.copy()
    rr = (R * R).sum(0)
    stop = tol * tol * np.maximum((Y * Y).sum(0), 1e-300)
    steps = 0
    for steps in range(1, iterations + 1):
        if (rr <= stop).all():
            steps -= 1
            break
        AP = P - alpha * graph.s(P)
        pap = (P * AP).sum(0)
        a = np.where(pap > 0, rr / np.where(pap > 0, pap, 1.0), 0.0)
        F += a * P
        R -= a * AP
        rr_new = (R * R).sum(0)
        P = R + np.where(rr > 0, rr_new / np.where(rr > 0, rr, 1.0), 0.0) * P
        rr = rr_new
    return F, steps


def _check_labels(labeled, labels, n: int, classes, caller: str):
    try:
        pos = np.asarray(labeled)
        y = np.asarray(labels)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{caller}: labeled positions and labels must be integer arrays ({exc})") from None
    if pos.ndim != 1 or y.ndim != 1 or len(pos) != len(y):
        raise ValidationError(f"{caller}: labeled positions {pos.shape} and labels {y.shape} must be 1-D "
                              "and of the same length (one label per labeled position)")
    if len(pos) == 0:
        raise ValidationError(f"{caller}: no labels given; propagation needs at least one labeled sample")
    if pos.dtype.kind not in "iu" or y.dtype.kind not in "iu":
        raise ValidationError(f"{caller}: labeled positions and labels must be integers (class indices); "
                              f"got {pos.dtype} and {y.dtype}")
    if pos.min() < 0 or pos.max() >= n:
        raise ValidationError(f"{caller}: labeled positions must lie in [0, {n}); got {pos.min()}..{pos.max()}")
    if len(np.unique(pos)) != len(pos):
        raise ValidationError(f"{caller}: labeled positions repeat; give each sample one label")
    if y.min() < 0:
        raise ValidationError(f"{caller}: labels must be class indices >= 0; got {y.min()}")
    if classes is None:
        classes = int(y.max()) + 1
        if classes < 2:
            raise ValidationError(f"{caller}: the labels name a single class; pass classes= (the number of classes)")
    elif isinstance(classes, bool) or not isinstance(classes, numbers.Integral) or classes < 2:
        raise ValidationError(f"{caller}: classes must be an integer >= 2; got {classes!r}")
    if y.max() >= classes:
        raise ValidationError(f"{caller}: label {y.max()} is out of range for {classes} classes")
    return pos.astype(np.int64), y.astype(np.int64), int(classes)


def _check_params(k, alpha, gamma, iterations, caller):
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValidationError(f"{caller}: k (neighbours per sample) must be an integer >= 1; got {k!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha < 1:
        raise ValidationError(f"{caller}: alpha must be in (0, 1) (0.99: labels travel far); got {alpha!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not math.isfinite(gamma) or gamma <= 0:
        raise ValidationError(f"{caller}: gamma (affinity exponent) must be a positive number; got {gamma!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 1:
        raise ValidationError(f"{caller}: iterations must be an integer >= 1; got {iterations!r}")


def _result(F: np.ndarray, steps: int) -> Propagation:
    F = np.maximum(F, 0.0)
    total = F.sum(1)
    C = F.shape[1]
    reached = total > 1e-12
    probs = np.full(F.shape, 1.0 / C)
    probs[reached] = F[reached] / total[reached, None]
    ent = -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(1)
    conf = np.clip(1.0 - ent / math.log(C), 0.0, 1.0)
    return Propagation(probs=probs.astype(np.float32), predictions=probs.argmax(1).astype(np.int64),
                       confidence=conf, reached=reached, iterations=steps)


def propagate(embeddings, labeled, labels, *, classes: int | None = None, k: int = 10, alpha: float = 0.99,
              gamma: float = 3.0, iterations: int = 30, neighbours: tuple | None = None) -> Propagation:
    """Class probabilities for every row of ``embeddings`` from the labels of rows ``labeled``.

    ``embeddings``: (n, d), labeled and unlabeled samples together (cosine is used,
    rows are normalised here); ``labeled``: positions of the labeled rows;
    ``labels``: their class indices; ``classes``: number of classes (default
    max label + 1). Labeled rows get propagated values too (a label that
    disagrees with its neighbourhood shows there with a low confidence).
    ``neighbours``: ``knn_graph(unit rows, k)`` computed before (the graph does
    not depend on the labels: a loop that adds labels round after round builds
    it once; the search is most of the cost on a large pool).
    """
    caller = "propagate"
    X = check_embeddings(embeddings, name="embeddings", caller=caller)
    n = len(X)
    if n < 2:
        raise ValidationError(f"{caller}: too few samples ({n}); a graph needs at least 2")
    pos, y, C = _check_labels(labeled, labels, n, classes, caller)
    _check_params(k, alpha, gamma, iterations, caller)
    if neighbours is None:
        sims, nbr = knn_graph(_unit(X), k)
    else:
        sims, nbr = (np.asarray(a) for a in neighbours)
        if sims.shape != nbr.shape or sims.ndim != 2 or len(nbr) != n:
            raise ValidationError(f"{caller}: neighbours must be (similarities, positions) of shape ({n}, k) "
                                  f"as knn_graph returns; got {sims.shape} and {nbr.shape}")
    w = np.where(nbr >= 0, np.maximum(sims.astype(np.float64), 0.0) ** float(gamma), 0.0)
    graph = _Graph(nbr, w)
    Y = np.zeros((n, C))
    counts = np.bincount(y, minlength=C)
    Y[pos, y] = 1.0 / counts[y]
    F, steps = _solve(graph, Y, float(alpha), int(iterations))
    return _result(F, steps)


def propagate_pool(pool, labels, **kwargs) -> Propagation:
    """``propagate`` over a ``Pool``: its ``labeled_embeddings`` carry ``labels``; rows returned for the pool only."""
    from curator.pool import Pool

    if not isinstance(pool, Pool) or pool.embeddings is None or pool.labeled_embeddings is None:
        raise ValidationError("propagate_pool: pass a Pool with embeddings and labeled_embeddings "
                              "(Pool(embeddings=E, labeled_embeddings=L)), and one label per row of L")
    L = pool.labeled_embeddings
    y = np.asarray(labels)
    if y.shape != (len(L),):
        raise ValidationError(f"propagate_pool: labels must have shape ({len(L)},), one per labeled embedding; "
                              f"got {y.shape}")
    n = len(pool)
    X = np.vstack([np.asarray(pool.embeddings), np.asarray(L)])
    res = propagate(X, np.arange(n, n + len(L)), y, **kwargs)
    return Propagation(probs=res.probs[:n], predictions=res.predictions[:n], confidence=res.confidence[:n],
                       reached=res.reached[:n], iterations=res.iterations)


def extend(result: Propagation, embeddings, queries, *, k: int = 10, gamma: float = 3.0) -> np.ndarray:
    """Class probabilities of new samples (``queries``, e.g. a test set) from a propagation result.

    Each query takes the affinity-weighted mean of the probabilities of its
    ``k`` nearest rows of ``embeddings`` (the rows ``result`` was computed on);
    the graph is not solved again.
    """
    from curator.index import search

    X = check_embeddings(embeddings, name="embeddings", caller="extend")
    Q = check_embeddings(queries, name="queries", caller="extend")
    if len(X) != len(result.probs):
        raise ValidationError(f"extend: embeddings has {len(X)} rows but the propagation has {len(result.probs)}")
    if Q.shape[1] != X.shape[1]:
        raise ValidationError(f"extend: queries have {Q.shape[1]} columns but embeddings {X.shape[1]}")
    _check_params(k, 0.5, gamma, 1, "extend")
    sims, nbr = search(_unit(X), _unit(Q), k)
    w = np.where(nbr >= 0, np.maximum(sims.astype(np.float64), 0.0) ** float(gamma), 0.0) + 1e-12
    P = (w[:, :, None] * result.probs[np.maximum(nbr, 0)]).sum(1)
    return (P / P.sum(1, keepdims=True)).astype(np.float32)
