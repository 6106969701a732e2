"""Uncertainty scores as plain functions over arrays; higher = more worth labeling.

``probs`` is (n, classes); ``mc_probs`` is (T, n, classes), T stochastic
(MC-dropout) passes. Each function validates its input and returns (n,) float64.
Novelty lives in ``curator.novelty`` (it needs a nearest-neighbour search).
"""

from __future__ import annotations

import numpy as np

from curator._validation import check_mc_probs, check_probs

__all__ = ["entropy", "margin", "least_confidence", "variation_ratio", "bald", "normalize"]

_EPS = 1e-12


def _entropy(P: np.ndarray, axis: int = -1) -> np.ndarray:
    P = P.astype(np.float64, copy=False)
    return -(P * np.log(np.clip(P, _EPS, 1.0))).sum(axis)


def entropy(probs) -> np.ndarray:
    """Shannon entropy of the predicted distribution (nats)."""
    return _entropy(check_probs(probs, caller="entropy"))


def margin(probs) -> np.ndarray:
    """One minus the gap between the two most likely classes."""
    P = check_probs(probs, caller="margin").astype(np.float64)
    top2 = np.partition(P, -2, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def least_confidence(probs) -> np.ndarray:
    """One minus the probability of the most likely class."""
    P = check_probs(probs, caller="least_confidence")
    return 1.0 - P.max(1).astype(np.float64)


def variation_ratio(probs=None, *, mc_probs=None) -> np.ndarray:
    """Variation ratio (Gal et al. 2017): 1 - max_y p(y|x), p averaged over MC passes.

    With ``mc_probs`` the predictive mean over passes is used; with ``probs``
    alone it equals ``least_confidence``.
    """
    if mc_probs is not None:
        P = check_mc_probs(mc_probs, caller="variation_ratio").mean(0)
    else:
        P = check_probs(probs, caller="variation_ratio")
    return 1.0 - P.max(1).astype(np.float64)


def bald(mc_probs) -> np.ndarray:
    """Mutual information between prediction and weights (Houlsby et al. 2011).

    H[mean over passes] - mean over passes of H: high where the passes are
    each confident but disagree, which is model (not data) uncertainty.
    """
    MC = check_mc_probs(mc_probs, caller="bald")
    mi = _entropy(MC.mean(0)) - _entropy(MC).mean(0)
    return np.maximum(mi, 0.0)


def normalize(scores: np.ndarray, method: str = "rank") -> np.ndarray:
    """Scores mapped to [0, 1] so that different kinds can be added.

    ``rank`` (default) is robust to outliers and to each score's scale;
    ``minmax`` keeps relative gaps.
    """
    if method not in ("rank", "minmax"):
        from curator.exceptions import ValidationError

        raise ValidationError(f"normalize: method must be 'rank' or 'minmax'; got {method!r}")
    s = np.asarray(scores, dtype=np.float64)
    if len(s) <= 1:
        return np.ones_like(s)
    if method == "rank":
        order = np.argsort(s, kind="stable")
        ordered = s[order]
        first = np.r_[True, ordered[1:] != ordered[:-1]]
        starts = np.flatnonzero(first)
        ends = np.r_[starts[1:], len(s)]
        ranks = np.empty(len(s), dtype=np.float64)
        ranks[order] = ((starts + ends - 1) / 2.0)[np.cumsum(first) - 1]  # ties share their mean rank
        return ranks / (len(s) - 1)
    lo, hi = s.min(), s.max()
    return np.zeros_like(s) if hi - lo <= 0 else (s - lo) / (hi - lo)
