"""Agreement between labelers, in numpy only: Cohen's kappa, Fleiss' kappa (overall and per class),
Krippendorff's alpha (nominal), and per-labeler agreement.

Input everywhere is a list of ``(item, labeler, label)`` answers (one per
labeler and item; live, not skipped). Items answered by fewer than two
labelers carry no information on agreement and are left out, as all three
coefficients prescribe. A coefficient that is undefined (one label used
throughout, fewer than two items) is ``None``, never a made-up 1.0.

Pure arrays, no database: the lead may move it to the core (``curator/``)
where the versions and the report can use it too.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from typing import Iterable, Sequence

import numpy as np

from curator.aggregate import Answer, dawid_skene, majority  # noqa: F401 (the aggregations live in the core)


def _none_if_nan(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two labelers over the same items: (p_o - p_e) / (1 - p_e)."""
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa: {len(a)} and {len(b)} answers; give one pair per item")
    if len(a) < 2:
        return None
    cats = sorted(set(a) | set(b))
    idx = {c: i for i, c in enumerate(cats)}
    x, y = np.array([idx[v] for v in a]), np.array([idx[v] for v in b])
    po = float(np.mean(x == y))
    pe = float(np.bincount(x, minlength=len(cats)) @ np.bincount(y, minlength=len(cats))) / len(a) ** 2
    return None if pe >= 1.0 else (po - pe) / (1.0 - pe)


def counts_matrix(answers: Iterable[Answer]) -> tuple[np.ndarray, list[str], list[int]]:
    """(items x categories) answer counts of the items with 2+ answers, the categories, the items."""
    by_item: dict[int, list[str]] = defaultdict(list)
    for item, _, label in answers:
        by_item[item].append(label)
    items = sorted(i for i, labs in by_item.items() if len(labs) >= 2)
    cats = sorted({lab for i in items for lab in by_item[i]})
    idx = {c: k for k, c in enumerate(cats)}
    n = np.zeros((len(items), len(cats)))
    for r, i in enumerate(items):
        for lab in by_item[i]:
            n[r, idx[lab]] += 1
    return n, cats, items


def fleiss_kappa(n: np.ndarray) -> float | None:
    """Fleiss' kappa of an (items x categories) count matrix; items may have different numbers of
    answers (each item's observed agreement uses its own count)."""
    n = np.asarray(n, dtype=float)
    if n.shape[0] < 1 or n.shape[1] < 1:
        return None
    m = n.sum(1)
    if (m < 2).any():
        raise ValueError("fleiss_kappa: every item needs 2 or more answers")
    p_item = ((n * (n - 1)).sum(1)) / (m * (m - 1))
    p_cat = n.sum(0) / m.sum()
    pe = float((p_cat ** 2).sum())
    return None if pe >= 1.0 else (float(p_item.mean()) - pe) / (1.0 - pe)


def fleiss_per_class(n: np.ndarray) -> np.ndarray:
    """Fleiss' kappa of each category (Fleiss 1971, eq. 11): 1 - sum_i n_ij (m_i - n_ij) / (m_i - 1)
    over sum_i m_i p_j q_j; NaN for a category nobody (or everybody) chose."""
    n = np.asarray(n, dtype=float)
    m = n.sum(1, keepdims=True)
    p = n.sum(0) / m.sum()
    disagree = (n * (m - n) / (m - 1)).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - disagree / (m.sum() * p * (1 - p))


def krippendorff_alpha(answers: Iterable[Answer]) -> float | None:
    """Krippendorff's alpha for nominal labels, missing answers allowed: 1 - D_o / D_e from the
    coincidence matrix (Krippendorff 2011, "Computing Krippendorff's alpha-reliability")."""
    n, cats, _ = counts_matrix(answers)
    if n.shape[0] == 0:
        return None
    m = n.sum(1, keepdims=True)
    coincidence = (n[:, :, None] * n[:, None, :] - np.eye(len(cats))[None] * n[:, :, None]) / (m[:, :, None] - 1)
    o = coincidence.sum(0)
    n_c = o.sum(1)
    total = n_c.sum()
    d_o = (o.sum() - np.trace(o)) / total
    d_e = (total ** 2 - (n_c ** 2).sum()) / (total * (total - 1))
    return None if d_e <= 0 else float(1.0 - d_o / d_e)


def report(answers: Sequence[Answer]) -> dict:
    """Agreement figures for ``curator pull --json``: overall (Fleiss, Krippendorff, and Cohen when
    exactly two labelers answered the shared items), per class and per labeler."""
    n, cats, items = counts_matrix(answers)
    labelers = sorted({who for _, who, _ in answers})
    out: dict = {"items": len(items), "labelers": len(labelers), "fleiss_kappa": None,
                 "krippendorff_alpha": None, "cohen_kappa": None, "per_class": {}, "per_labeler": {}}
    if not items:
        return out
    out["fleiss_kappa"] = _none_if_nan(fleiss_kappa(n))
    out["krippendorff_alpha"] = krippendorff_alpha(answers)
    per_class = fleiss_per_class(n)
    out["per_class"] = {c: {"kappa": _none_if_nan(k), "answers": int(n[:, j].sum())}
                        for j, (c, k) in enumerate(zip(cats, per_class))}
    given: dict[str, dict[int, str]] = defaultdict(dict)
    for item, who, label in answers:
        given[who][item] = label
    pair_kappa: dict[tuple[str, str], float | None] = {}
    for a, b in combinations(labelers, 2):
        shared = sorted(set(given[a]) & set(given[b]))
        pair_kappa[(a, b)] = cohen_kappa([given[a][i] for i in shared], [given[b][i] for i in shared])
    if len(labelers) == 2:
        out["cohen_kappa"] = pair_kappa[tuple(labelers)]
    for who in labelers:
        mine = [i for i in given[who] if i in set(items)]
        # agreement with the others: the share of the other answers to my items that match mine
        agree = total = 0
        for i in mine:
            for other, theirs in given.items():
                if other != who and i in theirs:
                    total += 1
                    agree += theirs[i] == given[who][i]
        kappas = [k for (a, b), k in pair_kappa.items() if who in (a, b) and k is not None]
        out["per_labeler"][who] = {"items": len(mine), "agreement": agree / total if total else None,
                                   "mean_cohen_kappa": float(np.mean(kappas)) if kappas else None}
    return out
