"""The one FAISS index chooser, used by novelty and by de-duplication.

Vectors are L2-normalised float32, so inner product is cosine similarity.
(The approximate tier for large sets is chosen here too; see ``build_index``.)
"""

from __future__ import annotations

import numpy as np


def _faiss():
    import faiss

    return faiss


def as_float32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def build_index(base: np.ndarray):
    """An index over ``base`` (n, d) for inner-product search."""
    faiss = _faiss()
    base = as_float32(base)
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    return index


def search(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner-product neighbours of ``queries`` in ``base``: (similarities, positions)."""
    k = min(k, len(base))
    index = build_index(base)
    return index.search(as_float32(queries), k)
