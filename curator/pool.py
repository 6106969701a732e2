"""The unlabeled pool a policy selects from: validated, read-only arrays.

Positions into the pool are what policies return; the workflows map them to
sample ids. Arrays are validated once here and exposed read-only, so a policy
cannot change its caller's data by accident.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from curator._validation import (
    check_embeddings,
    check_mc_probs,
    check_probs,
)
from curator.exceptions import EmptyPoolError, ValidationError

__all__ = ["Pool"]


def _readonly(x: np.ndarray | None) -> np.ndarray | None:
    if x is None:
        return None
    view = x.view()
    view.flags.writeable = False
    return view


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if len(x) and np.allclose(norms, 1.0, atol=1e-4):
        return x
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class Pool:
    """Arrays describing ``n`` unlabeled samples.

    Parameters
    ----------
    embeddings : (n, d) features of the pool (penultimate layer of the model).
    probs : (n, classes) predicted class probabilities.
    mc_probs : (T, n, classes) probabilities of T MC-dropout passes (optional; BALD needs it).
    labeled_embeddings : (m, d) features of the already-labeled samples (optional;
        novelty and k-center measure distance to them).
    ids : (n,) optional sample ids, carried along for the caller.
    """

    def __init__(self, embeddings=None, probs=None, mc_probs=None, labeled_embeddings=None, *, ids=None):
        if embeddings is None and probs is None:
            raise ValidationError("Pool: pass embeddings (n, d) and/or probs (n, classes); got neither")
        n = None
        E = P = MC = L = None
        if embeddings is not None:
            E = check_embeddings(embeddings, name="embeddings")
            n = len(E)
        if probs is not None:
            P = check_probs(probs, name="probs", n=n)
            n = len(P)
        if mc_probs is not None:
            MC = check_mc_probs(mc_probs, n=n, classes=None if P is None else P.shape[1])
        if labeled_embeddings is not None:
            if E is None:
                raise ValidationError("Pool: labeled_embeddings needs embeddings of the pool too")
            L = check_embeddings(labeled_embeddings, name="labeled_embeddings", allow_empty=True)
            if len(L) and L.shape[1] != E.shape[1]:
                raise ValidationError(
                    f"Pool: labeled_embeddings has {L.shape[1]} columns but embeddings has {E.shape[1]}; "
                    "compute both with the same model"
                )
        if ids is not None:
            ids = np.asarray(ids)
            if ids.shape != (n,):
                raise ValidationError(f"Pool: ids must have shape ({n},); got {ids.shape}")
        if n == 0:
            raise EmptyPoolError("Pool: the pool is empty")
        self._n = n
        self.embeddings = _readonly(E)
        self.probs = _readonly(P)
        self.mc_probs = _readonly(MC)
        self.labeled_embeddings = _readonly(L)
        self.ids = _readonly(ids)

    def __len__(self) -> int:
        return self._n

    @property
    def n(self) -> int:
        return self._n

    def has(self, name: str) -> bool:
        """Whether the pool holds array ``name`` (e.g. ``"mc_probs"``)."""
        return getattr(self, name, None) is not None

    @cached_property
    def mean_probs(self) -> np.ndarray:
        """Predictive probabilities: the MC-dropout mean when present, else ``probs``."""
        if self.mc_probs is not None:
            return _readonly(self.mc_probs.mean(0))
        if self.probs is None:
            raise ValidationError("Pool has neither probs nor mc_probs; pass probs=(n, classes)")
        return self.probs

    @cached_property
    def unit_embeddings(self) -> np.ndarray:
        """L2-normalised embeddings (cosine similarity = inner product)."""
        if self.embeddings is None:
            raise ValidationError("Pool has no embeddings; pass embeddings=(n, d)")
        return _readonly(_l2_normalize(self.embeddings))

    @cached_property
    def unit_labeled(self) -> np.ndarray:
        if self.labeled_embeddings is None or len(self.labeled_embeddings) == 0:
            d = self.embeddings.shape[1] if self.embeddings is not None else 0
            return np.zeros((0, d), np.float32)
        return _readonly(_l2_normalize(self.labeled_embeddings))

    def subset(self, positions) -> "Pool":
        """The pool restricted to ``positions`` (labeled embeddings unchanged)."""
        pos = np.asarray(positions, dtype=np.int64)
        take = lambda a, axis=0: None if a is None else np.take(a, pos, axis=axis)  # noqa: E731
        return Pool(
            embeddings=take(self.embeddings),
            probs=take(self.probs),
            mc_probs=take(self.mc_probs, 1),
            labeled_embeddings=self.labeled_embeddings,
            ids=take(self.ids),
        )

    def __repr__(self) -> str:
        parts = [f"n={self._n}"]
        for name in ("embeddings", "probs", "mc_probs", "labeled_embeddings"):
            a = getattr(self, name)
            if a is not None:
                parts.append(f"{name}={a.shape}")
        return f"Pool({', '.join(parts)})"
