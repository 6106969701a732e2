"""Conformance check for policies, built-in or plugin (like scikit-learn's check_estimator).

    from curator.testing import check_policy
    check_policy(MyPolicy())            # raises AssertionError naming the broken rule

The rules: exactly ``budget`` unique int64 positions in range; the same pool
and seed give the same selection; the pool's arrays are not modified; bad
input (budget too large or not positive, a pool lacking what the policy
requires) raises curator's ValidationError family, not something obscure.
"""

from __future__ import annotations

import numpy as np

from curator.exceptions import BudgetError, ValidationError
from curator.pool import Pool

__all__ = ["check_policy", "make_pool"]


def make_pool(n: int = 300, d: int = 16, classes: int = 5, T: int = 8, m: int = 12, seed: int = 0) -> Pool:
    """A small synthetic pool with every array filled (clustered embeddings, peaked probabilities)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, d))
    y = rng.integers(classes, size=n)
    E = centers[y] + 0.5 * rng.normal(size=(n, d))
    logits = 2.0 * (E @ centers.T) / d + rng.normal(size=(T, n, classes))
    MC = np.exp(logits - logits.max(-1, keepdims=True))
    MC /= MC.sum(-1, keepdims=True)
    L = centers[rng.integers(classes, size=m)] + 0.5 * rng.normal(size=(m, d))
    return Pool(embeddings=E, probs=MC.mean(0), mc_probs=MC, labeled_embeddings=L)


def _arrays(pool: Pool) -> dict[str, np.ndarray]:
    return {k: np.array(getattr(pool, k), copy=True) for k in ("embeddings", "probs", "mc_probs",
                                                                 "labeled_embeddings") if pool.has(k)}


def check_policy(policy, pool: Pool | None = None, budgets=(1, 7)) -> None:
    """Run ``policy`` (a Policy or a registered name) through the conformance rules."""
    from curator import policies
    from curator.policies.base import Policy

    if isinstance(policy, str):
        policy = policies.get(policy)
    assert isinstance(policy, Policy), f"{policy!r} is not a curator Policy"
    name = policy.label
    pool = pool if pool is not None else make_pool()
    n = len(pool)
    before = _arrays(pool)

    for budget in budgets:
        budget = min(budget, n)
        a = policy.select(pool, budget=budget, seed=0)
        assert isinstance(a, np.ndarray), f"{name}: select returned {type(a).__name__}, not an ndarray"
        assert a.dtype == np.int64, f"{name}: positions have dtype {a.dtype}, not int64"
        assert a.shape == (budget,), f"{name}: {a.shape[0]} positions for a budget of {budget}"
        assert len(np.unique(a)) == budget, f"{name}: repeated positions {a}"
        assert a.min() >= 0 and a.max() < n, f"{name}: positions out of range [0, {n})"
        b = policy.select(pool, budget=budget, seed=0)
        assert np.array_equal(a, b), f"{name}: two runs with seed 0 selected different samples"
        c = policy.select(pool, budget=budget, seed=np.random.default_rng(0))
        assert np.array_equal(a, c), f"{name}: seed 0 and default_rng(0) selected different samples"

    full = policy.select(pool, budget=n, seed=1)
    assert np.array_equal(np.sort(full), np.arange(n)), f"{name}: budget = pool size must select every sample"

    for key, value in before.items():
        assert np.array_equal(value, getattr(pool, key), equal_nan=True), f"{name}: modified pool.{key}"

    for bad in (0, -1, n + 1):
        try:
            policy.select(pool, budget=bad, seed=0)
        except BudgetError:
            pass
        else:
            raise AssertionError(f"{name}: budget={bad} did not raise BudgetError")
    try:
        policy.select(pool.embeddings, budget=1, seed=0)
    except ValidationError:
        pass
    else:
        raise AssertionError(f"{name}: a raw array instead of a Pool did not raise ValidationError")

    for missing in ("mc_probs", "probs", "embeddings", "labeled_embeddings"):
        if missing not in policy.requires:
            continue
        partial = _without(pool, missing)
        if partial is None:
            continue
        try:
            policy.select(partial, budget=1, seed=0)
        except ValidationError as exc:
            assert missing in str(exc), f"{name}: error for a pool without {missing} does not name it: {exc}"
        else:
            raise AssertionError(f"{name}: requires {missing} but ran on a pool without it")


def _without(pool: Pool, missing: str) -> Pool | None:
    kw = {k: getattr(pool, k) for k in ("embeddings", "probs", "mc_probs", "labeled_embeddings")}
    kw[missing] = None
    if missing == "probs":
        kw["mc_probs"] = None  # "probs" is met by either
    if missing == "embeddings":
        kw["labeled_embeddings"] = None
    if kw["embeddings"] is None and kw["probs"] is None:
        return None
    return Pool(**kw)
