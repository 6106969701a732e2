"""Policies built from policies: weighted scores, sub-sampling, quotas, batch diversity.

Each wrapper is itself a ``Policy``, so they nest; the default ``curator``
policy is one such composition (see ``Curator``).
"""

from __future__ import annotations

import math

import numpy as np

from curator import scores as S
from curator.exceptions import BudgetError, ValidationError
from curator.policies.base import Policy, as_policy, top_k

__all__ = ["Weighted", "Subsample", "Diverse", "ClassQuota", "Filter", "Curator", "resolve"]


def resolve(policy) -> Policy:
    """A Policy from a registered name, a Policy, a class or a function."""
    if isinstance(policy, str):
        from curator import policies

        return policies.get(policy)
    return as_policy(policy)


def _union_requires(parts) -> tuple[str, ...]:
    out: list[str] = []
    for p in parts:
        for r in p.requires:
            if r not in out:
                out.append(r)
    return tuple(out)


def _child_rng(rng: np.random.Generator) -> np.random.Generator:
    return np.random.default_rng(rng.integers(2**63))


class _Wrapper(Policy):
    """A policy around an inner one; it needs what the inner one needs."""

    @property
    def requires(self):  # type: ignore[override]
        return self._inner.requires

    def check_pool(self, pool):
        self._inner.check_pool(pool)


class Weighted(Policy):
    """Sum of normalised scores: ``{"bald": 1.0, "novelty": 0.5}``.

    Each term is a score-based policy (a name, a Policy, or a score function);
    scores are mapped to [0, 1] (``normalize="rank"`` or ``"minmax"``) before
    weighting so that kinds with different scales add up sensibly.
    """

    def __init__(self, terms: dict, normalize: str = "rank"):
        if not terms:
            raise ValidationError("Weighted: terms must name at least one score policy, e.g. {'entropy': 1.0}")
        self.terms = dict(terms)
        self.normalize = normalize
        self._parts = []
        for key, weight in self.terms.items():
            p = resolve(key)
            if not p.is_score_based:
                raise ValidationError(f"Weighted: policy {p.label} has no per-sample score; use a score policy")
            if not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise ValidationError(f"Weighted: weight of {p.label} must be a finite number; got {weight!r}")
            self._parts.append((p, float(weight)))
        self.requires = _union_requires(p for p, _ in self._parts)

    def score(self, pool):
        total = np.zeros(len(pool))
        for p, w in self._parts:
            total += w * S.normalize(p.score(pool), self.normalize)
        return total

    def get_params(self):
        return {"terms": {p.name or repr(p): w for p, w in self._parts}, "normalize": self.normalize}


class Subsample(_Wrapper):
    """Run ``policy`` on a random subset of ``size`` pool samples (Gal et al.'s trick for large pools)."""

    def __init__(self, policy, size: int = 10_000):
        self.policy = policy
        self.size = size
        self._inner = resolve(policy)
        if not isinstance(size, int) or size < 1:
            raise ValidationError(f"Subsample: size must be a positive integer; got {size!r}")

    def _select(self, pool, budget, rng):
        n = len(pool)
        if n <= max(self.size, budget):
            return self._inner.select_scored(pool, budget, _child_rng(rng))
        sub = np.sort(rng.choice(n, size=max(self.size, budget), replace=False))
        pos, sc = self._inner.select_scored(pool.subset(sub), budget, _child_rng(rng))
        return sub[pos], sc


class Filter(_Wrapper):
    """Run ``policy`` only on pool samples where ``keep(pool)`` is True."""

    def __init__(self, policy, keep):
        self.policy = policy
        self.keep = keep
        self._inner = resolve(policy)

    def _select(self, pool, budget, rng):
        mask = np.asarray(self.keep(pool), dtype=bool)
        if mask.shape != (len(pool),):
            raise ValidationError(f"Filter: keep(pool) must return ({len(pool)},) booleans; got {mask.shape}")
        kept = np.flatnonzero(mask)
        if len(kept) < budget:
            raise BudgetError(
                f"Filter: only {len(kept)} samples pass the filter for a budget of {budget}; lower the budget"
            )
        pos, sc = self._inner.select_scored(pool.subset(kept), budget, _child_rng(rng))
        return kept[pos], sc

    def get_params(self):
        return {"policy": self._inner.label, "keep": getattr(self.keep, "__name__", repr(self.keep))}


class ClassQuota(_Wrapper):
    """At most ``ceil(max_fraction * budget)`` picks per predicted class, in score order.

    Keeps a batch from being all one confusing class; when the quota cannot
    be met the best remaining samples fill the batch.
    """

    def __init__(self, policy, max_fraction: float = 0.3):
        self.policy = policy
        self.max_fraction = max_fraction
        self._inner = resolve(policy)
        if not self._inner.is_score_based:
            raise ValidationError(f"ClassQuota: policy {self._inner.label} has no per-sample score")
        if not 0 < max_fraction <= 1:
            raise ValidationError(f"ClassQuota: max_fraction must be in (0, 1]; got {max_fraction!r}")

    @property
    def requires(self):  # type: ignore[override]
        return _union_requires([self._inner, _NeedsProbs])

    def check_pool(self, pool):
        Policy.check_pool(self, pool)

    def score(self, pool):
        return self._inner.score(pool)

    def _select(self, pool, budget, rng):
        scores = self._inner.score(pool)
        order = top_k(scores, len(pool), rng)
        cls = np.asarray(pool.mean_probs).argmax(1)
        quota = max(1, math.ceil(self.max_fraction * budget))
        counts: dict[int, int] = {}
        chosen, rest = [], []
        for i in order:
            c = int(cls[i])
            if counts.get(c, 0) < quota:
                chosen.append(i)
                counts[c] = counts.get(c, 0) + 1
                if len(chosen) == budget:
                    break
            else:
                rest.append(i)
        chosen.extend(rest[: budget - len(chosen)])
        pos = np.array(chosen, np.int64)
        return pos, scores[pos]


class _NeedsProbs:
    requires = ("probs",)


class Diverse(_Wrapper):
    """Batch diversity: take the inner policy's best ``factor x budget``
    candidates, cluster them into ``budget`` groups (k-means on L2-normalised
    embeddings) and keep the best candidate of each group (Zhdanov 2019), so a
    batch is not ten copies of the same confusing digit.

    The inner policy may be score-based or set-based (e.g. a duplicate filter):
    it is asked for the candidates with their scores.
    """

    def __init__(self, policy, factor: int = 10, iterations: int = 20):
        self.policy = policy
        self.factor = factor
        self.iterations = iterations
        self._inner = resolve(policy)
        if not isinstance(factor, int) or factor < 1:
            raise ValidationError(f"Diverse: factor must be a positive integer; got {factor!r}")

    @property
    def requires(self):  # type: ignore[override]
        return _union_requires([self._inner, _NeedsEmbeddings])

    def check_pool(self, pool):
        Policy.check_pool(self, pool)

    def _select(self, pool, budget, rng):
        want = min(len(pool), self.factor * budget)
        cand, cand_scores = self._inner.select_scored(pool, want, _child_rng(rng))
        if len(cand) == budget:
            return cand, cand_scores
        if not np.isfinite(cand_scores).all():  # a set-based inner policy without scores: its order
            cand_scores = np.linspace(1.0, 0.0, len(cand))
        X = np.asarray(pool.unit_embeddings)[cand].astype(np.float64)
        labels = kmeans(X, budget, rng, weights=S.normalize(cand_scores, "minmax") + 1e-3,
                        iterations=self.iterations)
        picked = []
        for c in range(budget):
            members = np.flatnonzero(labels == c)
            if len(members):
                picked.append(int(members[np.argmax(cand_scores[members])]))
        if len(picked) < budget:  # empty clusters: fill with the best remaining candidates
            rest = [j for j in np.argsort(-cand_scores, kind="stable") if j not in set(picked)]
            picked.extend(int(j) for j in rest[: budget - len(picked)])
        picked = np.array(picked, np.int64)
        picked = picked[np.argsort(-cand_scores[picked], kind="stable")]
        return cand[picked], cand_scores[picked]


class _NeedsEmbeddings:
    requires = ("embeddings",)


def kmeans(X: np.ndarray, k: int, rng: np.random.Generator, weights=None, iterations: int = 20) -> np.ndarray:
    """Weighted k-means (k-means++ seeding) labels of the rows of ``X``; seeded by ``rng``."""
    n = len(X)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    X_sq = np.einsum("ij,ij->i", X, X)
    centers = [int(rng.choice(n, p=w / w.sum()))]
    mind = np.maximum(X_sq - 2 * X @ X[centers[0]] + X_sq[centers[0]], 0)
    for _ in range(1, k):
        p = mind * w
        i = int(rng.choice(n, p=p / p.sum())) if p.sum() > 0 else int(rng.integers(n))
        centers.append(i)
        mind = np.minimum(mind, np.maximum(X_sq - 2 * X @ X[i] + X_sq[i], 0))
    C = X[centers].copy()
    labels = np.full(n, -1)
    for _ in range(iterations):
        d = X_sq[:, None] - 2 * X @ C.T + np.einsum("ij,ij->i", C, C)[None, :]
        new = d.argmin(1)
        if (new == labels).all():
            break
        labels = new
        for c in range(k):
            m = labels == c
            if m.any():
                C[c] = np.average(X[m], axis=0, weights=w[m])
    return labels


#: Labels per class below which ``curator`` picks by typicality (cold start), at or above by
#: uncertainty. See ``Curator`` and docs/policies.md (the switch rule).
COLD_PER_CLASS = 3.0


class Curator(_Wrapper):
    """The default policy: typical samples while the model knows little,
    batch-aware uncertainty + novelty once it knows a few labels per class,
    never near-duplicates.

    **Switch rule.** Labels per class = labeled samples / classes of the
    model (``len(pool.labeled_embeddings) / pool.probs.shape[1]``). Below
    ``cold_per_class`` (and for a pool with no model probabilities) the pick
    is ``typical`` (TypiClust) on the pool embedding, labeled samples marking
    covered clusters: uncertainty of a model trained on one or two examples
    per class points at its mistakes, not at what is worth labeling (Hacohen
    et al. 2022). At or above it: uncertainty. A pool without
    ``labeled_embeddings`` says nothing about the labels: uncertainty, as before.

    **Uncertainty phase.** ``Subsample(Diverse(DropDuplicates(draw)), factor))``:
    ``draw`` picks ``factor x budget`` candidates by the weighted score
    (uncertainty 1 + novelty ``novelty_weight``, rank-normalised);
    ``batch="power"`` draws them without replacement with probability
    proportional to rank^-beta (stochastic batch acquisition, Kirsch et al.
    2023: the batch stops being ten near-identical top scorers),
    ``batch="diverse"`` takes the top ones (the earlier default). Then one
    candidate is kept per k-means cluster. Uncertainty is BALD when the pool
    has MC-dropout passes and margin otherwise.
    """

    name = "curator"

    def __init__(self, novelty_weight: float = 0.3, factor: int = 10, subsample: int | None = 50_000,
                 drop_duplicates: bool = True, cold_per_class: float = COLD_PER_CLASS, batch: str = "power",
                 beta: float = 1.0):
        from curator.policies.batch import Power
        from curator.policies.builtin import Novelty, Uncertainty
        from curator.policies.coldstart import Typical

        if isinstance(cold_per_class, bool) or not isinstance(cold_per_class, (int, float)) \
                or not math.isfinite(cold_per_class) or cold_per_class < 0:
            raise ValidationError(f"policy 'curator': cold_per_class (labels per class below which it picks "
                                  f"typical samples) must be a number >= 0; got {cold_per_class!r}")
        if batch not in ("power", "diverse"):
            raise ValidationError(f"policy 'curator': batch must be 'power' or 'diverse'; got {batch!r}")
        self.novelty_weight = novelty_weight
        self.factor = factor
        self.subsample = subsample
        self.drop_duplicates = drop_duplicates
        self.cold_per_class = float(cold_per_class)
        self.batch = batch
        self.beta = beta
        terms = {Uncertainty(): 1.0}
        if novelty_weight:
            terms[Novelty(k=5)] = float(novelty_weight)
        inner: Policy = Weighted(terms)
        if batch == "power":
            inner = Power(inner, beta=beta, mode="softrank")
        if drop_duplicates:
            inner = _with_duplicate_filter(inner)
        inner = Diverse(inner, factor=factor)
        cold: Policy = Typical()
        if subsample:
            inner = Subsample(inner, size=subsample)
            cold = Subsample(cold, size=subsample)
        self._inner = inner
        self._cold = cold

    @property
    def requires(self):  # type: ignore[override]
        return self._cold.requires  # embeddings; the uncertainty phase checks probs itself

    def check_pool(self, pool):
        Policy.check_pool(self, pool)

    def phase(self, pool) -> str:
        """"cold" (typical) or "uncertainty": which part picks for ``pool`` (the switch rule)."""
        if pool.probs is None:
            return "cold"
        if pool.labeled_embeddings is None:
            return "uncertainty"
        per_class = len(pool.labeled_embeddings) / pool.probs.shape[1]
        return "cold" if per_class < self.cold_per_class else "uncertainty"

    def _select(self, pool, budget, rng):
        part = self._cold if self.phase(pool) == "cold" else self._inner
        return part.select_scored(pool, budget, _child_rng(rng))


def _with_duplicate_filter(policy: Policy) -> Policy:
    """Wrap in ``curator.policies.filters.DropDuplicates`` when it exists.

    Without it, ``Diverse`` (one pick per cluster) is what keeps copies out of
    a batch. A pool with too few distinct samples for the batch falls back to
    the unfiltered policy at select time.
    """
    try:
        from curator.policies.filters import DropDuplicates
    except ImportError:
        return policy
    return _PreferDistinct(DropDuplicates(policy), policy)


class _PreferDistinct(_Wrapper):
    """The filtered policy, or the unfiltered one when too few distinct samples remain."""

    def __init__(self, filtered: Policy, unfiltered: Policy):
        self._inner = filtered
        self._fallback = unfiltered
        self.name = filtered.name

    def _select(self, pool, budget, rng):
        try:
            return self._inner.select_scored(pool, budget, _child_rng(rng))
        except BudgetError:
            return self._fallback.select_scored(pool, budget, _child_rng(rng))

    def get_params(self):
        return self._inner.get_params()
