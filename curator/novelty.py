"""Novelty: how far a pool sample is from what is already labeled or selected.

Distances are cosine distances (1 - inner product of L2-normalised vectors),
searched with the one FAISS chooser in ``curator.index``. ``GreedyNovelty``
keeps each sample's k nearest distances up to date while a batch is chosen, so
the second pick is far from the first as well as from the labeled set.
"""

from __future__ import annotations

import numpy as np

from curator._validation import check_embeddings, check_positive_int
from curator.exceptions import ValidationError

__all__ = ["knn_distances", "novelty", "GreedyNovelty"]


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


def knn_distances(embeddings: np.ndarray, reference: np.ndarray, k: int) -> np.ndarray:
    """(n, k) cosine distances of each row to its k nearest reference rows, ascending.

    Columns beyond the reference size are filled with the largest distance, 2.
    Inputs are assumed L2-normalised.
    """
    n = len(embeddings)
    out = np.full((n, k), 2.0, dtype=np.float32)
    if len(reference) == 0 or n == 0:
        return out
    from curator.index import search

    sims, _ = search(reference, embeddings, k)
    kk = sims.shape[1]
    out[:, :kk] = np.clip(1.0 - sims, 0.0, 2.0)
    return out


def novelty(embeddings, reference, k: int = 1) -> np.ndarray:
    """Mean cosine distance of each embedding to its ``k`` nearest reference rows.

    An empty reference makes every sample maximally novel (distance 2).
    """
    from curator.index import is_streamed

    streamed = isinstance(embeddings, np.ndarray) and embeddings.ndim == 2 and is_streamed(len(embeddings))
    E = _check_by_chunks(embeddings) if streamed else check_embeddings(embeddings, name="embeddings",
                                                                         caller="novelty")
    R = check_embeddings(reference, name="reference", caller="novelty", allow_empty=True)
    k = check_positive_int(k, name="k", caller="novelty")
    if len(R) and R.shape[1] != E.shape[1]:
        raise ValidationError(f"novelty: reference has {R.shape[1]} columns but embeddings has {E.shape[1]}")
    # a streamed pool (memory-mapped, above index.STREAM_MIN_N rows) is normalised chunk by chunk
    # inside curator.index.search, never copied whole
    return knn_distances(E if streamed else _unit(E), _unit(R) if len(R) else R, k).mean(1).astype(np.float64)


def _check_by_chunks(x: np.ndarray) -> np.ndarray:
    """``check_embeddings`` for a pool too large to copy: finite values, read by chunks."""
    from curator.index import STREAM_CHUNK

    if x.shape[1] == 0:
        raise ValidationError(f"novelty: embeddings has shape {x.shape}: no columns")
    for s in range(0, len(x), STREAM_CHUNK):
        finite = np.isfinite(np.asarray(x[s:s + STREAM_CHUNK], dtype=np.float32)).all(axis=1)
        if not finite.all():
            rows = (np.flatnonzero(~finite)[:5] + s).tolist()
            raise ValidationError(f"novelty: embeddings contains NaN or infinite values (rows {rows}); "
                                  "drop or fix those rows")
    return x


class GreedyNovelty:
    """Novelty that updates as samples join the reference set (labeled ∪ selected).

    ``E`` and ``reference`` must be L2-normalised. ``scores`` is the current
    mean distance to the k nearest reference rows; ``add(i)`` puts pool row
    ``i`` into the reference set in O(n d).
    """

    def __init__(self, E: np.ndarray, reference: np.ndarray, k: int = 1):
        self.E = E
        self.k = k
        self.dist = knn_distances(E, reference, k)  # ascending per row

    @property
    def scores(self) -> np.ndarray:
        return self.dist.mean(1)

    def add(self, i: int) -> None:
        d = np.clip(1.0 - self.E @ self.E[i], 0.0, 2.0)
        worst = self.dist[:, -1]
        closer = d < worst
        if closer.any():
            rows = self.dist[closer]
            rows[:, -1] = d[closer]
            rows.sort(axis=1)
            self.dist[closer] = rows
