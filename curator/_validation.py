"""Checks at the public boundary, with messages that name the argument and the fix.

Every public function of the core (``Pool``, the scores, ``Policy.select``)
calls these once; inside, the types are trusted.
"""

from __future__ import annotations

import numbers

import numpy as np

from curator.exceptions import BudgetError, EmptyPoolError, ValidationError

#: Rows of probabilities may be off by this much from 1 (float32 softmax).
SUM_TOLERANCE = 1e-3


def _finite(x: np.ndarray, name: str, caller: str) -> None:
    if x.size and not np.isfinite(x).all():
        flat = ~np.isfinite(x.reshape(x.shape[0], -1)).all(1) if x.ndim > 1 else ~np.isfinite(x)
        rows = np.flatnonzero(flat)[:5].tolist()
        raise ValidationError(
            f"{caller}: {name} contains NaN or infinite values (rows {rows}); drop or fix those rows"
        )


def check_array(x, *, name: str, ndim: int, caller: str, allow_empty: bool = False) -> np.ndarray:
    """``x`` as a float32 array of ``ndim`` dimensions with finite values."""
    if x is None:
        raise ValidationError(f"{caller}: {name} is missing")
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{caller}: {name} is not a numeric array ({exc})") from None
    if arr.ndim != ndim:
        shape = {2: "(n, d)", 3: "(T, n, classes)"}.get(ndim, f"{ndim}-D")
        hint = " (use x.reshape(-1, 1) for one feature)" if ndim == 2 and arr.ndim == 1 else ""
        raise ValidationError(f"{caller}: {name} must be {ndim}-D {shape}; got shape {arr.shape}{hint}")
    if not allow_empty and arr.shape[-1] == 0:
        raise ValidationError(f"{caller}: {name} has shape {arr.shape}: no columns")
    _finite(arr, name, caller)
    return arr


def check_embeddings(x, *, name: str = "embeddings", n: int | None = None, caller: str = "Pool",
                     allow_empty: bool = False) -> np.ndarray:
    arr = check_array(x, name=name, ndim=2, caller=caller)
    if n is not None and len(arr) != n:
        raise ValidationError(f"{caller}: {name} has {len(arr)} rows but the pool has {n}; pass one row per sample")
    if not allow_empty and len(arr) == 0:
        raise EmptyPoolError(f"{caller}: {name} has no rows; the pool is empty")
    return arr


def _check_sums(P: np.ndarray, name: str, caller: str, axis: int = -1) -> None:
    if P.size == 0:
        return
    if (P < -SUM_TOLERANCE).any():
        raise ValidationError(f"{caller}: {name} has negative values; pass probabilities (softmax), not logits")
    err = np.abs(P.sum(axis) - 1.0)
    if err.max() > SUM_TOLERANCE:
        bad = np.argwhere(err > SUM_TOLERANCE)[:3].tolist()
        raise ValidationError(
            f"{caller}: {name} rows must sum to 1 (worst off by {err.max():.3g} at {bad}); "
            "pass probabilities (softmax), not logits or scores"
        )


def check_probs(x, *, name: str = "probs", n: int | None = None, caller: str = "Pool") -> np.ndarray:
    """(n, classes) class probabilities: finite, non-negative, rows summing to one."""
    P = check_array(x, name=name, ndim=2, caller=caller)
    if n is not None and len(P) != n:
        raise ValidationError(f"{caller}: {name} has {len(P)} rows but the pool has {n}; pass one row per sample")
    if len(P) == 0:
        raise EmptyPoolError(f"{caller}: {name} has no rows; the pool is empty")
    if P.shape[1] < 2:
        raise ValidationError(f"{caller}: {name} must have at least 2 classes; got shape {P.shape}")
    _check_sums(P, name, caller)
    return P


def check_mc_probs(x, *, name: str = "mc_probs", n: int | None = None, classes: int | None = None,
                   caller: str = "Pool") -> np.ndarray:
    """(T, n, classes) probabilities of T stochastic (MC-dropout) passes."""
    MC = check_array(x, name=name, ndim=3, caller=caller)
    T, rows, C = MC.shape
    if T < 2:
        raise ValidationError(f"{caller}: {name} needs at least 2 stochastic passes (T); got {T}")
    if n is not None and rows != n:
        raise ValidationError(
            f"{caller}: {name} has {rows} samples (axis 1) but the pool has {n}; shape must be (T, n, classes)"
        )
    if classes is not None and C != classes:
        raise ValidationError(f"{caller}: {name} has {C} classes but probs has {classes}")
    _check_sums(MC, name, caller)
    return MC


def check_budget(budget, n: int, *, caller: str = "select") -> int:
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral):
        raise BudgetError(f"{caller}: budget must be a positive integer; got {budget!r}")
    budget = int(budget)
    if n == 0:
        raise EmptyPoolError(f"{caller}: the pool is empty; nothing to select")
    if budget < 1:
        raise BudgetError(f"{caller}: budget must be at least 1; got {budget}")
    if budget > n:
        raise BudgetError(f"{caller}: budget {budget} is larger than the pool ({n} samples); lower the budget")
    return budget


def check_seed(seed) -> np.random.Generator:
    """A generator from an int seed, a SeedSequence or a Generator (used as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, (numbers.Integral, np.random.SeedSequence)) and not isinstance(seed, bool):
        if isinstance(seed, numbers.Integral) and seed < 0:
            raise ValidationError(f"seed must be a non-negative integer; got {seed}")
        return np.random.default_rng(seed)
    raise ValidationError(f"seed must be an int, a SeedSequence or a numpy Generator; got {type(seed).__name__}")


def check_positive_int(value, *, name: str, caller: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValidationError(f"{caller}: {name} must be an integer >= {minimum}; got {value!r}")
    return int(value)
