"""curator's embeddings in FiftyOne Brain: a similarity index and a 2-D map.

Both take the embeddings curator already stored (no model download): rows
aligned with the samples of ``ds`` in their natural order. An existing run
under the same brain key is replaced, so a re-sync refreshes it.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np

from curator.exceptions import ValidationError

METHODS = ("pca", "tsne")


def _check(ds, embeddings: np.ndarray, caller: str) -> np.ndarray:
    E = np.asarray(embeddings, dtype=np.float32)
    if E.ndim != 2 or len(E) != len(ds):
        raise ValidationError(
            f"{caller}: embeddings must be (samples, dim) with one row per sample of "
            f"{ds.name!r} ({len(ds)}); got shape {E.shape}"
        )
    if not np.isfinite(E).all():
        raise ValidationError(f"{caller}: embeddings hold NaN or inf; recompute them (curator embed)")
    return E


@contextlib.contextmanager
def _quiet():
    """Brain logs progress on stdout, which must stay clean for ``--json``."""
    logger = logging.getLogger("fiftyone.brain")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def register_similarity(ds, embeddings: np.ndarray, brain_key: str = "curator_similarity") -> str:
    """Index ``embeddings`` with the sklearn backend so the App can sort by similarity."""
    from curator.integrations.fiftyone._fo import brain

    E = _check(ds, embeddings, "register_similarity")
    if ds.has_brain_run(brain_key):
        ds.delete_brain_run(brain_key)
    with _quiet():
        brain().compute_similarity(
            ds, embeddings=E, brain_key=brain_key, backend="sklearn", metric="cosine", progress=False
        )
    return brain_key


def compute_visualization(
    ds, embeddings: np.ndarray, method: str = "pca", brain_key: str = "curator_visualization", seed: int = 0
) -> str:
    """A 2-D embedding map for the App's Embeddings panel (pca or tsne: no downloads)."""
    from curator.integrations.fiftyone._fo import brain

    if method not in METHODS:
        raise ValidationError(f"method: {method!r} is not one of {', '.join(METHODS)}; umap needs umap-learn")
    E = _check(ds, embeddings, "compute_visualization")
    if ds.has_brain_run(brain_key):
        ds.delete_brain_run(brain_key)
    with _quiet():
        brain().compute_visualization(
            ds, embeddings=E, method=method, num_dims=2, brain_key=brain_key, seed=seed, progress=False
        )
    return brain_key
