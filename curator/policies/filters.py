"""Selection filters built on the duplicate engine (``curator.dedup``).

``DropDuplicates(policy)`` walks the wrapped policy's ranking and skips a
candidate when it is within the threshold of an already labeled sample, or
in the same duplicate group as a sample already chosen; so a selected batch
never holds two members of one group, nor a copy of what is labeled.
"""

from __future__ import annotations

import numpy as np

from curator.exceptions import BudgetError
from curator.policies.base import Policy, top_k

__all__ = ["DropDuplicates", "duplicate_free_order"]


def duplicate_free_order(ranking: np.ndarray, group_of: np.ndarray, blocked: np.ndarray, budget: int) -> np.ndarray:
    """The first ``budget`` positions of ``ranking`` with at most one per group and none blocked.

    ``group_of``: (n,) group id per position, -1 for samples in no group;
    ``blocked``: (n,) bool, e.g. near duplicates of labeled samples.
    Returns fewer than ``budget`` positions when the ranking runs out.
    """
    chosen: list[int] = []
    used: set[int] = set()
    for pos in np.asarray(ranking, dtype=np.int64).tolist():
        if blocked[pos]:
            continue
        g = int(group_of[pos])
        if g >= 0:
            if g in used:
                continue
            used.add(g)
        chosen.append(pos)
        if len(chosen) == budget:
            break
    return np.asarray(chosen, dtype=np.int64)


class DropDuplicates(Policy):
    """``policy``'s choice with duplicates removed (needs pool embeddings).

    threshold : cosine similarity for near duplicates (default
        ``curator.dedup.DEFAULT_THRESHOLD``); pool samples within it of any
        ``Pool.labeled_embeddings`` row are never chosen.
    """

    def __init__(self, policy, threshold: float | None = None):
        from curator.dedup import check_threshold
        from curator.policies.compose import resolve

        self.policy = policy
        self.threshold = threshold
        self._threshold = check_threshold(threshold, caller="DropDuplicates")
        self._inner = resolve(policy)

    @property
    def requires(self):  # type: ignore[override]
        out = list(self._inner.requires)
        return tuple(out + ["embeddings"] if "embeddings" not in out else out)

    def get_params(self):
        return {"policy": self._inner.label, "threshold": self._threshold}

    def _groups(self, pool) -> tuple[np.ndarray, np.ndarray]:
        from curator.dedup import find_duplicates, near_labeled

        E = pool.unit_embeddings
        group_of = np.full(len(pool), -1, np.int64)
        for g, members in enumerate(find_duplicates(E, self._threshold)):
            group_of[members] = g
        blocked = near_labeled(E, pool.unit_labeled, self._threshold)
        return group_of, blocked

    def _select(self, pool, budget, rng):
        group_of, blocked = self._groups(pool)
        n = len(pool)
        free = int((~blocked).sum()) - sum(
            max(0, c - 1) for c in np.bincount(group_of[(group_of >= 0) & ~blocked])
        )
        if free < budget:
            raise BudgetError(
                f"DropDuplicates: only {free} samples remain once duplicates and copies of labeled "
                f"samples are removed, for a budget of {budget}; lower the budget or raise the threshold"
            )
        if self._inner.is_score_based:
            scores = np.asarray(self._inner.score(pool), dtype=np.float64)
            chosen = duplicate_free_order(top_k(scores, n, rng), group_of, blocked, budget)
            return chosen, scores[chosen]
        # set-based policy: ask for more until enough survive the filter
        ask = min(n, 2 * budget)
        while True:
            pos, sc = self._inner.select_scored(pool, ask, np.random.default_rng(rng.integers(2**63)))
            chosen = duplicate_free_order(pos, group_of, blocked, budget)
            if len(chosen) == budget or ask == n:
                break
            ask = min(n, 2 * ask)
        if len(chosen) < budget:  # the inner policy's order ran out: fill from the rest at random
            rest = np.setdiff1d(np.arange(n), pos)
            chosen = duplicate_free_order(np.r_[chosen, rng.permutation(rest)], group_of, blocked, budget)
        score_of = dict(zip(pos.tolist(), sc.tolist()))
        return chosen, np.array([score_of.get(p, np.nan) for p in chosen.tolist()])
