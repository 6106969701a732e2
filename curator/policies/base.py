"""The policy contract: ``select(pool, budget, seed) -> int64 positions``.

A policy is either score-based (implement ``score(pool)``; the top ``budget``
are taken, ties broken by the seeded generator) or set-based (implement
``_select(pool, budget, rng)`` returning positions and their scores).
``select`` validates once, checks what the policy ``requires`` from the pool,
derives the only generator it may use from ``seed``, and checks the answer.
"""

from __future__ import annotations

import inspect

import numpy as np

from curator._validation import check_budget, check_seed
from curator.exceptions import CuratorError, ValidationError
from curator.pool import Pool

__all__ = ["Policy", "ScorePolicy", "FunctionPolicy", "top_k", "keyed_top", "tie_key", "tie_order", "as_policy"]

#: What a requirement means, and how to provide it.
_REQUIREMENTS = {
    "embeddings": ("embeddings", "Pool(embeddings=E) with E (n, d)"),
    "probs": (("probs", "mc_probs"), "Pool(probs=P) with P (n, classes)"),
    "mc_probs": ("mc_probs", "Pool(mc_probs=MC) with MC (T, n, classes) from MC dropout"),
    "labeled_embeddings": ("labeled_embeddings", "Pool(labeled_embeddings=L) with L (m, d)"),
}


def top_k(scores: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of the ``budget`` highest scores, best first; ties in a seeded random order.

    The tie order is a hash of (one key drawn from ``rng``, global position), not a permutation
    of the whole pool: it does not depend on how the pool is split, so the top ``budget`` of
    each shard, merged, are exactly the global top ``budget`` (``keyed_top``).
    """
    scores = np.asarray(scores, dtype=np.float64)
    positions = np.arange(len(scores), dtype=np.int64)
    return positions[keyed_top(scores, positions, tie_key(rng), budget)]


def tie_key(rng: np.random.Generator) -> int:
    """The one number of ``rng`` a top-k tie order uses (draw it once, hand it to every shard)."""
    return int(rng.integers(0, 2**64, dtype=np.uint64))


def tie_order(key: int, positions: np.ndarray) -> np.ndarray:
    """Seeded pseudo-random uint64 per global position: splitmix64's finaliser of ``key ^ position``
    (a bijection of 64-bit words, so distinct positions never tie)."""
    z = np.uint64(key) ^ np.asarray(positions).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def keyed_top(scores: np.ndarray, positions: np.ndarray, key: int, budget: int) -> np.ndarray:
    """Indices into ``scores`` of the ``budget`` best, best first: higher score, then ``tie_order``.

    ``positions`` are the rows' global positions in the pool. Only the rows scoring at least the
    ``budget``-th score are sorted, so a shard of millions costs a partition, not a sort.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    budget = min(int(budget), n)
    if budget <= 0:
        return np.empty(0, np.int64)
    neg = -scores
    if budget < n:
        cut = np.partition(neg, budget - 1)[budget - 1]
        cand = np.flatnonzero(neg <= cut)
    else:
        cand = np.arange(n)
    order = np.lexsort((tie_order(key, positions[cand]), neg[cand]))
    return cand[order[:budget]].astype(np.int64)


class Policy:
    """Base class of selection policies.

    Subclasses set ``requires`` (names of pool arrays) and implement ``score``
    or ``_select``. Constructor arguments are the policy's parameters
    (``get_params``), recorded with every round.
    """

    #: Registered name, set by the registry (or by the subclass).
    name: str | None = None
    #: Pool arrays this policy needs: embeddings, probs, mc_probs, labeled_embeddings.
    requires: tuple[str, ...] = ()

    # -- public ----------------------------------------------------------
    def select(self, pool: Pool, budget: int, seed=None) -> np.ndarray:
        """``budget`` unique positions into ``pool``, most worth labeling first."""
        return self.select_scored(pool, budget, seed)[0]

    def select_scored(self, pool: Pool, budget: int, seed=None) -> tuple[np.ndarray, np.ndarray]:
        """Like ``select``, with the score of each chosen position (NaN when none)."""
        label = self.label
        if not isinstance(pool, Pool):
            raise ValidationError(
                f"policy {label}: pool must be a curator.Pool; got {type(pool).__name__} "
                "(build one with Pool(embeddings=E, probs=P))"
            )
        budget = check_budget(budget, len(pool), caller=f"policy {label}")
        self.check_pool(pool)
        rng = check_seed(seed)
        positions, scores = self._select(pool, budget, rng)
        return _check_answer(label, positions, scores, budget, len(pool))

    def check_pool(self, pool: Pool) -> None:
        """Raise a ValidationError naming each array this policy needs and the pool lacks."""
        missing = []
        for req in self.requires:
            attrs, how = _REQUIREMENTS.get(req, (req, f"Pool({req}=...)"))
            attrs = (attrs,) if isinstance(attrs, str) else attrs
            if not any(pool.has(a) for a in attrs):
                missing.append(f"{req} (pass {how})")
        if missing:
            raise ValidationError(f"policy {self.label} cannot run on this pool: it needs {'; '.join(missing)}")

    def score(self, pool: Pool) -> np.ndarray:
        """(n,) scores, higher = more worth labeling. Set-based policies have none."""
        raise NotImplementedError(f"policy {self.label} is set-based and has no per-sample score")

    @property
    def is_score_based(self) -> bool:
        return type(self).score is not Policy.score

    #: True when ``score(pool)[i]`` depends on row i's arrays (and the labeled set) only, so the
    #: score of a slice of the pool is the slice of the score: an executor may then score shards
    #: apart. Left False (rank-normalised sums, greedy gains ...), the policy is scored whole.
    row_local: bool = False

    @property
    def is_shardable(self) -> bool:
        """Whether per-shard top-k of ``score`` plus a merge gives exactly ``select_scored``'s answer:
        a row-local score and the base top-k selection (no ``_select`` of its own)."""
        return self.is_score_based and self.row_local and type(self)._select is Policy._select

    # -- for subclasses --------------------------------------------------
    def _select(self, pool: Pool, budget: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        scores = self.score(pool)
        positions = top_k(scores, budget, rng)
        return positions, np.asarray(scores, dtype=np.float64)[positions]

    # -- parameters (scikit-learn style) ---------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        init = cls.__init__
        if init is object.__init__:
            return []
        sig = inspect.signature(init)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self) -> dict:
        """Constructor parameters, as recorded with a round (policies given by name)."""
        out = {}
        for name in self._param_names():
            value = getattr(self, name, None)
            if isinstance(value, Policy):
                value = {"policy": value.name or type(value).__name__, **value.get_params()}
            elif isinstance(value, dict):
                value = {(k.label if isinstance(k, Policy) else k): v for k, v in value.items()}
            out[name] = value
        return out

    @property
    def label(self) -> str:
        return repr(self.name or type(self).__name__)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


def _check_answer(label, positions, scores, budget, n):
    try:
        pos = np.asarray(positions)
        if pos.dtype.kind not in "iu":
            raise TypeError(f"dtype {pos.dtype}")
        pos = pos.astype(np.int64, copy=False).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise CuratorError(f"policy {label} returned positions that are not integers ({exc})") from None
    if len(pos) != budget:
        raise CuratorError(f"policy {label} returned {len(pos)} positions for a budget of {budget}")
    if len(pos) and (pos.min() < 0 or pos.max() >= n):
        raise CuratorError(f"policy {label} returned positions outside the pool [0, {n})")
    if len(np.unique(pos)) != len(pos):
        raise CuratorError(f"policy {label} returned repeated positions")
    if scores is None:
        scores = np.full(budget, np.nan)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != budget:
        raise CuratorError(f"policy {label} returned {len(scores)} scores for {budget} positions")
    return pos, scores


class ScorePolicy(Policy):
    """A policy from a score function ``fn(pool) -> (n,) scores``."""

    def __init__(self, fn, requires=(), name=None):
        self.fn = fn
        self.requires = tuple(requires)
        self.name = name or getattr(fn, "__name__", None)

    def score(self, pool):
        s = np.asarray(self.fn(pool), dtype=np.float64)
        if s.shape != (len(pool),):
            raise CuratorError(f"policy {self.label}: score function returned shape {s.shape}, expected ({len(pool)},)")
        if not np.isfinite(s).all():
            raise CuratorError(f"policy {self.label}: score function returned NaN or infinite scores")
        return s

    def get_params(self):
        return {}


class FunctionPolicy(Policy):
    """A policy from a selection function ``fn(pool, budget, rng) -> positions``."""

    def __init__(self, fn, requires=(), name=None):
        self.fn = fn
        self.requires = tuple(requires)
        self.name = name or getattr(fn, "__name__", None)

    def _select(self, pool, budget, rng):
        return self.fn(pool, budget, rng), None

    def get_params(self):
        return {}


def as_policy(obj, name=None, requires=()) -> Policy:
    """A Policy from a Policy, a Policy class, or a function.

    A function with a ``budget`` parameter selects (``fn(pool, budget, rng)``);
    otherwise it scores (``fn(pool) -> (n,) scores``).
    """
    if isinstance(obj, Policy):
        return obj
    if inspect.isclass(obj) and issubclass(obj, Policy):
        return obj()
    if callable(obj):
        params = inspect.signature(obj).parameters
        requires = tuple(requires) or tuple(getattr(obj, "requires", ()))
        if "budget" in params:
            return FunctionPolicy(obj, requires=requires, name=name)
        return ScorePolicy(obj, requires=requires, name=name)
    raise ValidationError(
        f"a policy must be a Policy, a Policy subclass or a function; got {type(obj).__name__}"
    )
