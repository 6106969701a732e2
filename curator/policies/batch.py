"""Batch-aware uncertainty by stochastic acquisition (Kirsch et al. 2023).

Taking the top ``budget`` scores gives ten near-identical uncertain samples:
scores are computed once, so the batch ignores what its other members
already tell. Kirsch et al. show that *sampling* the batch without
replacement, with probabilities that grow with the score, matches BatchBALD
at the cost of top-k. Sampling uses the Gumbel top-k trick: the top
``budget`` of ``log weight + Gumbel noise`` is a draw without replacement
proportional to ``weight``, seeded through the policy's generator.

Weights (``mode``): ``power`` s^beta (scores must be >= 0, as all curator
scores are), ``softmax`` exp(beta s), ``softrank`` rank^-beta (scale-free).
``beta`` large tends to top-k; beta -> 0 to random.

These policies are set-based on purpose (no ``score``): a sharded run must not
replace the draw by a per-shard top-k of the raw scores.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from curator.exceptions import CuratorError, ValidationError
from curator.policies.base import Policy, top_k

__all__ = ["Power", "PowerBALD", "gumbel_top_k", "MODES"]

MODES = ("power", "softmax", "softrank")


def gumbel_top_k(log_weights: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """``budget`` positions drawn without replacement with probability proportional to exp(log_weights).

    Positions of weight 0 (log -inf) come last, in a seeded random order.
    """
    g = rng.gumbel(size=len(log_weights))
    return top_k(np.asarray(log_weights, np.float64) + g, budget, rng)


def log_weights(scores: np.ndarray, beta: float, mode: str, label: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if mode == "power":
        if (s < 0).any():
            raise CuratorError(
                f"policy {label}: mode='power' needs non-negative scores (min {s.min():.3g}); "
                "use mode='softrank' or 'softmax'"
            )
        with np.errstate(divide="ignore"):
            return beta * np.log(s)
    if mode == "softmax":
        return beta * s
    # softrank: rank 1 = highest score; ties share the order given by a stable sort
    ranks = np.empty(len(s))
    ranks[np.argsort(-s, kind="stable")] = np.arange(1, len(s) + 1)
    return -beta * np.log(ranks)


class Power(Policy):
    """Stochastic batch acquisition over any score policy: ``Power("entropy", beta=1)``."""

    def __init__(self, policy="bald", beta: float = 1.0, mode: str = "power"):
        from curator.policies.compose import resolve

        if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not math.isfinite(beta) or beta <= 0:
            raise ValidationError(f"policy 'power': beta must be a positive number (1 = proportional to the score); "
                                  f"got {beta!r}")
        if mode not in MODES:
            raise ValidationError(f"policy 'power': mode must be one of {', '.join(MODES)}; got {mode!r}")
        self.policy = policy
        self.beta = float(beta)
        self.mode = mode
        self._inner = resolve(policy)
        if not self._inner.is_score_based:
            raise ValidationError(f"policy 'power': {self._inner.label} has no per-sample score; "
                                  "wrap a score policy (bald, entropy, margin, ...)")

    @property
    def requires(self):  # type: ignore[override]
        return self._inner.requires

    def _select(self, pool, budget, rng):
        scores = np.asarray(self._inner.score(pool), dtype=np.float64)
        w = log_weights(scores, self.beta, self.mode, self.label)
        pos = gumbel_top_k(w, budget, rng)
        return pos, scores[pos]


class PowerBALD(Power):
    """PowerBALD: batch draws proportional to BALD^beta (Kirsch et al. 2023); needs ``mc_probs``."""

    name = "powerbald"

    def __init__(self, beta: float = 1.0):
        super().__init__("bald", beta=beta, mode="power")

    def get_params(self):
        return {"beta": self.beta}
